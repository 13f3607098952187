"""The weights as the engine will hold them: bytes per parameter from the checkpoint's own headers when the model
has weights, else from the config's `quantization_config`, else one dtype for every value (`--dtype` overrides
both).

A quantized layout holds its values and their scales. Per quantized value (v values, g per group or block):
- mxfp4 (OCP Microscaling Formats v1.0, section 5.2; transformers' Mxfp4HfQuantizer, which quantizes the experts
  only): 4 bits per value and one 8-bit E8M0 scale per 32 values, 4.25 bits;
- fp8 (transformers' FineGrainedFP8 and FbgemmFp8; DeepSeek-V3's `weight_block_size`): 1 byte per value and one
  float32 `weight_scale_inv` per block of `weight_block_size` (rows × columns, rounded up), or one per tensor;
- gptq and awq (AutoGPTQ / AutoAWQ layouts: qweight, qzeros, scales): `bits` per value, and per group of
  `group_size` inputs and per output, a float16 scale and a `bits`-wide zero point;
- bitsandbytes (bitsandbytes' Linear4bit and Linear8bitLt): 4-bit NF4/FP4 with a float32 absmax per 64 values
  (8-bit absmax plus a float32 per 256 of them with double quantization), or int8 with a float32 scale per row;
- NVFP4 (modelopt; NVIDIA's NVFP4 format: FP4 E2M1 values, an FP8 E4M3 scale per 16 values and a float32 scale
  per tensor).
Which matrices are quantized follows the quantizers: the linear layers' and experts' matrices, never embeddings,
a mixture's router, norms or biases, less the config's `modules_to_not_convert` (or `ignore`). A method not
listed here is planned in the dtype asked, and the plan says so.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.cost.plan import DTYPE_BYTES, dtype_bytes

MXFP4_BITS = 4 + 8 / 32  # OCP MX v1.0: E2M1 values, one E8M0 scale per block of 32
NVFP4_BITS = 4 + 8 / 16  # NVFP4: E2M1 values, one E4M3 scale per block of 16 (the per-tensor scale is apart)
BNB4_BITS = 4 + 32 / 64  # bitsandbytes Linear4bit: one float32 absmax per block of 64
BNB4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # double quantization: 8-bit absmax, a float32 per 256 blocks


@dataclass(frozen=True)
class Stored:
    """Bytes per parameter row of the inventory, and where they came from."""

    bytes: pd.Series  # aligned with the parameter rows
    source: str  # "checkpoint", "quantization_config", "--dtype" or "default"
    how: str  # in words
    quantized: int  # parameters held in a quantized layout

    @property
    def total(self) -> int:
        return int(round(float(self.bytes.sum())))


def weights(params: pd.DataFrame, config: Any, dtype: str | None, default: str = "bfloat16") -> Stored:
    """The stored bytes of each parameter row (params: the inventory's parameter rows)."""
    if dtype is not None:
        per = dtype_bytes(dtype, "--dtype")
        return Stored(params["numel"] * per, "--dtype", f"every value in {dtype} (--dtype)", 0)
    from_checkpoint = _checkpoint(params)
    if from_checkpoint is not None:
        return from_checkpoint
    quant = _quantization_config(config)
    if quant:
        planned = _quantized(params, quant, default)
        if planned is not None:
            return planned
        method = quant.get("quant_method", "?")
        per = DTYPE_BYTES[default]
        how = f"every value in {default}: quantization_config {method!r} is not one hmp plans (give --dtype)"
        return Stored(params["numel"] * per, "default", how, 0)
    return Stored(params["numel"] * DTYPE_BYTES[default], "default", f"every value in {default} (no --dtype)", 0)


def _checkpoint(params: pd.DataFrame) -> Stored | None:
    """Each tensor's bytes as its header gives them, when every parameter was found in the checkpoint."""
    if "bits_per_param" not in params or params["bits_per_param"].isna().any() or not len(params):
        return None
    stored = params["numel"] * params["bits_per_param"].astype(float) / 8
    quantized = int(params.loc[params["bits_per_param"].astype(float) < 8, "numel"].sum())
    return Stored(stored, "checkpoint", "each tensor as the checkpoint stores it (its headers)", quantized)


def _quantization_config(config: Any) -> dict:
    for holder in (config, getattr(config, "text_config", None)):
        quant = getattr(holder, "quantization_config", None) if holder is not None else None
        if quant is not None:
            return quant if isinstance(quant, dict) else quant.to_dict()
    return {}


def _excluder(skip: list[str]) -> Any:
    """A test of a parameter's name: does a modules_to_not_convert entry (a module path, a tail or a head of one at
    a dot, or a glob) name its module? Worked out once per module (an NVFP4 checkpoint lists hundreds of them)."""
    keys = [key.removeprefix("re:") for key in skip]
    plain = set(keys)  # every entry as a path, a glob's too
    globs = [fnmatch.translate(k) for key in keys if any(c in key for c in "*?[") for k in (key, key + ".*")]
    glob = re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None  # fnmatch's own translation
    seen: dict[str, bool] = {}

    def excluded(name: str) -> bool:
        module = name.rpartition(".")[0]
        if module not in seen:
            parts = module.split(".")
            heads_and_tails = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            heads_and_tails |= {".".join(parts[i:]) for i in range(1, len(parts))}
            seen[module] = not plain.isdisjoint(heads_and_tails) or bool(glob and glob.match(module))
        return seen[module]

    return excluded


def _quantized(params: pd.DataFrame, quant: dict, default: str) -> Stored | None:
    """Bytes per row under a quantization_config; None for a method this module does not know."""
    method = str(quant.get("quant_method", "")).lower()
    rule = _rule(method, quant)
    if rule is None:
        return None
    bits_of, label, experts_only = rule
    skip = list(quant.get("modules_to_not_convert") or quant.get("ignore") or [])
    # never the embeddings, nor a mixture's router: quantizers keep it in the compute dtype (its gate decides
    # which experts run; transformers' FP8 and MXFP4 integrations replace only the linear layers and experts)
    kept = ["token_embedding", "position_embedding", "router"]
    eligible = (params["role"] == "matrix") & ~params["component"].isin(kept)
    if experts_only:
        eligible &= params["component"] == "experts"
    eligible &= ~params["name"].map(_excluder(skip))
    per = DTYPE_BYTES[default]
    stored = pd.Series(
        [
            bits_of(_shape(s)) / 8 if q else n * per
            for s, n, q in zip(params["shape"], params["numel"], eligible, strict=True)
        ],
        index=params.index,
    )
    how = f"{label} on {int(eligible.sum())} matrices (quantization_config), every other value in {default}"
    return Stored(stored, "quantization_config", how, int(params.loc[eligible, "numel"].sum()))


def _shape(text: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split("x") if x) or (1,)


def _rule(method: str, quant: dict):
    """(bits of a matrix of a shape, the rule in words, experts only) for a method; None if not known."""
    if method == "mxfp4":
        return (lambda s: math.prod(s) * MXFP4_BITS), "mxfp4: 4 bits + an 8-bit scale per 32 values", True
    if method in ("fp8", "fbgemm_fp8"):
        block = quant.get("weight_block_size")
        if block:
            if not isinstance(block, (list, tuple)) or len(block) != 2:
                raise PipelineError(f"quantization_config weight_block_size={block!r}: give [rows, columns]")
            rows, cols = (_whole(v, "weight_block_size", 1) for v in block)

            def fp8_blocks(s: tuple[int, ...]) -> float:
                lead = math.prod(s[:-2]) if len(s) > 2 else 1
                r, c = (s[-2], s[-1]) if len(s) >= 2 else (1, s[0])
                return math.prod(s) * 8 + lead * math.ceil(r / rows) * math.ceil(c / cols) * 32

            return fp8_blocks, f"fp8: 1 byte per value + a float32 scale per {rows}×{cols} block", False
        return (lambda s: math.prod(s) * 8 + 32), "fp8: 1 byte per value + a float32 scale per tensor", False
    if method in ("gptq", "awq"):
        bits = _whole(_given(quant, ("bits", "w_bit"), 4), "bits", 1)
        group = _whole(_given(quant, ("group_size", "q_group_size"), 128), "group_size", -1)

        def grouped(s: tuple[int, ...]) -> float:
            groups = math.prod(s) / (group if group > 0 else s[-1])
            return math.prod(s) * bits + groups * (16 + bits)

        return grouped, f"{method}: {bits} bits + a float16 scale and a {bits}-bit zero per {group} values", False
    if method == "bitsandbytes":
        if quant.get("load_in_4bit"):
            dq = bool(quant.get("bnb_4bit_use_double_quant"))
            bits = BNB4_DQ_BITS if dq else BNB4_BITS
            label = f"bitsandbytes 4-bit: {bits:.4g} bits per value{' (double quantization)' if dq else ''}"
            return (lambda s: math.prod(s) * bits), label, False
        if quant.get("load_in_8bit"):
            return (lambda s: math.prod(s) * 8 + s[0] * 32), "bitsandbytes 8-bit: int8 + a float32 per row", False
        return None
    if method == "modelopt" and str(quant.get("quant_algo", "")).upper() == "NVFP4":
        return (lambda s: math.prod(s) * NVFP4_BITS + 64), "NVFP4: 4 bits + an 8-bit scale per 16 values", False
    return None


def per_gpu(per_row: pd.Series, component: pd.Series, tp: int, ep: int) -> tuple[float, float]:
    """(the weights' bytes, one GPU's share), as Megatron splits them: norms replicated, the rest split over the
    tensor-parallel group; routed experts split over the expert-parallel ranks instead when ep > 1."""
    weights = float(per_row.sum())
    replicated = float(per_row[component == "layer_norm"].sum())
    routed = float(per_row[component == "experts"].sum())
    if ep > 1:
        return weights, (weights - routed - replicated) / tp + routed / ep + replicated
    return weights, (weights - replicated) / tp + replicated


def _whole(value: Any, field: str, least: int) -> int:
    """A quantization_config field that must be a whole number of at least `least` (a group of -1: per column)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least or value == 0:
        raise PipelineError(f"quantization_config {field}={value!r}: a whole number of at least {max(least, 1)}"
                            + (" (or -1: one group per column)" if least < 0 else ""))  # fmt: skip
    return value


def _given(quant: dict, keys: tuple[str, ...], default: int) -> Any:
    """The first of keys the config sets (AutoGPTQ's name, then AutoAWQ's), else the default."""
    return next((quant[k] for k in keys if quant.get(k) is not None), default)
