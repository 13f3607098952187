"""mxfp4 (gpt-oss's routed experts): 4-bit values in groups of 32 with one shared scale per group."""

from __future__ import annotations

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    expect,
    require,
)


def rule(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """mxfp4 (gpt-oss experts): *_blocks uint8 [E, R, G, 16] of 32 4-bit values a group, *_scales [E, R, G]."""
    if w.dtype != "U8" or len(w.shape) != 4 or w.shape[3] != 16:
        raise PipelineError(f"tensor {w.key!r}: mxfp4 blocks are uint8 [E, rows, groups, 16], not {list(w.shape)}")
    e, rows, groups, _ = w.shape
    stem = w.key.rpartition(".")[2].removesuffix("_blocks")
    require(w, meta, (f"{stem}_scales",), "mxfp4")
    expect(meta.get(f"{stem}_scales"), (e, rows, groups), "one scale per 32-value group")
    return (e, groups * 32, rows)  # transformers' dequantization transposes the last two dimensions


METHOD = Method(
    "mxfp4",
    ("gate_up_proj_scales", "down_proj_scales"),  # one scale per 32-value group of the blocks
    (Layout("gate_up_proj_blocks", "gate_up_proj", rule), Layout("down_proj_blocks", "down_proj", rule)),
)
