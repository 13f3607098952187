"""How many bytes live at once while a model runs on fake tensors (pipeline.cost.prefill, pipeline.cost.training):
a dispatch mode following every storage an operator allocates and frees, and the bytes a returned cache holds."""

from __future__ import annotations

import weakref
from typing import Any


def live_bytes(held: set[int]) -> Any:
    """A dispatch mode that adds each new storage an operator returns and subtracts it when freed; the storages
    in held (their ids) were there before and are not counted. Its .peak is the most live at once. (The mode's
    class is made here, so that importing this module does not import torch.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Live(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen = set(held)
            self.now = 0
            self.peak = 0

        def _free(self, key: int, size: int) -> None:
            self.now -= size
            self.seen.discard(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            import torch

            out = func(*args, **(kwargs or {}))
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = storage._cdata
                    if key not in self.seen:
                        size = storage.nbytes()
                        self.seen.add(key)
                        self.now += size
                        weakref.finalize(storage, self._free, key, size)
            self.peak = max(self.peak, self.now)
            return out

    return Live()


def cache_bytes(cache: Any) -> int:
    """Bytes of every distinct storage of floating-point values a returned cache object holds (keys, values, conv
    and recurrent states; not its integer bookkeeping: lengths, a window's size as a tensor)."""
    import torch

    seen: set[int] = set()
    total = 0
    stack, visited = [cache], set()
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in visited or isinstance(obj, (str, bytes, int, float, bool)):
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if not obj.is_floating_point():
                continue
            storage = obj.untyped_storage()
            if storage._cdata not in seen:
                seen.add(storage._cdata)
                total += storage.nbytes()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(v for k, v in vars(obj).items() if k != "config")
    return total
