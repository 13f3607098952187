"""How a checkpoint's tensors map onto the parameters of the architecture built on the meta device: by transformers'
own key mapping and conversion rules for safetensors, by transformers' GGUF name map for GGUF.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError, first_line
from pipeline.formats.entries import Entry

if TYPE_CHECKING:
    import torch


def reconcile_gguf(model: torch.nn.Module, stored: list[Entry], arch: str, name: str) -> Reconciled:
    """Map GGUF tensors onto the model's parameters by transformers' own name map; shapes and counts must agree.

    A parameter may come from one GGUF tensor (its shape must match) or several (stacked or fused experts:
    their values must add up to it). GGUF tensors that map to no parameter, and parameters no tensor
    fills, stop the count with their names.
    """
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    try:
        names = get_gguf_hf_weights_map(model, processor)
    except Exception as exc:  # transformers' boundary (an architecture gguf's tables do not know)
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise PipelineError(f"GGUF names cannot be mapped ({why})", model=name) from None
    by_id: dict[int, str] = {}
    canonical, shapes = {}, {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        canonical[pname] = by_id.setdefault(id(p), pname)
        shapes[pname] = tuple(p.shape)
    sources: dict[str, list[Entry]] = {}
    unexpected = []
    for e in stored:
        target = names.get(e.key)
        if target is None or target not in canonical:
            unexpected.append(e.key)
            continue
        sources.setdefault(canonical[target], []).append(e)
    problems = []
    for param, group in sources.items():
        if len(group) == 1 and group[0].shape != shapes[param]:
            problems.append(f"{group[0].key} {list(group[0].shape)} vs {param} {list(shapes[param])}")
        elif sum(e.numel for e in group) != prod(shapes[param]):
            held = sum(e.numel for e in group)
            problems.append(f"{', '.join(e.key for e in group)} hold {held:,} values, {param} {prod(shapes[param]):,}")
    missing = [p for p in dict.fromkeys(canonical.values()) if p not in sources]
    if problems or missing or unexpected:
        parts = [
            f"shape mismatch: {'; '.join(problems[:4])}" if problems else "",
            f"missing: {', '.join(missing[:6])}" if missing else "",
            f"GGUF tensors with no parameter: {', '.join(unexpected[:6])}" if unexpected else "",
        ]
        raise PipelineError(f"GGUF does not match the architecture: {' | '.join(p for p in parts if p)}", model=name)
    return Reconciled(
        key_of={p: ";".join(e.key for e in group) for p, group in sources.items()},
        buffers=[],
        entry_values=sum(e.numel for e in stored),
        sources=sources,
    )


@dataclass
class Reconciled:
    """How a checkpoint's tensors map onto a model's parameters."""

    key_of: dict[str, str]  # parameter name -> checkpoint key(s) holding it, ';'-joined when a tie is stored twice
    buffers: list[tuple[Entry, str]]  # (entry, module path it belongs to): tensors that are not parameters
    entry_values: int  # every element of every entry reconciled (a packed weight at its logical shape)
    tied_copies: int = 0  # elements stored a second time under another name of a tied parameter
    unused: list[Entry] = field(default_factory=list)  # tensors of a head the built (base) class does not have
    extra: list[Entry] = field(default_factory=list)  # tensors of blocks the model does not build (DeepSeek's MTP)
    sources: dict[str, list[Entry]] = field(default_factory=dict)  # parameter -> the stored tensor(s) it comes from


def key_mapper(model: torch.nn.Module):
    """transformers' own mapping from checkpoint keys to the model's names (renames, legacy gamma/beta, prefix).

    Returns (mapped, converters): mapped(key) gives (the parameter name, the converter source pattern or
    None); converters maps each source pattern to the WeightConverter from_pretrained would run on it
    (merging one tensor per expert into a stacked parameter, concatenating gate and up projections).
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    meta_state = model.state_dict()  # meta tensors: names only, no memory
    prefix = getattr(model, "base_model_prefix", None) or None

    def mapped(key: str) -> tuple[str, str | None]:
        return rename_source_key(key, renamings, converters, prefix, meta_state)

    return mapped, {pattern: c for c in converters for pattern in c.source_patterns}


def expert_patterns(keys: Iterable[str]) -> dict[str, list[str]]:
    """Per-expert keys grouped by their pattern: model.layers.0.mlp.experts.*.w1.weight -> [its keys]."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(re.sub(r"\.experts\.\d+\.", ".experts.*.", key), []).append(key)
    return groups


def _compress(keys: set[str]) -> str:
    """Many per-expert keys as patterns: model.layers.0.mlp.experts.*.w1.weight (N), sorted."""
    groups = expert_patterns(keys)
    return ";".join(f"{p} ({len(ks)})" if len(ks) > 1 else p for p, ks in sorted(groups.items()))


def _expert_gaps(keys: set[str]) -> str:
    """'' when per-expert keys number their experts 0, 1, … without gap or repeat per source name; else what is off."""
    indices: dict[str, list[str]] = {}
    for key in keys:
        m = re.search(r"\.experts\.(\d+)\.", key)
        if m:
            indices.setdefault(key[: m.start(1)] + "*" + key[m.end(1) :], []).append(m.group(1))
    for pattern, found in sorted(indices.items()):
        want = [str(i) for i in range(len(found))]
        if sorted(found, key=lambda s: (len(s), s)) != want:
            missing = sorted(set(want) - set(found), key=int)
            odd = sorted(set(found) - set(want))
            return f"{pattern} numbers its experts {', '.join(odd)} where {', '.join(missing) or 'none'} is missing"
    return ""


def source_keys(checkpoint_key: str, patterns: dict[str, list[str]]) -> list[str]:
    """The checkpoint keys an inventory's checkpoint_key names: itself, or each expert a _compress pattern covers.

    patterns is expert_patterns() of the checkpoint's keys, built once per checkpoint.
    """
    keys = []
    for part in checkpoint_key.split(";"):
        pattern = re.sub(r" \(\d+\)$", "", part)
        keys += patterns.get(pattern, []) if "*" in pattern else [pattern]  # in file order: deterministic sums
    return keys


def _merge(model: torch.nn.Module, target: str, converter: Any) -> tuple[int, ...]:
    """The shape transformers' converter gives target from the collected (meta) tensors: its own operations run."""
    out = converter.convert(target, model=model, config=model.config)
    if target in out:
        return tuple(out[target].shape)
    if len(out) == 1:
        return tuple(next(iter(out.values())).shape)
    raise ValueError(f"the conversion gives {sorted(out)}, not {target}")


def _extra_layer(model: torch.nn.Module, key: str) -> bool:
    """A tensor of a block the model does not build: transformers ignores it on load (its own patterns), or it
    lies in a multi-token-prediction layer (DeepSeek-V3 stores one as layer num_hidden_layers)."""
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    if any(p.search(key) for p in ignore):
        return True
    layers = getattr(model.config, "num_hidden_layers", None)
    mtp = getattr(model.config, "num_nextn_predict_layers", None) or 0
    found = re.search(r"(?:^|\.)layers\.(\d+)\.", key)
    return bool(found and layers is not None and mtp and layers <= int(found.group(1)) < layers + mtp)


def _owner(model_modules: dict[str, Any], name: str) -> str | None:
    module_path = name.rpartition(".")[0]
    return module_path if module_path in model_modules else None


def reconcile(model: torch.nn.Module, entries: list[Entry], name: str, base_only: bool = False) -> Reconciled:
    """Map checkpoint keys to parameter names; classify extra tensors as buffers; fail on anything else.

    Keys go through transformers' own key mapping first (GPT-NeoX's embed_out is lm_head in v5, old
    BERT files say gamma and beta), and may lack or carry the base-model prefix (the Hub's GPT-2 stores
    h.0.attn.c_attn.weight for transformer.h.0.attn.c_attn.weight). A tied parameter may be stored
    under one or more of its names (old GPT-2 files hold wte.weight and lm_head.weight; the ties stage
    compares their values); any other parameter stored twice is refused, naming both keys. With
    base_only (a base model counted from a checkpoint with a head, such as BERT's pretraining heads),
    tensors outside the base model are listed as unused.
    An extra tensor is a buffer when the module it names exists and the model says it is not a
    parameter: transformers lists it in _keys_to_ignore_on_load_unexpected, the module registers
    a buffer of that name, or it is a scalar (a legacy constant such as attn.masked_bias).
    """
    import torch
    from transformers.core_model_loading import dot_natural_key

    r = _Reconciler(model, name, base_only)
    for e in sorted(entries, key=lambda e: dot_natural_key(e.key)):
        mapped, pattern = r.mapper(e.key)
        if pattern is not None and mapped in r.canonical_of:
            conv = r.merging.setdefault(mapped, copy.deepcopy(r.converters[pattern]))
            r.sources.setdefault(r.canonical_of[mapped], []).append(e)
            conv.add_tensor(mapped, e.key, pattern, torch.empty(e.shape, dtype=torch.float32, device="meta"))
            continue
        candidates = [mapped, e.key] + ([f"{r.prefix}.{mapped}"] if r.prefix else [])
        if r.prefix and mapped.startswith(r.prefix + "."):
            candidates.append(mapped[len(r.prefix) + 1 :])
        pname = next((c for c in candidates if c in r.canonical_of), None)
        if pname is not None:
            r.stored(e, pname)
        else:
            r.other(e, mapped, candidates)
    r.merge_experts()
    r.refuse_problems()
    return Reconciled(
        key_of=r.key_of,
        buffers=r.buffers,
        entry_values=sum(e.numel for e in entries),
        tied_copies=r.copies,
        unused=r.unused,
        extra=r.extra,
        sources=r.sources,
    )


class _Reconciler:
    """The model's parameters by name and alias, and what each checkpoint tensor was found to be."""

    def __init__(self, model: torch.nn.Module, name: str, base_only: bool) -> None:
        self.model, self.name, self.base_only = model, name, base_only
        self.modules = dict(model.named_modules())
        self.prefix = getattr(model, "base_model_prefix", "") or ""
        self.aliases: dict[str, list[str]] = {}
        by_id: dict[int, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for pname, p in model.named_parameters(remove_duplicate=False):
            canonical = by_id.setdefault(id(p), pname)
            self.aliases.setdefault(canonical, []).append(pname)
            self.shapes[pname] = tuple(p.shape)
        self.canonical_of = {alias: canon for canon, names in self.aliases.items() for alias in names}
        self.buffer_names = {bname for bname, _ in model.named_buffers(remove_duplicate=False)}
        self.ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
        self.mapper, self.converters = key_mapper(model)
        self.key_of: dict[str, str] = {}
        self.unused: list[Entry] = []
        self.extra: list[Entry] = []
        self.copies = 0
        self.buffers: list[tuple[Entry, str]] = []
        self.unexpected: list[Entry] = []
        self.mismatched: list[str] = []
        self.twice: list[str] = []  # a parameter stored twice under one of its names, or an untied one under two
        self.stored_as: dict[str, str] = {}  # each parameter name the checkpoint stores -> the key that holds it
        self.merging: dict[str, Any] = {}  # parameter -> the converter collecting its per-expert tensors
        self.sources: dict[str, list[Entry]] = {}

    def stored(self, e: Entry, pname: str) -> None:
        """e holds the parameter named pname (one of its names)."""
        if tuple(e.shape) != self.shapes[pname]:
            self.mismatched.append(f"{e.key} {list(e.shape)} vs {pname} {list(self.shapes[pname])}")
            return
        canon = self.canonical_of[pname]
        if pname in self.stored_as or (canon in self.key_of and len(self.aliases[canon]) == 1):
            # one name, two tensors (h.0.attn.c_attn.weight and transformer.h.0.attn.c_attn.weight): which
            # one the model would load is the loader's accident, and counting one of them hides the other
            first = self.stored_as.get(pname) or self.key_of[canon]
            tie = "" if len(self.aliases[canon]) > 1 else ", a parameter with no other name"
            self.twice.append(f"{first} and {e.key} both hold {pname}{tie}")
            return
        self.stored_as[pname] = e.key
        if canon in self.key_of:  # a tied tensor stored under another of its names: both are copies of one parameter
            self.key_of[canon] += ";" + e.key
            self.copies += e.numel
            return
        self.key_of[canon] = e.key
        self.sources[canon] = [e]

    def other(self, e: Entry, mapped: str, candidates: list[str]) -> None:
        """e holds no parameter: a buffer, a tensor outside the base model, an extra layer, or unexpected."""
        owner = next((o for o in (_owner(self.modules, c) for c in candidates) if o is not None), None)
        is_buffer = owner is not None and (
            any(pat.search(e.key) for pat in self.ignore)
            or any(c in self.buffer_names for c in candidates)
            or e.numel == 1
        )
        if is_buffer:
            self.buffers.append((e, owner))
        elif self.base_only and mapped.split(".", 1)[0] not in self.modules and not e.key.startswith(f"{self.prefix}."):
            self.unused.append(e)
        elif owner is None and _extra_layer(self.model, e.key):
            self.extra.append(e)
        else:
            self.unexpected.append(e)

    def merge_experts(self) -> None:
        """The per-expert tensors merged into each parameter by transformers' own converters."""
        for target, conv in self.merging.items():
            merged = conv.layer_targets[target]
            gaps = _expert_gaps(merged)
            if gaps:
                self.mismatched.append(f"{target}: {gaps}")
                continue
            try:
                shape = _merge(self.model, target, conv)
            except Exception as exc:  # transformers' own operations refuse tensors that do not fit together
                self.mismatched.append(f"{len(merged)} tensors merged into {target} do not fit ({first_line(exc)})")
                continue
            if shape != self.shapes[target]:
                self.mismatched.append(
                    f"{len(merged)} tensors merge to {list(shape)} vs {target} {list(self.shapes[target])}"
                )
                continue
            if self.canonical_of[target] in self.key_of:  # stored whole and as one tensor per expert
                self.twice.append(
                    f"{self.key_of[self.canonical_of[target]]} and {_compress(merged)} both hold {target}"
                )
                continue
            self.key_of[self.canonical_of[target]] = _compress(merged)

    def refuse_problems(self) -> None:
        """One line naming every way the checkpoint does not match, when it does not."""
        missing = [canon for canon in self.aliases if canon not in self.key_of]
        problems = []
        if self.mismatched:
            problems.append(
                f"shape mismatch: {'; '.join(self.mismatched[:5])}{' …' if len(self.mismatched) > 5 else ''}"
            )
        if self.twice:
            problems.append(f"stored twice: {'; '.join(self.twice[:3])}{' …' if len(self.twice) > 3 else ''}")
        if missing:
            problems.append(f"missing keys: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
        if self.unexpected:
            # largest first (stable: file order among equals): the tensors that hold a layout's values lead the
            # truncated list, ahead of the scales and indices beside them
            keys = [e.key for e in sorted(self.unexpected, key=lambda e: -e.numel)]
            problems.append(f"unexpected keys: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}")
        if problems:
            raise PipelineError(f"checkpoint does not match the architecture: {' | '.join(problems)}", model=self.name)
