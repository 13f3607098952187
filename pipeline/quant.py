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
nobody knows ends as an "unexpected key" error, never a guess. Only a module that holds a packed or
quantized weight has quantization metadata: a `scales` anywhere else stays an ordinary tensor and is
named there. Each packed weight must come with the tensors its format stores beside it (GPTQ's scales
and zero points, say), a config field the rules divide by must be a positive whole number, and a
checkpoint whose config names a method but whose tensors are all floats is refused rather than counted.

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
from pipeline.cli import PipelineError

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
    packed: int = 0  # weights a layout rule claimed (packed, or stored in a quantized dtype)
    expects_packed: bool = False  # the method's layout stores some: none at all is a float checkpoint (require_packed)


def quantization_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's quantization_config (also when nested under text_config), or None."""
    for where in (config, config.get("text_config") or {}):
        q = where.get("quantization_config") if isinstance(where, dict) else None
        if q is not None:
            if not isinstance(q, dict) or not isinstance(q.get("quant_method"), str):
                raise PipelineError("config.json: quantization_config has no quant_method")
            return q
    return None


FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # a weight stored in one of these is not quantized
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number of bits


def _whole(value: Any, what: str) -> int:
    if not _is_whole(value):
        raise PipelineError(f"quantization_config: {what}={value!r} is not a whole number")
    return value


def _bits(q: dict[str, Any]) -> int:
    """Bits per value of an integer layout (GPTQ and AWQ write bits, AWQ's older files w_bit)."""
    field = "bits" if "bits" in q or "w_bit" not in q else "w_bit"
    bits = _whole(q.get(field), field)
    if bits not in (2, 3, 4, 8):  # transformers' GPTQConfig accepts these; the packing divides 32 by them
        raise PipelineError(f"quantization_config: {field}={bits} is not a width these layouts pack (2, 3, 4, 8)")
    return bits


def _group_size(q: dict[str, Any]) -> int | None:
    """GPTQ's and AWQ's group size along the input dimension; None for one group over all inputs (-1, or absent).

    transformers' GPTQConfig, gptqmodel and autoawq accept -1 or a positive size; 0 would divide by zero.
    """
    field = "group_size" if "group_size" in q or "q_group_size" not in q else "q_group_size"
    g = q.get(field)
    if g is None or (_is_whole(g) and g == -1):
        return None
    if not _is_whole(g) or g <= 0:
        raise PipelineError(
            f"quantization_config: {field}={g!r} must be a positive whole number, or -1 for one group over all inputs"
        )
    return g


def _group(q: dict[str, Any], rows: int) -> int:
    """The group size for a weight of rows inputs (one group over all of them when the config says -1)."""
    return _group_size(q) or rows


def _block(q: dict[str, Any]) -> tuple[int, int] | None:
    """Block fp8's weight_block_size [rows, columns] (transformers' FineGrainedFP8Config: two positive ints)."""
    block = q.get("weight_block_size")
    if block is None:
        return None  # one scale for the whole tensor
    if not isinstance(block, list) or len(block) != 2 or not all(_is_whole(b) and b > 0 for b in block):
        raise PipelineError(
            f"quantization_config: weight_block_size={block!r} must be a list of two positive whole numbers "
            "[rows, columns]"
        )
    return block[0], block[1]


def check_config(q: dict[str, Any]) -> None:
    """Every field a layout rule reads, checked before any tensor is: one line naming the field and its value."""
    method = q["quant_method"]
    if method in ("gptq", "awq"):
        _bits(q)
        _group_size(q)
    elif method == "compressed-tensors":
        _ct_schemes(q)
    elif method == "fp8":
        _block(q)


def _require(w: Entry, meta: dict[str, Entry], names: tuple[str, ...], what: str) -> None:
    """A quantized weight's module must hold the tensors its format always stores beside it (else its values are
    undefined and a loader fills them with zeros); what names the format in the error."""
    missing = [n for n in names if n not in meta]
    if missing:
        module = w.key.rpartition(".")[0]
        raise PipelineError(
            f"tensor {w.key!r} is a {what} weight, but module {module!r} has no {missing[0]!r} beside it "
            f"({what} stores {', '.join(names)} with every weight)"
        )


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
    # g_idx is optional: auto-round and gptqmodel leave it out without act-order (it is then i // group)
    _require(w, meta, ("qzeros", "scales", "g_idx") if q.get("desc_act") is True else ("qzeros", "scales"), "GPTQ")
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
    _require(w, meta, ("qzeros", "scales"), "AWQ")  # autoawq's WQLinear_GEMM stores both, zero_point or not
    bits = _bits(q)
    in_, out = w.shape[0], _unpacked(w, 1, bits)
    groups = ceil(in_ / _group(q, in_))
    _expect(meta.get("scales"), (groups, out), f"{in_} inputs in groups of {_group(q, in_)}")
    _expect(meta.get("qzeros"), (groups, out * bits // 32), f"{out} outputs packed at {bits} bits")
    return (out, in_)


def _ct_schemes(q: dict) -> list[dict]:
    """The weights scheme of every compressed-tensors config group, each field a rule reads checked.

    As compressed-tensors' QuantizationArgs: group_size null, -1 (per channel) or positive, positive
    exactly for the group strategies (it divides the inputs); and num_bits a positive whole number
    (compressed-tensors leaves 0 to its packer, which refuses it).
    """
    groups = q.get("config_groups") or {}
    if not isinstance(groups, dict):
        raise PipelineError(f"quantization_config: config_groups={groups!r} must be an object of named groups")
    schemes = []
    for gname, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if weights is None:
            continue  # a group that quantizes activations only
        where = f"config_groups.{gname}.weights"
        if not isinstance(weights, dict):
            raise PipelineError(f"quantization_config: {where}={weights!r} must be an object")
        bits = weights.get("num_bits", 8)  # compressed-tensors' default
        if not _is_whole(bits) or bits <= 0:
            raise PipelineError(f"quantization_config: {where}.num_bits={bits!r} must be a positive whole number")
        g, strategy = weights.get("group_size"), weights.get("strategy")
        if strategy is not None and not isinstance(strategy, str):
            raise PipelineError(f"quantization_config: {where}.strategy={strategy!r} is not a strategy name")
        grouped = strategy in ("group", "tensor_group") or (strategy is None and _is_whole(g) and g > 0)
        if g is not None and (not _is_whole(g) or g < -1 or (grouped and g <= 0) or (strategy is None and g == 0)):
            raise PipelineError(
                f"quantization_config: {where}.group_size={g!r} must be a positive whole number"
                + (f" for strategy {strategy!r}" if grouped else ", -1 (per channel) or null")
            )
        if grouped and g is None:
            raise PipelineError(f"quantization_config: {where} has strategy {strategy!r} but no group_size")
        if not grouped and _is_whole(g) and g > 0:
            raise PipelineError(f"quantization_config: {where}.group_size={g} needs strategy 'group', not {strategy!r}")
        schemes.append(weights)
    return schemes


def _ct_weights(q: dict) -> dict:
    """The weights scheme of a compressed-tensors config (every group must agree on it)."""
    schemes = _ct_schemes(q)
    if not schemes:
        raise PipelineError("quantization_config: compressed-tensors without config_groups")
    keys = ("num_bits", "group_size", "strategy")
    if any(tuple(s.get(k) for k in keys) != tuple(schemes[0].get(k) for k in keys) for s in schemes):
        raise PipelineError("quantization_config: compressed-tensors groups with different weight schemes")
    return schemes[0]


def _ct_required(q: dict, packed: bool) -> tuple[str, ...]:
    """What compressed-tensors writes beside a quantized weight (its compressors' compression_param_names).

    A zero point only under an asymmetric scheme: required when every group is asymmetric.
    """
    asymmetric = all(s.get("symmetric", True) is False for s in _ct_schemes(q))
    zero = ("weight_zero_point",) if asymmetric else ()
    return (("weight_scale", "weight_shape") if packed else ("weight_scale",)) + zero


def _ct_quantized(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> None:
    """compressed-tensors int-, float- and naive-quantized: the weight in its own shape, as int8 or fp8, and a scale."""
    _ct_weights(q)
    _require(w, meta, _ct_required(q, packed=False), "compressed-tensors")
    return None


def _ct_packed(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """compressed-tensors pack-quantized: weight_packed int32 [out, in·bits/32] (packed along the input)."""
    scheme = _ct_weights(q)
    bits = scheme.get("num_bits", 8)
    if bits > 8:  # compressed-tensors' pack_to_int32 packs 1 to 8 bits
        raise PipelineError(f"quantization_config: num_bits={bits} cannot be packed (pack-quantized packs 1 to 8)")
    out, in_ = w.shape[0], _unpacked(w, 1, bits)
    _require(w, meta, _ct_required(q, packed=True), "compressed-tensors pack-quantized")
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
        group = scheme["group_size"]  # checked positive by _ct_schemes
        _expect(scale, (out, ceil(in_ / group)), f"{in_} inputs in groups of {group}")
    elif scale is not None and strategy == "channel":
        _expect(scale, (out, 1), "one scale per output channel")
    return (out, in_)


def _bnb(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """bitsandbytes 4-bit: weight uint8 [⌈n/2⌉, 1], two codes a byte; the shape lives in its quant_state JSON."""
    state = next((v for k, v in meta.items() if k.startswith("weight.quant_state.")), None)
    if state is None and (q.get("load_in_4bit") is True or w.dtype == "U8"):  # 4-bit codes, but no state
        kind = q.get("bnb_4bit_quant_type") if q.get("bnb_4bit_quant_type") in ("nf4", "fp4") else "fp4"
        _require(w, meta, (f"weight.quant_state.bitsandbytes__{kind}",), "bitsandbytes 4-bit")
    if state is None:  # 8-bit: the weight keeps its shape (int8 [out, in]); SCB and weight_format are metadata
        if w.dtype == "I8":
            _require(w, meta, ("SCB",), "bitsandbytes 8-bit")  # its row scales: transformers' loader reads them
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
    if not isinstance(shape, list) or not all(_is_whole(s) and s >= 0 for s in shape):
        raise PipelineError(f"tensor {state.key!r}: quant state shape={shape!r} is not a list of whole numbers")
    if not _is_whole(blocksize) or blocksize <= 0:
        raise PipelineError(
            f"tensor {state.key!r}: quant state blocksize={blocksize!r} must be a positive whole number"
        )
    # bitsandbytes' QuantState.from_dict reads absmax and quant_map, and the nested pair under double quantization
    nested = any(k.startswith("nested_") for k in info) or "weight.nested_absmax" in meta
    extra = ("weight.nested_absmax", "weight.nested_quant_map") if nested else ()
    _require(w, meta, ("weight.absmax", "weight.quant_map", *extra), "bitsandbytes 4-bit")
    shape = tuple(shape)
    n = prod(shape)
    _expect(w, ((n + 1) // 2, 1), f"{list(shape)} at two 4-bit codes a byte")
    _expect(meta.get("weight.absmax"), (ceil(n / blocksize),), f"{n} values in blocks of {blocksize}")
    return shape


def _fp8(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...] | None:
    """Block-scaled fp8: weight F8_E4M3 [out, in] as is; weight_scale_inv [⌈out/b0⌉, ⌈in/b1⌉]."""
    block = _block(q)
    if block is not None and w.dtype in FP8_DTYPES:
        _require(w, meta, ("weight_scale_inv",), "block-scaled fp8")  # one scale per block: DeepSeek's, Qwen's
    if block is not None and len(w.shape) == 2:
        b0, b1 = block
        _expect(meta.get("weight_scale_inv"), (ceil(w.shape[0] / b0), ceil(w.shape[1] / b1)), f"blocks of {b0}×{b1}")
    return None


def _mxfp4(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """mxfp4 (gpt-oss experts): *_blocks uint8 [E, R, G, 16] of 32 4-bit values a group, *_scales [E, R, G]."""
    if w.dtype != "U8" or len(w.shape) != 4 or w.shape[3] != 16:
        raise PipelineError(f"tensor {w.key!r}: mxfp4 blocks are uint8 [E, rows, groups, 16], not {list(w.shape)}")
    e, rows, groups, _ = w.shape
    stem = w.key.rpartition(".")[2].removesuffix("_blocks")
    _require(w, meta, (f"{stem}_scales",), "mxfp4")
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
    "compressed-tensors": (Layout("weight_packed", "weight", _ct_packed), Layout("weight", "weight", _ct_quantized)),
    "bitsandbytes": (Layout("weight", "weight", _bnb),),
    "fp8": (Layout("weight", "weight", _fp8),),
    "mxfp4": (
        Layout("gate_up_proj_blocks", "gate_up_proj", _mxfp4),
        Layout("down_proj_blocks", "down_proj", _mxfp4),
    ),
}


def _expects_quantized(q: dict[str, Any]) -> bool:
    """Whether a checkpoint under this config must hold at least one packed or quantized weight.

    Every method here does, except compressed-tensors' dense format (and a sparsity-only config, no groups):
    there the weights are kept as floats and the config only describes how to quantize them.
    """
    if q["quant_method"] != "compressed-tensors":
        return True
    groups = q.get("config_groups") or {}
    formats = {q.get("format")} | {g.get("format") for g in groups.values() if isinstance(g, dict)}
    return bool(groups) and not formats <= {None, "dense"}


def regroup(entries: list[Entry], config: dict[str, Any], name: str, read: Reader = None) -> Regrouped:
    """entries with every packed weight turned into its logical parameter; metadata set apart.

    read(entry) gives a (small) tensor's bytes, for layouts that keep a shape in the data (bitsandbytes).
    Metadata is a tensor with a method's metadata suffix on a module that holds a packed or quantized
    weight; on any other module (one the model lacks, or whose weight is a float) it stays an ordinary
    tensor, which reconciliation then names.
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
    try:
        check_config(q)
    except PipelineError as exc:
        raise PipelineError(f"model '{name}': {exc}") from None
    by_key = {e.key: e for e in entries}
    candidates: dict[str, dict[str, Entry]] = {}  # module -> {metadata suffix: entry}, built once
    for e in entries:
        suffix = next((s for s in METADATA[method] if e.key.endswith("." + s)), None)
        if suffix is not None:
            candidates.setdefault(e.key[: -len(suffix) - 1], {})[suffix] = e
    candidate_keys = {e.key for group in candidates.values() for e in group.values()}
    logical, done, quantized = [], set(), set()  # quantized: modules holding a packed or quantized weight
    for layout in LAYOUTS[method]:
        for e in entries:
            if e.key in done or e.key in candidate_keys or not e.key.endswith("." + layout.weight):
                continue
            if layout.weight == layout.logical and e.dtype in FLOAT_DTYPES:
                continue  # a weight kept in float (a norm, an unquantized head): an ordinary tensor
            module = e.key[: -len(layout.weight) - 1]
            try:
                shape = layout.rule(e, candidates.get(module, {}), q, read)
            except PipelineError as exc:
                raise PipelineError(f"model '{name}': {exc}") from None
            done.add(e.key)
            quantized.add(module)
            if shape is None:
                logical.append(e)  # stored in its logical shape (fp8, int8): only the dtype is narrower
            else:
                logical.append(replace(e, key=f"{module}.{layout.logical}", shape=shape, dtype=f"{e.dtype}:{method}"))
    meta_keys = {e.key for module in quantized for e in candidates.get(module, {}).values()}
    rest = [e for e in entries if e.key not in done and e.key not in meta_keys]
    metadata = [by_key[k] for k in sorted(meta_keys)]
    scales = _fp8_scales(logical, by_key, q)
    return Regrouped(logical + rest, metadata, header_sum, method, scales, len(logical), _expects_quantized(q))


def require_packed(regrouped: Regrouped, name: str) -> None:
    """Refuse a checkpoint whose config names a quantization method but none of whose weights it describes.

    Called once the tensors are reconciled with the architecture: a checkpoint whose tensors no rule
    knows is better named by their unexpected keys; one that matches as plain floats (a float
    checkpoint beside a quantized model's config.json) would be counted, and its size reported as
    some 32 bits per parameter of GPTQ.
    """
    if regrouped.method and regrouped.expects_packed and not regrouped.packed:
        looked = " or ".join(f"*.{layout.weight}" for layout in LAYOUTS.get(regrouped.method, ()))
        dtypes = ", ".join(sorted({e.dtype for e in regrouped.entries}))
        raise PipelineError(
            f"model '{name}': its quantization_config says {regrouped.method}, but no tensor is packed or "
            f"quantized (no {looked} in a quantized dtype; every tensor is {dtypes})"
        )


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
        if scale.key.endswith("_inv") and _block(q):
            block = _block(q)
        else:
            block = (ceil(e.shape[0] / scale.shape[0]), ceil(e.shape[1] / scale.shape[1]))
        out[e.key] = (scale, block)
    return out
