"""Quantized safetensors checkpoints: each quantized module's stored tensors mapped back to its logical weight.

A quantized file does not store a Linear's weight [out, in] as such: GPTQ packs it into int32 words
(`qweight`) beside scales, zero points and a group index; bitsandbytes stores 4-bit codes as a byte
column; gpt-oss stores its experts as mxfp4 blocks. Summing the header, as the Hub's page once did,
counts packed words, not parameters. Here every layout is a rule that turns the packed tensor back
into the logical shape it encodes (the bits per value, the group size and the packing direction
checked against the other tensors of the module) and files everything else the module stores as
quantization metadata. The logical weights then go through the same reconciliation with the
architecture as any checkpoint (pipeline/checkpoint.py): a layout rule that is wrong cannot give a
wrong count, it fails there, naming the tensor. A tensor no rule claims stays as it is, so a layout
nobody knows ends as an "unexpected key" error, never a guess.

The rules follow the formats' own loaders: transformers' GPTQ/AWQ/compressed-tensors/bitsandbytes/
FineGrainedFP8/Mxfp4 quantizer integrations and the compressed-tensors package's packing (values
packed 32 // bits to an int32 along the input dimension).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from math import ceil, prod
from typing import Any

from pipeline.checkpoint import Entry
from pipeline.core.errors import PipelineError

Reader = Callable[[Entry], bytes] | None  # a tensor's raw bytes, where the data can be read

# Tensors that only describe how a weight is quantized, by method (suffixes of the module's key).
METADATA = {
    "gptq": ("qzeros", "scales", "g_idx"),
    "awq": ("qzeros", "scales"),
    "compressed-tensors": (
        "weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape", "input_scale", "input_zero_point",
        "output_scale", "output_zero_point", "weight_global_scale", "input_global_scale",
    ),
    "bitsandbytes": (
        "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map",
        "weight.quant_state.bitsandbytes__nf4", "weight.quant_state.bitsandbytes__fp4", "SCB", "weight_format",
    ),
    "fp8": ("weight_scale_inv", "activation_scale", "input_scale"),
    "mxfp4": ("gate_up_proj_scales", "down_proj_scales"),  # one scale per 32-value group of the blocks
}  # fmt: skip


@dataclass
class Regrouped:
    """A checkpoint's entries with packed weights replaced by logical ones, and what the file holds apart."""

    entries: list[Entry]  # logical weights (packed bytes, logical shape) and every tensor no rule claimed
    metadata: list[Entry] = field(default_factory=list)  # scales, zero points, group indices, quant state
    header_sum: int = 0  # what a naive sum of the header gives: packed words counted as parameters
    method: str = ""
    # fp8 weights stored in their own shape: weight key -> (its scale tensor, the block each scale covers)
    scales: dict[str, tuple[Entry, tuple[int, int]]] = field(default_factory=dict)


def quantization_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's quantization_config (also when nested under text_config), or None."""
    for where in (config, config.get("text_config") or {}):
        q = where.get("quantization_config") if isinstance(where, dict) else None
        if q is not None:
            if not isinstance(q, dict) or not isinstance(q.get("quant_method"), str):
                raise PipelineError("config.json: quantization_config has no quant_method")
            return q
    return None


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(f"quantization_config: {what}={value!r} is not a whole number")
    return value


def _bits(q: dict[str, Any]) -> int:
    """Bits per value of an integer layout (GPTQ and AWQ write bits, AWQ's older files w_bit)."""
    bits = _whole(q.get("bits", q.get("w_bit")), "bits")
    if bits not in (2, 3, 4, 8):
        raise PipelineError(f"quantization_config: bits={bits} is not a width these layouts pack (2, 3, 4, 8)")
    return bits


def _group(q: dict[str, Any], rows: int) -> int:
    """Group size along the input dimension; -1 (or none) means one group over all rows."""
    g = q.get("group_size", q.get("q_group_size", -1))
    g = _whole(g if g is not None else -1, "group_size")
    return rows if g in (-1, 0) else g


def _unpacked(entry: Entry, dim: int, bits: int) -> int:
    """How many bits-wide values an int32 dimension of a packed tensor holds."""
    if entry.dtype != "I32":
        raise PipelineError(f"tensor {entry.key!r}: packed weights are int32 words, not {entry.dtype}")
    return entry.shape[dim] * 32 // bits


def _expect(entry: Entry | None, shape: tuple[int, ...], why: str) -> None:
    if entry is not None and tuple(entry.shape) != tuple(shape):
        raise PipelineError(f"tensor {entry.key!r}: shape {list(entry.shape)}, but {why} gives {list(shape)}")


# --- one rule per layout: (packed entry, the module's other tensors, config) -> logical weight shape ---------


def _gptq(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """GPTQ: qweight int32 [in·bits/32, out]; scales [in/group, out]; qzeros [in/group, out·bits/32]; g_idx [in]."""
    bits = _bits(q)
    in_, out = _unpacked(w, 0, bits), w.shape[1]
    groups = ceil(in_ / _group(q, in_))
    _expect(meta.get("scales"), (groups, out), f"{in_} inputs in groups of {_group(q, in_)}")
    _expect(meta.get("qzeros"), (groups, out * bits // 32), f"{out} outputs packed at {bits} bits")
    _expect(meta.get("g_idx"), (in_,), f"{in_} inputs")
    return (out, in_)


def _awq(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """AWQ GEMM: qweight int32 [in, out·bits/32] (packed along the output); scales [in/group, out]."""
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise PipelineError(f"quantization_config: awq version {version!r} has no layout rule (gemm has)")
    bits = _bits(q)
    in_, out = w.shape[0], _unpacked(w, 1, bits)
    groups = ceil(in_ / _group(q, in_))
    _expect(meta.get("scales"), (groups, out), f"{in_} inputs in groups of {_group(q, in_)}")
    _expect(meta.get("qzeros"), (groups, out * bits // 32), f"{out} outputs packed at {bits} bits")
    return (out, in_)


def _ct_weights(q: dict) -> dict:
    """The weights scheme of a compressed-tensors config (every group must agree on it)."""
    schemes = [g.get("weights") or {} for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
    if not schemes:
        raise PipelineError("quantization_config: compressed-tensors without config_groups")
    keys = ("num_bits", "group_size", "strategy")
    if any(tuple(s.get(k) for k in keys) != tuple(schemes[0].get(k) for k in keys) for s in schemes):
        raise PipelineError("quantization_config: compressed-tensors groups with different weight schemes")
    return schemes[0]


def _ct_packed(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """compressed-tensors pack-quantized: weight_packed int32 [out, in·bits/32] (packed along the input)."""
    scheme = _ct_weights(q)
    bits = _whole(scheme.get("num_bits"), "num_bits")
    out, in_ = w.shape[0], _unpacked(w, 1, bits)
    shape_entry = meta.get("weight_shape")
    _expect(shape_entry, (2,), "a [rows, columns] pair")
    if shape_entry is not None and read is not None and shape_entry.dtype in ("I64", "I32"):
        # the true shape is stored: packing pads each row to whole int32 words, so check against it exactly
        width = 8 if shape_entry.dtype == "I64" else 4
        raw = read(shape_entry)
        out_, in_ = (int.from_bytes(raw[i : i + width], "little", signed=True) for i in range(0, 2 * width, width))
        if out_ != out or ceil(in_ * bits / 32) != w.shape[1]:
            raise PipelineError(
                f"tensor {w.key!r}: {list(w.shape)} int32 words do not pack a [{out_}, {in_}] weight at {bits} bits"
            )
    scale = meta.get("weight_scale")
    strategy = scheme.get("strategy")
    if scale is not None and strategy == "group":
        group = _whole(scheme.get("group_size"), "group_size")
        _expect(scale, (out, ceil(in_ / group)), f"{in_} inputs in groups of {group}")
    elif scale is not None and strategy == "channel":
        _expect(scale, (out, 1), "one scale per output channel")
    return (out, in_)


def _bnb(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """bitsandbytes 4-bit: weight uint8 [⌈n/2⌉, 1], two codes a byte; the shape lives in its quant_state JSON."""
    state = next((v for k, v in meta.items() if k.startswith("weight.quant_state.")), None)
    if state is None:
        return None  # 8-bit: the weight keeps its shape (int8 [out, in]); SCB and weight_format are metadata
    if w.dtype != "U8" or len(w.shape) != 2 or w.shape[1] != 1:
        raise PipelineError(
            f"tensor {w.key!r}: bitsandbytes 4-bit codes are uint8 [n, 1], not {w.dtype} {list(w.shape)}"
        )
    if read is None:
        raise PipelineError(f"tensor {state.key!r}: the bitsandbytes quant state must be read from a local file")
    try:
        info = json.loads(read(state).decode("utf-8"))
        shape = tuple(_whole(s, "shape") for s in info["shape"])
        blocksize = _whole(info.get("blocksize", 64), "blocksize")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise PipelineError(f"tensor {state.key!r}: not a bitsandbytes quant state (JSON with a shape)") from None
    n = prod(shape)
    _expect(w, ((n + 1) // 2, 1), f"{list(shape)} at two 4-bit codes a byte")
    _expect(meta.get("weight.absmax"), (ceil(n / blocksize),), f"{n} values in blocks of {blocksize}")
    return shape


def _fp8(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """Block-scaled fp8: weight F8_E4M3 [out, in] as is; weight_scale_inv [⌈out/b0⌉, ⌈in/b1⌉]."""
    block = q.get("weight_block_size")
    if block is not None and len(w.shape) == 2:
        b0, b1 = (_whole(b, "weight_block_size") for b in block)
        _expect(meta.get("weight_scale_inv"), (ceil(w.shape[0] / b0), ceil(w.shape[1] / b1)), f"blocks of {b0}×{b1}")
    return None


def _mxfp4(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """mxfp4 (gpt-oss experts): *_blocks uint8 [E, R, G, 16] of 32 4-bit values a group, *_scales [E, R, G]."""
    if w.dtype != "U8" or len(w.shape) != 4 or w.shape[3] != 16:
        raise PipelineError(f"tensor {w.key!r}: mxfp4 blocks are uint8 [E, rows, groups, 16], not {list(w.shape)}")
    e, rows, groups, _ = w.shape
    stem = w.key.rpartition(".")[2].removesuffix("_blocks")
    _expect(meta.get(f"{stem}_scales"), (e, rows, groups), "one scale per 32-value group")
    return (e, groups * 32, rows)  # transformers' dequantization transposes the last two dimensions


@dataclass(frozen=True)
class Layout:
    weight: str  # suffix of the packed tensor
    logical: str  # suffix of the parameter it encodes
    rule: Callable[[Entry, dict[str, Entry], dict, Reader], tuple[int, ...] | None]  # None: stored shape is logical


LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "gptq": (Layout("qweight", "weight", _gptq),),
    "awq": (Layout("qweight", "weight", _awq),),
    "compressed-tensors": (Layout("weight_packed", "weight", _ct_packed), Layout("weight", "weight", lambda *_: None)),
    "bitsandbytes": (Layout("weight", "weight", _bnb),),
    "fp8": (Layout("weight", "weight", _fp8),),
    "mxfp4": (
        Layout("gate_up_proj_blocks", "gate_up_proj", _mxfp4),
        Layout("down_proj_blocks", "down_proj", _mxfp4),
    ),
}


def regroup(entries: list[Entry], config: dict[str, Any], name: str, read: Reader = None) -> Regrouped:
    """entries with every packed weight turned into its logical parameter; metadata set apart.

    read(entry) gives a (small) tensor's bytes, for layouts that keep a shape in the data (bitsandbytes).
    """
    header_sum = sum(e.numel for e in entries)
    q = quantization_config(config)
    if q is None:
        return Regrouped(entries, [], header_sum)
    method = q["quant_method"]
    if method not in LAYOUTS:
        raise PipelineError(
            f"model '{name}': quant_method {method!r} has no layout rule (known: {', '.join(LAYOUTS)}); "
            "its packed tensors would be counted as parameters"
        )
    by_key = {e.key: e for e in entries}
    meta_of: dict[str, dict[str, Entry]] = {}  # module -> {metadata suffix: entry}, built once
    for e in entries:
        suffix = next((s for s in METADATA[method] if e.key.endswith("." + s)), None)
        if suffix is not None:
            meta_of.setdefault(e.key[: -len(suffix) - 1], {})[suffix] = e
    meta_keys = {e.key for group in meta_of.values() for e in group.values()}
    logical, done = [], set()
    for layout in LAYOUTS[method]:
        for e in entries:
            if e.key in done or e.key in meta_keys or not e.key.endswith("." + layout.weight):
                continue
            module = e.key[: -len(layout.weight) - 1]
            try:
                shape = layout.rule(e, meta_of.get(module, {}), q, read)
            except PipelineError as exc:
                raise PipelineError(f"model '{name}': {exc}") from None
            done.add(e.key)
            if shape is None:
                logical.append(e)  # stored in its logical shape (fp8, int8): only the dtype is narrower
            else:
                logical.append(replace(e, key=f"{module}.{layout.logical}", shape=shape, dtype=f"{e.dtype}:{method}"))
    rest = [e for e in entries if e.key not in done and e.key not in meta_keys]
    metadata = [by_key[k] for k in sorted(meta_keys)]
    return Regrouped(logical + rest, metadata, header_sum, method, _fp8_scales(logical, by_key, q))


FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


def _fp8_scales(logical: list[Entry], by_key: dict[str, Entry], q: dict) -> dict[str, tuple[Entry, tuple[int, int]]]:
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
        if scale.key.endswith("_inv") and q.get("weight_block_size"):
            block = tuple(int(b) for b in q["weight_block_size"])
        else:
            block = (ceil(e.shape[0] / scale.shape[0]), ceil(e.shape[1] / scale.shape[1]))
        out[e.key] = (scale, block)
    return out
