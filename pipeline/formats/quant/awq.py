"""AWQ in autoawq's GEMM layout: integer codes packed into int32 words along the output dimension, scales and zero
points per group."""

from __future__ import annotations

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    bits_of,
    check_integer,
    expect_groups,
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
    expect_groups(meta, q, in_, out, bits)
    return (out, in_)


METHOD = Method("awq", ("qzeros", "scales"), (Layout("qweight", "weight", rule),), check=check_integer)
