"""What the transformers engine allocates in a prefill, measured as PyTorch accounts for it: the model run on fake
tensors (torch's FakeTensorMode: shapes and dtypes, no memory, no GPU, any size), as `generate` runs its prefill:
`model(input_ids, use_cache=True, logits_to_keep=1)` under no_grad, with scaled-dot-product attention.

live_peak() follows every storage an operator allocates and frees (a TorchDispatchMode), so its peak is the same
figure as torch.distributed._tools.mem_tracker.MemTracker's activations at its peak (the weights apart), at a
fraction of MemTracker's time; tracker_peak() runs MemTracker itself, for `hmp fit --measure` and the tests.

A model that cannot run on fake tensors (shapes that depend on values, kernels without fake implementations)
gets its reason, and the plan says its formula stands alone.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from dataclasses import dataclass
from typing import Any

ATTENTION = "sdpa"  # transformers' default where the model supports it


@dataclass(frozen=True)
class Measured:
    """One prefill of batch × context tokens on fake tensors."""

    batch: int
    context: int
    activations: int  # bytes allocated at the peak beyond the weights: caches, hidden states, logits, temporaries
    cache: int  # bytes of the storages the returned cache holds (keys, values, states; a view keeps all its storage)


class Unmeasured(Exception):
    """The model cannot run its prefill on fake tensors; the message says why."""


class Runner:
    """The model on fake tensors in the compute dtype, built once for several prefills."""

    def __init__(self, model: Any, dtype: str, causal: bool):
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode

        if not causal:
            raise Unmeasured("not a generating (causal) model: no prefill to measure")
        self.mode = FakeTensorMode()
        try:
            fake = copy.deepcopy(model)
            _to_fake(fake, self.mode, getattr(torch, dtype))
        except Exception as exc:  # noqa: BLE001 - a model that cannot be faked is a reason, said in the plan
            raise Unmeasured(f"cannot run on fake tensors: {type(exc).__name__}: {_first_line(exc)}") from None
        try:
            fake.set_attn_implementation(ATTENTION)
        except Exception:  # noqa: BLE001 - a model without sdpa runs the attention it has
            pass
        fake.eval()  # as from_pretrained leaves it: no dropout (a training-mode run holds dropout's masks too)
        self.model = fake
        self.attention = str(getattr(fake.config, "_attn_implementation", None) or "eager")
        self.keeps = "logits_to_keep" in inspect.signature(fake.forward).parameters
        self.vocab = int(getattr(fake.get_input_embeddings(), "num_embeddings", 2) or 2)
        self.held = {t.untyped_storage()._cdata for t in [*fake.parameters(), *fake.buffers()]}
        self._seen: dict[tuple[int, int], Measured] = {}

    def ids(self, batch: int, context: int) -> Any:
        """The prompt's token ids, made before any accounting starts (as the caller of generate holds them)."""
        import torch

        with self.mode:
            return torch.zeros((batch, context), dtype=torch.long)

    def prefill(self, ids: Any) -> Any:
        kwargs = {"use_cache": True, **({"logits_to_keep": 1} if self.keeps else {})}
        return self.model(input_ids=ids, **kwargs)

    def measure(self, batch: int, context: int) -> Measured:
        """The live bytes at the peak of one prefill (memoised per size)."""
        key = (batch, context)
        if key not in self._seen:
            import torch

            ids = self.ids(batch, context)
            live = _Live(self.held | {ids.untyped_storage()._cdata})
            try:
                with self.mode, live, torch.no_grad():
                    out = self.prefill(ids)
                    cache = _cache_bytes(getattr(out, "past_key_values", None))
            except Exception as exc:  # noqa: BLE001 - any failure of the fake run is a reason, said in the plan
                raise Unmeasured(f"{type(exc).__name__}: {_first_line(exc)}") from None
            self._seen[key] = Measured(batch, context, live.peak, cache)
        return self._seen[key]


def _to_fake(model: Any, mode: Any, compute: Any) -> None:
    """Every parameter and buffer of a meta-device model made a fake CPU tensor, floating ones in the compute dtype;
    a tensor two modules share (a tied head) stays one tensor."""
    import torch

    made: dict[int, Any] = {}
    convert = mode.fake_tensor_converter.from_meta_and_device
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is None:
                    continue
                if id(tensor) not in made:
                    typed = tensor.to(compute) if tensor.is_floating_point() else tensor
                    if typed.is_meta:
                        value = convert(mode, typed, torch.device("cpu"))
                    else:  # a tensor a model made outside the meta device (a constant table): faked as it is
                        value = mode.from_tensor(typed)
                    made[id(tensor)] = torch.nn.Parameter(value) if key in module._parameters else value
                table[key] = made[id(tensor)]


def tracker_peak(runner: Runner, batch: int, context: int) -> dict[str, int]:
    """MemTracker's own figures for one prefill: {"peak": all bytes at the peak, "parameters", "activations"}."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    ids = runner.ids(batch, context)
    with runner.mode:
        tracker = MemTracker()
        tracker.track_external(runner.model)
        with tracker, torch.no_grad():
            runner.prefill(ids)
        peak = tracker.get_tracker_snapshot("peak")
    # the snapshot's keys are MemTracker's reference types (an enum: PARAM, BUFFER, ACT, ...) and "Total"
    device = {getattr(k, "name", k): int(v) for k, v in next(iter(peak.values())).items()}
    return {
        "peak": device["Total"],
        "parameters": device.get("PARAM", 0) + device.get("BUFFER", 0),
        "activations": device.get("ACT", 0),
    }


class _Live:
    """A dispatch mode that adds each new storage an operator returns and subtracts it when freed."""

    def __new__(cls, held: set[int]):
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


def _cache_bytes(cache: Any) -> int:
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


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""
