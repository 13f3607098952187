"""How a checkpoint's tensors map onto the parameters of the architecture built on the meta device: by transformers'
own key mapping and conversion rules for safetensors, by transformers' GGUF name map for GGUF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from math import prod

from pipeline.checkpoint import Entry, Reconciled
from pipeline.core.errors import PipelineError, first_line


def reconcile_gguf(model: torch.nn.Module, stored: list[Entry], arch: str, name: str) -> Reconciled:
    """Map GGUF tensors onto the model's parameters by transformers' own name map; shapes and counts must agree.

    A parameter may come from one GGUF tensor (its shape must match) or several (stacked or fused experts:
    their values must add up to it). GGUF tensors that map to no parameter, and parameters no tensor
    fills, stop the count with their names.
    """
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    try:
        names = get_gguf_hf_weights_map(model, processor)
    except Exception as exc:  # transformers' boundary (an architecture gguf's tables do not know)
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise PipelineError(f"model '{name}': GGUF names cannot be mapped ({why})") from None
    by_id: dict[int, str] = {}
    canonical, shapes = {}, {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        canonical[pname] = by_id.setdefault(id(p), pname)
        shapes[pname] = tuple(p.shape)
    sources: dict[str, list[Entry]] = {}
    unexpected = []
    for e in stored:
        target = names.get(e.key)
        if target is None or target not in canonical:
            unexpected.append(e.key)
            continue
        sources.setdefault(canonical[target], []).append(e)
    problems = []
    for param, group in sources.items():
        if len(group) == 1 and group[0].shape != shapes[param]:
            problems.append(f"{group[0].key} {list(group[0].shape)} vs {param} {list(shapes[param])}")
        elif sum(e.numel for e in group) != prod(shapes[param]):
            held = sum(e.numel for e in group)
            problems.append(f"{', '.join(e.key for e in group)} hold {held:,} values, {param} {prod(shapes[param]):,}")
    missing = [p for p in dict.fromkeys(canonical.values()) if p not in sources]
    if problems or missing or unexpected:
        parts = [
            f"shape mismatch: {'; '.join(problems[:4])}" if problems else "",
            f"missing: {', '.join(missing[:6])}" if missing else "",
            f"GGUF tensors with no parameter: {', '.join(unexpected[:6])}" if unexpected else "",
        ]
        raise PipelineError(
            f"model '{name}': GGUF does not match the architecture: {' | '.join(p for p in parts if p)}"
        )
    return Reconciled(
        key_of={p: ";".join(e.key for e in group) for p, group in sources.items()},
        buffers=[],
        checkpoint_tensors=sum(e.numel for e in stored),
        sources=sources,
    )
