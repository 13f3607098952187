"""compressed-tensors (vLLM's llm-compressor): pack-quantized int32 words along the input, or int8 and fp8 weights
in their own shape, each with its scale, shape and (asymmetric) zero point."""

from __future__ import annotations

from math import ceil
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant.base import (
    Layout,
    Method,
    Reader,
    expect,
    is_whole,
    require,
    unpacked,
)


def schemes(q: dict) -> list[dict]:
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
        if not is_whole(bits) or bits <= 0:
            raise PipelineError(f"quantization_config: {where}.num_bits={bits!r} must be a positive whole number")
        g, strategy = weights.get("group_size"), weights.get("strategy")
        if strategy is not None and not isinstance(strategy, str):
            raise PipelineError(f"quantization_config: {where}.strategy={strategy!r} is not a strategy name")
        grouped = strategy in ("group", "tensor_group") or (strategy is None and is_whole(g) and g > 0)
        if g is not None and (not is_whole(g) or g < -1 or (grouped and g <= 0) or (strategy is None and g == 0)):
            raise PipelineError(
                f"quantization_config: {where}.group_size={g!r} must be a positive whole number"
                + (f" for strategy {strategy!r}" if grouped else ", -1 (per channel) or null")
            )
        if grouped and g is None:
            raise PipelineError(f"quantization_config: {where} has strategy {strategy!r} but no group_size")
        if not grouped and is_whole(g) and g > 0:
            raise PipelineError(f"quantization_config: {where}.group_size={g} needs strategy 'group', not {strategy!r}")
        schemes.append(weights)
    return schemes


def weights(q: dict) -> dict:
    """The weights scheme of a compressed-tensors config (every group must agree on it)."""
    found = schemes(q)
    if not found:
        raise PipelineError("quantization_config: compressed-tensors without config_groups")
    keys = ("num_bits", "group_size", "strategy")
    if any(tuple(s.get(k) for k in keys) != tuple(found[0].get(k) for k in keys) for s in found):
        raise PipelineError("quantization_config: compressed-tensors groups with different weight schemes")
    return found[0]


def required(q: dict, packed: bool) -> tuple[str, ...]:
    """What compressed-tensors writes beside a quantized weight (its compressors' compression_param_names).

    A zero point only under an asymmetric scheme: required when every group is asymmetric.
    """
    asymmetric = all(s.get("symmetric", True) is False for s in schemes(q))
    zero = ("weight_zero_point",) if asymmetric else ()
    return (("weight_scale", "weight_shape") if packed else ("weight_scale",)) + zero


def quantized(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> None:
    """compressed-tensors int-, float- and naive-quantized: the weight in its own shape, as int8 or fp8, and a scale."""
    weights(q)
    require(w, meta, required(q, packed=False), "compressed-tensors")
    return None


def packed(w: Entry, meta: dict[str, Entry], q: dict, read: Reader) -> tuple[int, ...]:
    """compressed-tensors pack-quantized: weight_packed int32 [out, in·bits/32] (packed along the input)."""
    scheme = weights(q)
    bits = scheme.get("num_bits", 8)
    if bits > 8:  # compressed-tensors' pack_to_int32 packs 1 to 8 bits
        raise PipelineError(f"quantization_config: num_bits={bits} cannot be packed (pack-quantized packs 1 to 8)")
    out, in_ = w.shape[0], unpacked(w, 1, bits)
    require(w, meta, required(q, packed=True), "compressed-tensors pack-quantized")
    shape_entry = meta.get("weight_shape")
    expect(shape_entry, (2,), "a [rows, columns] pair")
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
        expect(scale, (out, ceil(in_ / group)), f"{in_} inputs in groups of {group}")
    elif scale is not None and strategy == "channel":
        expect(scale, (out, 1), "one scale per output channel")
    return (out, in_)


def expects_quantized(q: dict[str, Any]) -> bool:
    """Whether a checkpoint under this config must hold at least one packed or quantized weight.

    Every method here does, except compressed-tensors' dense format (and a sparsity-only config, no groups):
    there the weights are kept as floats and the config only describes how to quantize them.
    """
    if q["quant_method"] != "compressed-tensors":
        return True
    groups = q.get("config_groups") or {}
    formats = {q.get("format")} | {g.get("format") for g in groups.values() if isinstance(g, dict)}
    return bool(groups) and not formats <= {None, "dense"}


METHOD = Method(
    "compressed-tensors",
    (
        "weight_scale",
        "weight_zero_point",
        "weight_g_idx",
        "weight_shape",
        "input_scale",
        "input_zero_point",
        "output_scale",
        "output_zero_point",
        "weight_global_scale",
        "input_global_scale",
    ),  # fmt: skip
    (Layout("weight_packed", "weight", packed), Layout("weight", "weight", quantized)),
    check=schemes,
    expects_quantized=expects_quantized,
)
