"""Checkpoints on disk: safetensors headers (no tensor data), shards, and reconciliation with the architecture.

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw data. Counting needs only the header, so nothing here
reads tensor bytes.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cli import PipelineError

if TYPE_CHECKING:
    import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
# Header sizes beyond this are not a safetensors file (the format caps headers at 100 MB).
MAX_HEADER = 100_000_000
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One tensor of a checkpoint, as its header describes it."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int  # byte offset from the start of the file
    end: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


def parse_header(blob: bytes, file: str) -> tuple[int, dict[str, Any]]:
    """(data start offset, header dict) from the first bytes of a safetensors file."""
    if len(blob) < 8:
        raise PipelineError(f"{file}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER:
        raise PipelineError(f"{file}: header length {n} is not that of a safetensors file")
    if len(blob) < 8 + n:
        raise PipelineError(f"{file}: truncated header ({len(blob) - 8} of {n} bytes)")
    try:
        header = json.loads(blob[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"{file}: header is not JSON; not a safetensors file") from None
    return 8 + n, header


def entries_from_header(header: dict[str, Any], data_start: int, file: str) -> list[Entry]:
    out = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            entry = Entry(key, info["dtype"], tuple(info["shape"]), file, data_start + begin, data_start + end)
        except (KeyError, TypeError, ValueError):
            raise PipelineError(f"{file}: malformed header entry for tensor '{key}'") from None
        if entry.dtype in DTYPE_BYTES and entry.end - entry.begin != entry.numel * DTYPE_BYTES[entry.dtype]:
            raise PipelineError(
                f"{file}: tensor '{key}' has {entry.end - entry.begin} bytes for shape {list(entry.shape)}"
            )
        out.append(entry)
    return out


def read_entries(path: Path) -> list[Entry]:
    """The tensors of one local safetensors file, from its header alone."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(8)
            if len(start) < 8:
                raise PipelineError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", start)
            if n > MAX_HEADER:
                raise PipelineError(f"{path}: header length {n} is not that of a safetensors file")
            blob = start + fh.read(n)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing") from None
    data_start, header = parse_header(blob, str(path))
    entries = entries_from_header(header, data_start, path.name)
    size = path.stat().st_size
    for e in entries:
        if e.end > size:
            raise PipelineError(f"{path}: tensor '{e.key}' ends at byte {e.end}, past the end of the file ({size})")
    return entries


def weight_files(folder: Path, allow_pickle: bool = False) -> tuple[list[str], str]:
    """The weight files of a model folder and their format ('safetensors' or 'pickle'); [] if none.

    A sharded checkpoint is read through its index, and every shard it lists must exist. A folder
    filled by range reads holds the remote files' headers instead ('remote').
    """
    if (folder / "remote_headers.json").is_file():
        return sorted(json.loads((folder / "remote_headers.json").read_text())), "remote"
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        return _shards(index), "safetensors"
    if (folder / SAFETENSORS_SINGLE).is_file():
        return [SAFETENSORS_SINGLE], "safetensors"
    singles = sorted(p.name for p in folder.glob("*.safetensors"))
    if singles:
        return singles, "safetensors"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if (folder / PICKLE_INDEX).is_file():
        pickles = _shards(folder / PICKLE_INDEX)
    if pickles:
        if not allow_pickle:
            raise PipelineError(
                f"{folder / pickles[0]}: pickle checkpoint refused (pickle can run code); "
                "set allow_pickle: true in the model config to load it with torch.load(weights_only=True)"
            )
        return pickles, "pickle"
    return [], ""


def _shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PipelineError(f"{index}: not a checkpoint index (no weight_map)") from None
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise PipelineError(f"{index}: lists shard {shard}, which is missing from {index.parent}")
    return shards


def load_entries(folder: Path) -> tuple[list[Entry], str]:
    """The tensors of a model folder's checkpoint, headers only, and its format ('' when it has none)."""
    files, fmt = weight_files(folder)
    if fmt == "remote":
        from pipeline import remote

        return remote.remote_entries(folder), fmt
    if fmt == "safetensors":
        return read_checkpoint(folder, files), fmt
    return [], fmt


def read_checkpoint(folder: Path, files: list[str]) -> list[Entry]:
    """All tensors of a (possibly sharded) safetensors checkpoint, headers only."""
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for name in files:
        for e in read_entries(folder / name):
            if e.key in seen:
                raise PipelineError(f"{folder}: tensor '{e.key}' is stored in both {seen[e.key]} and {name}")
            seen[e.key] = name
            entries.append(e)
    return entries


# --- reconciliation ---------------------------------------------------------------------------


@dataclass
class Reconciled:
    """How a checkpoint's tensors map onto a model's parameters."""

    key_of: dict[str, str]  # parameter name -> checkpoint key(s) holding it, ';'-joined when a tie is stored twice
    buffers: list[tuple[Entry, str]]  # (entry, module path it belongs to): tensors that are not parameters
    checkpoint_tensors: int  # every element of every tensor in the checkpoint
    tied_copies: int = 0  # elements stored a second time under another name of a tied parameter
    unused: list[Entry] = field(default_factory=list)  # tensors of a head the built (base) class does not have


def key_mapper(model: torch.nn.Module):
    """transformers' own mapping from checkpoint keys to the model's names (renames, legacy gamma/beta, prefix).

    Returns a function key -> mapped key. A key that needs a tensor conversion (merging experts, splitting
    fused matrices) cannot be counted from its header, and is refused by name.
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

    return mapped


def _owner(model_modules: dict[str, Any], name: str) -> str | None:
    module_path = name.rpartition(".")[0]
    return module_path if module_path in model_modules else None


def reconcile(model: torch.nn.Module, entries: list[Entry], name: str, base_only: bool = False) -> Reconciled:
    """Map checkpoint keys to parameter names; classify extra tensors as buffers; fail on anything else.

    Keys go through transformers' own key mapping first (GPT-NeoX's embed_out is lm_head in v5, old
    BERT files say gamma and beta), and may lack or carry the base-model prefix (the Hub's GPT-2 stores
    h.0.attn.c_attn.weight for transformer.h.0.attn.c_attn.weight). A tied parameter may be stored
    under one or more of its names. With base_only (a base model counted from a checkpoint with a
    head, such as BERT's pretraining heads), tensors outside the base model are listed as unused.
    An extra tensor is a buffer when the module it names exists and the model says it is not a
    parameter: transformers lists it in _keys_to_ignore_on_load_unexpected, the module registers
    a buffer of that name, or it is a scalar (a legacy constant such as attn.masked_bias).
    """
    modules = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "") or ""
    aliases: dict[str, list[str]] = {}
    by_id: dict[int, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        canonical = by_id.setdefault(id(p), pname)
        aliases.setdefault(canonical, []).append(pname)
        shapes[pname] = tuple(p.shape)
    canonical_of = {alias: canon for canon, names in aliases.items() for alias in names}
    buffer_names = {bname for bname, _ in model.named_buffers(remove_duplicate=False)}
    ignore = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]

    mapper = key_mapper(model)
    key_of: dict[str, str] = {}
    unused: list[Entry] = []
    copies = 0
    buffers: list[tuple[Entry, str]] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    for e in entries:
        mapped, converter = mapper(e.key)
        if converter is not None:
            raise PipelineError(
                f"model '{name}': checkpoint tensor {e.key} needs a conversion ({converter}) before it is a "
                "parameter; such checkpoints cannot be counted from their headers"
            )
        candidates = [mapped, e.key] + ([f"{prefix}.{mapped}"] if prefix else [])
        if prefix and mapped.startswith(prefix + "."):
            candidates.append(mapped[len(prefix) + 1 :])
        pname = next((c for c in candidates if c in canonical_of), None)
        if pname is not None:
            if tuple(e.shape) != shapes[pname]:
                mismatched.append(f"{e.key} {list(e.shape)} vs {pname} {list(shapes[pname])}")
                continue
            canon = canonical_of[pname]
            if canon in key_of:  # a tied tensor stored under two of its names: both are copies of one parameter
                key_of[canon] += ";" + e.key
                copies += e.numel
                continue
            key_of[canon] = e.key
            continue
        owner = next((o for o in (_owner(modules, c) for c in candidates) if o is not None), None)
        is_buffer = owner is not None and (
            any(pat.search(e.key) for pat in ignore) or any(c in buffer_names for c in candidates) or e.numel == 1
        )
        if is_buffer:
            buffers.append((e, owner))
        elif base_only and mapped.split(".", 1)[0] not in modules and not e.key.startswith(f"{prefix}."):
            unused.append(e)
        else:
            unexpected.append(e.key)
    missing = [canon for canon in aliases if canon not in key_of]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:5])}{' …' if len(mismatched) > 5 else ''}")
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}")
    if problems:
        raise PipelineError(f"model '{name}': checkpoint does not match the architecture: {' | '.join(problems)}")
    return Reconciled(
        key_of=key_of,
        buffers=buffers,
        checkpoint_tensors=sum(e.numel for e in entries),
        tied_copies=copies,
        unused=unused,
    )
