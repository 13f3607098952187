"""Checkpoints on disk: safetensors headers (no tensor data), shards, and reconciliation with the architecture.

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the raw data. Counting needs only the header, so nothing here
reads tensor bytes. Headers are held to the format's own rules (those of the safetensors reference
reader): a JSON object with unique names, known dtypes, shapes of whole numbers, and byte ranges
that start at 0, follow each other without gap or overlap, match the dtype and shape, and end
exactly at the end of the file. A file that breaks one is refused by name, so no tensor can point
at another's bytes and nothing is ever read outside the data region.

Every path that comes from a file (an index's shard names) must be a plain file name inside the
model folder, and only regular files are read (a symlink is followed only to a regular file, as
the Hugging Face cache needs): no devices, FIFOs or folders.
"""

from __future__ import annotations

import json
import re
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pipeline.cli import PipelineError, first_line, read_json

if TYPE_CHECKING:
    import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"
# The headers fetch: range stores in a model folder it writes (pipeline/remote.py). It is this project's own
# bookkeeping: it is read only in the folders the download stage writes, and a user's folder carrying one is
# refused (its names would be taken as the weight files to link).
REMOTE_HEADERS = "remote_headers.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
# Header sizes beyond this are not a safetensors file (the format caps headers at 100 MB).
MAX_HEADER = 100_000_000
# Bits per stored value of every dtype the safetensors format defines.
DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U8": 8, "BOOL": 8,
    "U16": 16, "U32": 32, "U64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "C64": 64, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
}  # fmt: skip
DTYPE_BYTES = {dtype: bits // 8 for dtype, bits in DTYPE_BITS.items() if bits % 8 == 0}


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


# --- files and names ----------------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file(path: Path) -> Path:
    """path itself, if it is (or links to) a regular file; otherwise a PipelineError saying what it is."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except FileNotFoundError:
        if path.is_symlink():
            raise PipelineError(f"{path}: a symlink to nothing ({path.readlink()})") from None
        raise PipelineError(f"{path} is missing") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        target = f" (a symlink to {path.resolve()})" if path.is_symlink() else ""
        raise PipelineError(f"{path}: {kind}{target}, not a regular file; only regular files are read")
    return path


def plain_name(name: Any, source: Path) -> str:
    """A file name read from source (an index's shard name): it must name a file inside source's folder."""
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{source}: a file name must be a non-empty string, got {name!r}")
    pure = PurePosixPath(name)
    if pure.name != name or name in (".", "..") or "\\" in name or "\x00" in name:
        raise PipelineError(
            f"{source}: file name {name!r} points outside {source.parent}; only plain file names are allowed"
        )
    return name


# --- headers ------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; a name given twice shows as a shorter dict, and only then is it looked for
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


# A cap on the tensors of one file, far above any real one: a single-file model holds at most a few thousand,
# and DeepSeek-V3's whole checkpoint (671B parameters, fp8 with a scale beside every weight) holds about
# 91,000 over 163 shards. Without it a 100 MB header of millions of empty tensors, each keeping every rule,
# costs minutes and gigabytes before anything can refuse it (tests/test_fuzz_header.py).
MAX_TENSORS = 100_000
# In a JSON container of k values the first follows the '{' or '[' that opens it and the others a ',', so
# those bytes, counted in C before anything is decoded, bound the values json would build (bytes inside
# strings only add to the count). A tensor entry holds 6 + rank values ({dtype, shape: [...], data_offsets:
# [b, e]}); 16 per tensor leaves room for high ranks and a large __metadata__, and bounds what a header within
# MAX_HEADER can make json build to ~1.6 million small objects (a wide header refused within a second).
MAX_SEPARATORS = 16 * MAX_TENSORS
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


class _NotJson(Exception):
    pass


def _header_object(text: str, file: str) -> dict[str, Any]:
    """The header's outer object, read one member at a time so a header of too many tensors stops at the cap.

    Each member's value goes through json's own (C) scanner, with the duplicate check on every object;
    the loop around it only walks the outer object's '"name": value,' sequence, as json.loads would.
    """
    from json.decoder import scanstring

    space, scan = _SPACE.match, _DECODER.scan_once
    out: dict[str, Any] = {}
    i = space(text, 1).end()  # text[0] is '{'
    if text.startswith("}", i):
        return _end(out, text, i)
    while True:
        if not text.startswith('"', i):
            raise _NotJson
        key, i = scanstring(text, i + 1)
        i = space(text, i).end()
        if not text.startswith(":", i):
            raise _NotJson
        try:
            value, i = scan(text, space(text, i + 1).end())
        except StopIteration:  # the scanner's way of saying no value starts there
            raise _NotJson from None
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
        if len(out) - ("__metadata__" in out) > MAX_TENSORS:
            raise PipelineError(f"{file}: header lists more than {MAX_TENSORS:,} tensors, more than any real file")
        i = space(text, i).end()
        if text.startswith(",", i):
            i = space(text, i + 1).end()
        elif text.startswith("}", i):
            return _end(out, text, i)
        else:
            raise _NotJson


def _end(out: dict[str, Any], text: str, i: int) -> dict[str, Any]:
    if _SPACE.match(text, i + 1).end() != len(text):  # only padding may follow the object
        raise _NotJson
    return out


def parse_header(blob: bytes, file: str) -> tuple[int, dict[str, Any]]:
    """(data start offset, header dict) from the first bytes of a safetensors file."""
    if len(blob) < 8:
        raise PipelineError(f"{file}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or n < 2:
        raise PipelineError(f"{file}: header length {n} is not that of a safetensors file")
    if len(blob) < 8 + n:
        raise PipelineError(f"{file}: truncated header ({len(blob) - 8} of {n} bytes)")
    raw = blob[8 : 8 + n]
    if not raw.startswith(b"{"):
        raise PipelineError(f"{file}: header does not start with '{{'; not a safetensors file")
    separators = raw.count(b",") + raw.count(b"{") + raw.count(b"[")  # C speed: before any object is built
    if separators > MAX_SEPARATORS:
        raise PipelineError(
            f"{file}: header has {separators:,} JSON separators (',', '{{', '['), more than the {MAX_SEPARATORS:,} "
            f"of a file of {MAX_TENSORS:,} tensors; not a safetensors file"
        )
    try:
        header = _header_object(raw.decode("utf-8"), file)
    except _DuplicateKey as exc:
        raise PipelineError(f"{file}: header names tensor {exc.args[0]!r} twice") from None
    except RecursionError:
        raise PipelineError(f"{file}: header is nested too deeply; not a safetensors file") from None
    except (_NotJson, json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"{file}: header is not JSON; not a safetensors file") from None
    return 8 + n, header


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(key: str, info: Any, data_start: int, file: str, where: str) -> Entry:
    """One header entry, checked on its own: dtype known, shape and offsets whole numbers, bytes = shape × dtype."""
    if not isinstance(info, dict):
        raise PipelineError(f"{where}: tensor {key!r}: entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise PipelineError(f"{where}: tensor {key!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_whole(s) for s in shape):
        raise PipelineError(f"{where}: tensor {key!r}: shape {shape!r} is not a list of whole numbers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
        raise PipelineError(f"{where}: tensor {key!r}: data_offsets {offsets!r} are not two whole numbers")
    begin, end = offsets
    if begin > end:
        raise PipelineError(f"{where}: tensor {key!r}: data_offsets [{begin}, {end}] run backwards")
    bits = prod(shape) * DTYPE_BITS[dtype]
    if bits != (end - begin) * 8:
        raise PipelineError(
            f"{where}: tensor {key!r} has {end - begin} bytes for shape {shape} of {dtype} ({bits / 8:g} expected)"
        )
    return Entry(key, dtype, tuple(shape), file, data_start + begin, data_start + end)


def entries_from_header(
    header: dict[str, Any], data_start: int, file: str, size: int, where: str | None = None
) -> list[Entry]:
    """The tensors of a parsed header, checked against the format's rules for a file of size bytes.

    file is the name the entries carry (relative to the model folder); where names it in errors.
    """
    where = where or file
    if len(header) - ("__metadata__" in header) > MAX_TENSORS:  # a header parsed elsewhere (remote_headers.json)
        raise PipelineError(f"{where}: header lists more than {MAX_TENSORS:,} tensors, more than any real file")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise PipelineError(f"{where}: __metadata__ must map strings to strings")
    out = [_entry(key, info, data_start, file, where) for key, info in header.items() if key != "__metadata__"]
    # The data region [data_start, size) is tiled exactly: in offset order, each tensor starts where the last ended.
    pos = data_start
    for e in sorted(out, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            what = "overlaps the tensor before it" if e.begin < pos else f"leaves a gap of {e.begin - pos} bytes"
            raise PipelineError(f"{where}: tensor {e.key!r} starts at byte {e.begin - data_start}: it {what}")
        pos = e.end
    if pos != size:
        how = "past the end of the file" if pos > size else f"{size - pos} bytes before the end of the file"
        raise PipelineError(f"{where}: the tensors' data ends at byte {pos}, {how} ({size} bytes)")
    return out


def read_entries(path: Path) -> list[Entry]:
    """The tensors of one local safetensors file, from its header alone.

    Why not a library reader: safetensors' safe_open validates the header but gives no tensor's byte
    offsets (the value pass maps each tensor's bytes itself, and range reads fetch them) and words its
    refusals as Rust errors naming no rule; huggingface_hub's parse_local_safetensors_file_metadata
    gives offsets but validates nothing (see remote.read_header). So the header is parsed here, under
    the reference reader's rules, and the tests check those refusals (tests/test_fuzz_header.py).
    """
    regular_file(path)
    try:
        with open(path, "rb") as fh:
            start = fh.read(8)
            if len(start) < 8:
                raise PipelineError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", start)
            if n > MAX_HEADER:
                raise PipelineError(f"{path}: header length {n} is not that of a safetensors file")
            blob = start + fh.read(n)
            size = fh.seek(0, 2)
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    data_start, header = parse_header(blob, str(path))
    return entries_from_header(header, data_start, path.name, size, str(path))


def _present(path: Path) -> bool:
    """Something is there under that name (even a dangling symlink, which regular_file() then refuses)."""
    return path.exists() or path.is_symlink()


def weight_files(folder: Path, allow_pickle: bool = False) -> tuple[list[str], str]:
    """The weight files of a model folder and their format ('safetensors' or 'pickle'); [] if none.

    A sharded checkpoint is read through its index, and every shard it lists must exist. Every file
    named must be a regular file (or a symlink to one) inside folder. A folder that holds this project's
    own range-read bookkeeping (REMOTE_HEADERS) is not a model folder a user can give.
    """
    if _present(folder / REMOTE_HEADERS):
        raise PipelineError(
            f"{folder / REMOTE_HEADERS}: this file is the pipeline's own record of range-read headers, never read "
            "from a model folder; remove it (a model folder holds config.json and its weight files)"
        )
    index = folder / SAFETENSORS_INDEX
    if _present(index):
        return _shards(regular_file(index)), "safetensors"
    if _present(folder / SAFETENSORS_SINGLE):
        return [regular_file(folder / SAFETENSORS_SINGLE).name], "safetensors"
    singles = sorted(p.name for p in folder.glob("*.safetensors"))
    if singles:
        return [regular_file(folder / name).name for name in singles], "safetensors"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if _present(folder / PICKLE_INDEX):
        pickles = _shards(regular_file(folder / PICKLE_INDEX))
    if pickles:
        if not allow_pickle:
            raise PipelineError(
                f"{folder / pickles[0]}: pickle checkpoint refused (pickle can run code); "
                "set allow_pickle: true in the model config to load it with torch.load(weights_only=True)"
            )
        return [regular_file(folder / name).name for name in pickles], "pickle"
    return [], ""


def shard_names(index: Path) -> list[str]:
    """The shard file names an index lists, each a plain file name (nothing outside the index's folder)."""
    data = read_json(index, str(index))
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PipelineError(f"{index}: not a checkpoint index (no weight_map)")
    return sorted({plain_name(shard, index) for shard in weight_map.values()})


def _shards(index: Path) -> list[str]:
    """The shard files an index lists: plain names of regular files beside it."""
    shards = shard_names(index)
    for shard in shards:
        if not _present(index.parent / shard):
            raise PipelineError(f"{index}: lists shard {shard}, which is missing from {index.parent}")
        regular_file(index.parent / shard)
    return shards


def load_entries(folder: Path) -> tuple[list[Entry], str]:
    """The tensors of a downloaded model folder's checkpoint (one the download stage wrote), headers only, and
    its format ('' when it has none; 'remote' when fetch: range stored only the headers)."""
    if _present(folder / REMOTE_HEADERS):  # a folder the download stage filled by range reads
        from pipeline import remote

        return remote.remote_entries(folder), "remote"
    files, fmt = weight_files(folder)
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
                raise PipelineError(f"{folder}: tensor {e.key!r} is stored in both {seen[e.key]} and {name}")
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

    import copy

    import torch
    from transformers.core_model_loading import dot_natural_key

    mapper, converters = key_mapper(model)
    key_of: dict[str, str] = {}
    unused: list[Entry] = []
    extra: list[Entry] = []
    copies = 0
    buffers: list[tuple[Entry, str]] = []
    unexpected: list[Entry] = []
    mismatched: list[str] = []
    twice: list[str] = []  # a parameter stored twice under one of its names, or an untied one under two
    stored_as: dict[str, str] = {}  # each parameter name the checkpoint stores -> the key that holds it
    merging: dict[str, Any] = {}  # parameter -> the converter collecting its per-expert tensors
    sources: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: dot_natural_key(e.key)):
        mapped, pattern = mapper(e.key)
        if pattern is not None and mapped in canonical_of:
            conv = merging.setdefault(mapped, copy.deepcopy(converters[pattern]))
            sources.setdefault(canonical_of[mapped], []).append(e)
            conv.add_tensor(mapped, e.key, pattern, torch.empty(e.shape, dtype=torch.float32, device="meta"))
            continue
        candidates = [mapped, e.key] + ([f"{prefix}.{mapped}"] if prefix else [])
        if prefix and mapped.startswith(prefix + "."):
            candidates.append(mapped[len(prefix) + 1 :])
        pname = next((c for c in candidates if c in canonical_of), None)
        if pname is not None:
            if tuple(e.shape) != shapes[pname]:
                mismatched.append(f"{e.key} {list(e.shape)} vs {pname} {list(shapes[pname])}")
                continue
            canon = canonical_of[pname]
            if pname in stored_as or (canon in key_of and len(aliases[canon]) == 1):
                # one name, two tensors (h.0.attn.c_attn.weight and transformer.h.0.attn.c_attn.weight): which
                # one the model would load is the loader's accident, and counting one of them hides the other
                first = stored_as.get(pname) or key_of[canon]
                tie = "" if len(aliases[canon]) > 1 else ", a parameter with no other name"
                twice.append(f"{first} and {e.key} both hold {pname}{tie}")
                continue
            stored_as[pname] = e.key
            if canon in key_of:  # a tied tensor stored under another of its names: both are copies of one parameter
                key_of[canon] += ";" + e.key
                copies += e.numel
                continue
            key_of[canon] = e.key
            sources[canon] = [e]
            continue
        owner = next((o for o in (_owner(modules, c) for c in candidates) if o is not None), None)
        is_buffer = owner is not None and (
            any(pat.search(e.key) for pat in ignore) or any(c in buffer_names for c in candidates) or e.numel == 1
        )
        if is_buffer:
            buffers.append((e, owner))
        elif base_only and mapped.split(".", 1)[0] not in modules and not e.key.startswith(f"{prefix}."):
            unused.append(e)
        elif owner is None and _extra_layer(model, e.key):
            extra.append(e)
        else:
            unexpected.append(e)
    for target, conv in merging.items():
        merged = conv.layer_targets[target]
        gaps = _expert_gaps(merged)
        if gaps:
            mismatched.append(f"{target}: {gaps}")
            continue
        try:
            shape = _merge(model, target, conv)
        except Exception as exc:  # transformers' own operations refuse tensors that do not fit together
            mismatched.append(f"{len(merged)} tensors merged into {target} do not fit ({first_line(exc)})")
            continue
        if shape != shapes[target]:
            mismatched.append(f"{len(merged)} tensors merge to {list(shape)} vs {target} {list(shapes[target])}")
            continue
        if canonical_of[target] in key_of:  # stored whole and as one tensor per expert
            twice.append(f"{key_of[canonical_of[target]]} and {_compress(merged)} both hold {target}")
            continue
        key_of[canonical_of[target]] = _compress(merged)
    missing = [canon for canon in aliases if canon not in key_of]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:5])}{' …' if len(mismatched) > 5 else ''}")
    if twice:
        problems.append(f"stored twice: {'; '.join(twice[:3])}{' …' if len(twice) > 3 else ''}")
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        # largest first (stable: file order among equals): the tensors that hold a layout's values lead the
        # truncated list, ahead of the scales and indices beside them
        keys = [e.key for e in sorted(unexpected, key=lambda e: -e.numel)]
        problems.append(f"unexpected keys: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}")
    if problems:
        raise PipelineError(f"model '{name}': checkpoint does not match the architecture: {' | '.join(problems)}")
    return Reconciled(
        key_of=key_of,
        buffers=buffers,
        checkpoint_tensors=sum(e.numel for e in entries),
        tied_copies=copies,
        unused=unused,
        extra=extra,
        sources=sources,
    )
