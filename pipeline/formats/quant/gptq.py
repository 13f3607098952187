"""GPTQ (transformers' GptqHfQuantizer, gptqmodel, auto-round): 2-, 3-, 4- or 8-bit integer codes packed into int32
words along the input dimension, with scales and zero points per group."""

from __future__ import annotations

from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    bits_of,
    check_integer,
    expect,
    expect_groups,
    require,
    unpacked,
)


def rule(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """GPTQ: qweight int32 [in·bits/32, out]; scales [in/group, out]; qzeros [in/group, out·bits/32]; g_idx [in]."""
    # g_idx is optional: auto-round and gptqmodel leave it out without act-order (it is then i // group)
    require(w, meta, ("qzeros", "scales", "g_idx") if q.get("desc_act") is True else ("qzeros", "scales"), "GPTQ")
    bits = bits_of(q)
    in_, out = unpacked(w, 0, bits), w.shape[1]
    expect_groups(meta, q, in_, out, bits)
    expect(meta.get("g_idx"), (in_,), f"{in_} inputs")
    return (out, in_)


METHOD = Method("gptq", ("qzeros", "scales", "g_idx"), (Layout("qweight", "weight", rule),), check=check_integer)
