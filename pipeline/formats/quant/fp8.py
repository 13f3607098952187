"""Block-scaled fp8 (transformers' FineGrainedFP8, DeepSeek-V3, Qwen3-FP8): the weight in its own shape as F8_E4M3, one
inverse scale per block; and the scale each fp8 weight's values are multiplied by when they are read."""

from __future__ import annotations

from math import ceil

from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    FP8_DTYPES,
    Layout,
    Method,
    Reader,
    block_of,
    expect,
    require,
)


def rule(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """Block-scaled fp8: weight F8_E4M3 [out, in] as is; weight_scale_inv [⌈out/b0⌉, ⌈in/b1⌉]."""
    block = block_of(q)
    if block is not None and w.dtype in FP8_DTYPES:
        require(w, meta, ("weight_scale_inv",), "block-scaled fp8")  # one scale per block: DeepSeek's, Qwen's
    if block is not None and len(w.shape) == 2:
        b0, b1 = block
        expect(meta.get("weight_scale_inv"), (ceil(w.shape[0] / b0), ceil(w.shape[1] / b1)), f"blocks of {b0}×{b1}")
    return None


def scales(logical: list[Entry], by_key: dict[str, Entry], q: dict) -> dict[str, tuple[Entry, tuple[int, int]]]:
    """Each fp8 weight's scale tensor and the block of weights one scale covers (for dequantizing values).

    Block fp8 multiplies blocks of weight_block_size by weight_scale_inv; compressed-tensors' float format
    multiplies by weight_scale per output channel or per group along the input.
    """
    out = {}
    for e in logical:
        if e.dtype not in FP8_DTYPES or len(e.shape) != 2:
            continue
        module = e.key.rpartition(".")[0]
        scale = by_key.get(f"{module}.weight_scale_inv") or by_key.get(f"{module}.weight_scale")
        if scale is None or len(scale.shape) != 2 or scale.dtype not in ("F32", "F16", "BF16"):
            continue
        if scale.key.endswith("_inv") and block_of(q):
            block = block_of(q)
        else:
            block = (ceil(e.shape[0] / scale.shape[0]), ceil(e.shape[1] / scale.shape[1]))
        out[e.key] = (scale, block)
    return out


METHOD = Method(
    "fp8",
    ("weight_scale_inv", "activation_scale", "input_scale"),
    (Layout("weight", "weight", rule),),
    check=block_of,
)
