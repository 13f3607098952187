"""Quantized safetensors checkpoints: each quantized module's stored tensors mapped back to its logical weight.

A quantized file does not store a Linear's weight [out, in] as such: GPTQ packs it into int32 words
(`qweight`) beside scales, zero points and a group index; bitsandbytes stores 4-bit codes as a byte
column; gpt-oss stores its experts as mxfp4 blocks. Summing the header, as the Hub's page once did,
counts packed words, not parameters. Here every layout is a rule that turns the packed tensor back
into the logical shape it encodes (the bits per value, the group size and the packing direction
checked against the other tensors of the module) and files everything else the module stores as
quantization metadata. The logical weights then go through the same reconciliation with the
architecture as any checkpoint (pipeline/model/reconcile.py): a layout rule that is wrong cannot give a
wrong count, it fails there, naming the tensor. A tensor no rule claims stays as it is, so a layout
nobody knows ends as an "unexpected key" error, never a guess. Only a module that holds a packed or
quantized weight has quantization metadata: a `scales` anywhere else stays an ordinary tensor and is
named there. Each packed weight must come with the tensors its format stores beside it (GPTQ's scales
and zero points, say), a config field the rules divide by must be a positive whole number, and a
checkpoint whose config names a method but whose tensors are all floats is refused rather than counted.

The rules follow the formats' own loaders: transformers' GPTQ/AWQ/compressed-tensors/bitsandbytes/
FineGrainedFP8/Mxfp4 quantizer integrations and the compressed-tensors package's packing (values
packed 32 // bits to an int32 along the input dimension).

One module per method (gptq, awq, compressed_tensors, bitsandbytes, fp8, mxfp4), each a Method of
pipeline/formats/quant/base.py behind the one door, regroup().
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry
from pipeline.formats.quant import awq, bitsandbytes, compressed_tensors, fp8, gptq, mxfp4
from pipeline.formats.quant.base import FLOAT_DTYPES, Reader

METHODS = {m.METHOD.name: m.METHOD for m in (gptq, awq, compressed_tensors, bitsandbytes, fp8, mxfp4)}


@dataclass
class Regrouped:
    """A checkpoint's entries with packed weights replaced by logical ones, and what the file holds apart."""

    entries: list[Entry]  # logical weights (packed bytes, logical shape) and every tensor no rule claimed
    metadata: list[Entry] = field(default_factory=list)  # scales, zero points, group indices, quant state
    checkpoint_tensors: int = 0  # what a naive sum of the header gives: packed words counted as parameters
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


def check_config(q: dict[str, Any]) -> None:
    """Every field a layout rule reads, checked before any tensor is: one line naming the field and its value."""
    method = METHODS.get(q["quant_method"])
    if method is not None:
        method.check(q)


def regroup(entries: list[Entry], config: dict[str, Any], name: str, read: Reader = None) -> Regrouped:
    """entries with every packed weight turned into its logical parameter; metadata set apart.

    read(entry) gives a (small) tensor's bytes, for layouts that keep a shape in the data (bitsandbytes).
    Metadata is a tensor with a method's metadata suffix on a module that holds a packed or quantized
    weight; on any other module (one the model lacks, or whose weight is a float) it stays an ordinary
    tensor, which reconciliation then names.
    """
    checkpoint_tensors = sum(e.numel for e in entries)
    q = quantization_config(config)
    if q is None:
        return Regrouped(entries, [], checkpoint_tensors)
    method = q["quant_method"]
    if method not in METHODS:
        raise PipelineError(
            f"quant_method {method!r} has no layout rule (known: {', '.join(METHODS)}); "
            "its packed tensors would be counted as parameters",
            model=name,
        )
    try:
        check_config(q)
    except PipelineError as exc:
        raise exc.named(name) from None
    by_key = {e.key: e for e in entries}
    candidates: dict[str, dict[str, Entry]] = {}  # module -> {metadata suffix: entry}, built once
    for e in entries:
        suffix = next((s for s in METHODS[method].metadata if e.key.endswith("." + s)), None)
        if suffix is not None:
            candidates.setdefault(e.key[: -len(suffix) - 1], {})[suffix] = e
    candidate_keys = {e.key for group in candidates.values() for e in group.values()}
    logical, done, quantized = [], set(), set()  # quantized: modules holding a packed or quantized weight
    for layout in METHODS[method].layouts:
        for e in entries:
            if e.key in done or e.key in candidate_keys or not e.key.endswith("." + layout.weight):
                continue
            if layout.weight == layout.logical and e.dtype in FLOAT_DTYPES:
                continue  # a weight kept in float (a norm, an unquantized head): an ordinary tensor
            module = e.key[: -len(layout.weight) - 1]
            try:
                shape = layout.rule(e, candidates.get(module, {}), q, read)
            except PipelineError as exc:
                raise exc.named(name) from None
            done.add(e.key)
            quantized.add(module)
            if shape is None:
                logical.append(e)  # stored in its logical shape (fp8, int8): only the dtype is narrower
            else:
                logical.append(replace(e, key=f"{module}.{layout.logical}", shape=shape, dtype=f"{e.dtype}:{method}"))
    meta_keys = {e.key for module in quantized for e in candidates.get(module, {}).values()}
    rest = [e for e in entries if e.key not in done and e.key not in meta_keys]
    metadata = [by_key[k] for k in sorted(meta_keys)]
    scales = fp8.scales(logical, by_key, q)
    return Regrouped(
        logical + rest, metadata, checkpoint_tensors, method, scales, len(logical), METHODS[method].expects_quantized(q)
    )


def require_packed(regrouped: Regrouped, name: str) -> None:
    """Refuse a checkpoint whose config names a quantization method but none of whose weights it describes.

    Called once the tensors are reconciled with the architecture: a checkpoint whose tensors no rule
    knows is better named by their unexpected keys; one that matches as plain floats (a float
    checkpoint beside a quantized model's config.json) would be counted, and its size reported as
    some 32 bits per parameter of GPTQ.
    """
    if regrouped.method and regrouped.expects_packed and not regrouped.packed:
        looked = " or ".join(f"*.{layout.weight}" for layout in METHODS[regrouped.method].layouts)
        dtypes = ", ".join(sorted({e.dtype for e in regrouped.entries}))
        raise PipelineError(
            f"its quantization_config says {regrouped.method}, but no tensor is packed or "
            f"quantized (no {looked} in a quantized dtype; every tensor is {dtypes})",
            model=name,
        )
