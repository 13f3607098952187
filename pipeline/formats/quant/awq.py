"""AWQ in autoawq's GEMM layout: integer codes packed into int32 words along the output dimension, scales and zero
points per group."""

from __future__ import annotations

from math import ceil

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    bits_of,
    expect,
    group_of,
    group_size,
    require,
    unpacked,
)


def rule(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """AWQ GEMM: qweight int32 [in, out·bits/32] (packed along the output); scales [in/group, out]."""
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise PipelineError(f"quantization_config: awq version {version!r} has no layout rule (gemm has)")
    require(w, meta, ("qzeros", "scales"), "AWQ")  # autoawq's WQLinear_GEMM stores both, zero_point or not
    bits = bits_of(q)
    in_, out = w.shape[0], unpacked(w, 1, bits)
    groups = ceil(in_ / group_of(q, in_))
    expect(meta.get("scales"), (groups, out), f"{in_} inputs in groups of {group_of(q, in_)}")
    expect(meta.get("qzeros"), (groups, out * bits // 32), f"{out} outputs packed at {bits} bits")
    return (out, in_)


def _check(q: dict) -> None:
    bits_of(q)
    group_size(q)


METHOD = Method("awq", ("qzeros", "scales"), (Layout("qweight", "weight", rule),), check=_check)
