"""bitsandbytes: 4-bit nf4/fp4 codes two to a byte with their quant state (double quantization included), or int8
weights in their own shape with row scales."""

from __future__ import annotations

import json
from math import ceil, prod

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    expect,
    is_whole,
    require,
)


def rule(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """bitsandbytes 4-bit: weight uint8 [⌈n/2⌉, 1], two codes a byte; the shape lives in its quant_state JSON."""
    state = next((v for k, v in meta.items() if k.startswith("weight.quant_state.")), None)
    if state is None and (q.get("load_in_4bit") is True or w.dtype == "U8"):  # 4-bit codes, but no state
        kind = q.get("bnb_4bit_quant_type") if q.get("bnb_4bit_quant_type") in ("nf4", "fp4") else "fp4"
        require(w, meta, (f"weight.quant_state.bitsandbytes__{kind}",), "bitsandbytes 4-bit")
    if state is None:  # 8-bit: the weight keeps its shape (int8 [out, in]); SCB and weight_format are metadata
        if w.dtype == "I8":
            require(w, meta, ("SCB",), "bitsandbytes 8-bit")  # its row scales: transformers' loader reads them
        return None
    if w.dtype != "U8" or len(w.shape) != 2 or w.shape[1] != 1:
        raise PipelineError(
            f"tensor {w.key!r}: bitsandbytes 4-bit codes are uint8 [n, 1], not {w.dtype} {list(w.shape)}"
        )
    if read is None:
        raise PipelineError(f"tensor {state.key!r}: the bitsandbytes quant state must be read from a local file")
    try:
        info = json.loads(read(state).decode("utf-8"))
        shape, blocksize = info["shape"], info.get("blocksize", 64)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise PipelineError(f"tensor {state.key!r}: not a bitsandbytes quant state (JSON with a shape)") from None
    if not isinstance(shape, list) or not all(is_whole(s) and s >= 0 for s in shape):
        raise PipelineError(f"tensor {state.key!r}: quant state shape={shape!r} is not a list of whole numbers")
    if not is_whole(blocksize) or blocksize <= 0:
        raise PipelineError(
            f"tensor {state.key!r}: quant state blocksize={blocksize!r} must be a positive whole number"
        )
    # bitsandbytes' QuantState.from_dict reads absmax and quant_map, and the nested pair under double quantization
    nested = any(k.startswith("nested_") for k in info) or "weight.nested_absmax" in meta
    extra = ("weight.nested_absmax", "weight.nested_quant_map") if nested else ()
    require(w, meta, ("weight.absmax", "weight.quant_map", *extra), "bitsandbytes 4-bit")
    shape = tuple(shape)
    n = prod(shape)
    expect(w, ((n + 1) // 2, 1), f"{list(shape)} at two 4-bit codes a byte")
    expect(meta.get("weight.absmax"), (ceil(n / blocksize),), f"{n} values in blocks of {blocksize}")
    return shape


METHOD = Method(
    "bitsandbytes",
    (
        "weight.absmax",
        "weight.quant_map",
        "weight.nested_absmax",
        "weight.nested_quant_map",
        "weight.quant_state.bitsandbytes__nf4",
        "weight.quant_state.bitsandbytes__fp4",
        "SCB",
        "weight_format",
    ),  # fmt: skip
    (Layout("weight", "weight", rule),),
)
