"""Will it fit? The memory a model needs to run or fine-tune, per GPU and in total, from the exact count.

Every line is a formula over the meta-built model and its config (pipeline.cost.cache gives each layer's cache
kind), with its source:
- weights: the exact parameter count × bytes per value of the dtype (a tensor-parallel degree splits
  attention by heads, the MLP by columns and rows and the embeddings by vocabulary; norms are replicated);
- KV cache: per self-attention layer 2 × KV heads × head width values per token, at most the window of a
  sliding-window layer (kv_cache_bytes); kv_cache_bytes_full_length is what an engine that gives every layer a
  full-length cache allocates (vLLM's figure for gpt-oss); multi-head latent attention caches its latent
  and rotary key; cross-attention caches the encoder's output once per input;
- state: a state-space or linear-attention layer's fixed state per sequence, whatever the context;
- LoRA: rank × (in + out) per adapted linear layer (Hu et al. 2021, section 4.1), counted on the modules
  the targets name;
- activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  section 4.1: s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit without recomputation, 2·s·b·h with full
  activation checkpointing (only each layer's input is kept);
- optimizer and gradients: mixed-precision Adam, 16 bytes per trainable parameter (Rajbhandari et al. 2020).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.cost import cache

DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# Units as people write them: 24GB, 24G and 24gb are 24 × 10^9 bytes; 24GiB and 24Gi are 24 × 2^30; B is bytes
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_memory(text: str, what: str = "--gpu-memory") -> int:
    """Bytes of a memory size written with its unit: 80GB or 80G (10^9), 80GiB or 80Gi (2^30), 500MB, or bytes
    written as 1000000B. A bare number is refused: '24' is far more likely 24 GB than 24 bytes."""
    m = _MEMORY_RE.match(str(text))
    if not m:
        raise PipelineError(f"{what} {text!r}: not a memory size like 80GB, 24GiB or 24G")
    number, unit = m.groups()
    if unit is None:
        raise PipelineError(
            f"{what} {text!r}: a number without a unit; write {number}GB ({number} × 10^9 bytes) or {number}GiB "
            f"({number} × 2^30), or {number}B if you mean bytes"
        )
    unit = unit.lower()
    if unit == "b":
        scale = 1
    else:
        scale = (1024 if "i" in unit else 1000) ** _POWERS[unit[0]]
    value = int(float(number) * scale)
    if value <= 0:
        raise PipelineError(f"{what} {text!r}: a memory size must be more than 0 bytes")
    return value


def dtype_bytes(dtype: str, what: str) -> float:
    if dtype not in DTYPE_BYTES:
        raise PipelineError(f"{what} {dtype!r}: one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Cache:
    per_token: int  # bytes one token adds per sequence while no sliding window is full
    at: int  # bytes at the context and batch asked
    full_length: int  # bytes if every layer held the whole context
    state: int | None  # fixed bytes per sequence of state-space layers (None: a mixer whose state is unknown)
    cross: int  # bytes of cross-attention cache per sequence, for its input


def kv_cache(layers: list[cache.Layer], context: int, batch: int, kv_bytes: float, source: int) -> Cache:
    """The cache of one model at a context and batch, each layer as its kind caches."""
    per_token = sum(layer.kv_per_token for layer in layers) * kv_bytes
    at = sum(layer.kv_per_token * (min(context, layer.window) if layer.window else context) for layer in layers)
    full = sum(layer.kv_per_token for layer in layers) * context
    cross = sum(layer.cross_kv_per_input_token for layer in layers) * source * kv_bytes
    states = [layer.state for layer in layers]
    float32 = sum(layer.state_float32 for layer in layers)  # recurrent states: float32 whatever the cache dtype
    state = None if any(s is None for s in states) else int((sum(states) - float32) * kv_bytes + float32 * 4)
    return Cache(
        per_token=int(per_token),
        at=int(batch * (at * kv_bytes + cross)),
        full_length=int(batch * (full * kv_bytes + cross)),
        state=state,
        cross=int(cross),
    )


def lora_params(model: Any, targets: list[str], rank: int) -> tuple[int, int]:
    """(adapter parameters, adapted layers): rank × (in + out) for every linear layer whose attribute name is a
    target, as PEFT adapts them: torch's Linear, and transformers' Conv1D (GPT-2's c_attn, c_fc: a weight of
    in × out)."""
    if rank <= 0:
        raise PipelineError(f"--lora-rank {rank}: a LoRA rank is a whole number of at least 1")
    if not targets:
        raise PipelineError("--lora-targets names no layer: give the linear layers LoRA adapts, e.g. q_proj,v_proj")
    found = {t: 0 for t in targets}
    total = 0
    for path, module in model.named_modules():
        leaf = path.rpartition(".")[2]
        sizes = _linear_sizes(module) if leaf in found else None
        if sizes is not None:
            found[leaf] += 1
            total += rank * (sizes[0] + sizes[1])
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        raise PipelineError(f"--lora-targets: {', '.join(missing)} names no linear layer of {type(model).__name__}")
    return total, sum(found.values())


def _linear_sizes(module: Any) -> tuple[int, int] | None:
    """(in, out) of a layer PEFT's LoRA adapts as linear: torch's Linear, or transformers' Conv1D (weight in × out)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.nf)
    return None


def activation_bytes(
    seq: int, batch: int, hidden: int, heads: int, layers: int, checkpointing: bool, mask_bytes: int = 1
) -> int:
    """Korthikanti et al. 2022, section 4.1, eq. (1) and (2): what one transformer layer keeps for the backward
    pass in 16-bit, s·b·h·(34 + 5·a·s/h) bytes without recomputation; with full checkpointing only the layer
    input, 2·s·b·h. Their 34 and 5 count each dropout mask at 1 byte (sbh twice, as²b once); mask_bytes is
    what a mask takes where it is kept in the activations' dtype (PyTorch on CPU: 2), giving
    s·b·h·(32 + 2m) + a·s²·b·(4 + m)."""
    if checkpointing:
        return 2 * seq * batch * hidden * layers
    sbh, as2b = seq * batch * hidden, heads * seq * seq * batch
    return (sbh * (32 + 2 * mask_bytes) + as2b * (4 + mask_bytes)) * layers


def tensor_parallel_check(config: Any, tp: int, name: str) -> None:
    """Megatron splits attention by heads: the degree must divide the query and the KV heads."""
    if tp < 1:
        raise PipelineError(f"--tp {tp}: a tensor-parallel degree is at least 1", model=name)
    for layer in cache.layer_configs(cache.text_config(config)):  # every layer's, where they differ (Gemma 4)
        heads = getattr(layer, "num_attention_heads", None)
        kv = getattr(layer, "num_key_value_heads", None) or heads
        for label, value in (("attention heads", heads), ("key/value heads", kv)):
            if isinstance(value, int) and value % tp:
                raise PipelineError(f"--tp {tp} does not divide its {value} {label}", model=name)


def largest(ok, high: int) -> int:
    """The largest n in [1, high] with ok(n), for an ok that more tokens or sequences never make true again; 0 if
    none."""
    if high < 1 or not ok(1):
        return 0
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low
