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

import hashlib
import json
import re
import struct
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError, read_json
from pipeline.formats.base import Format, RangeReader
from pipeline.formats.entries import DTYPE_BITS, Entry, plain_name, regular_file

if TYPE_CHECKING:
    pass

SAFETENSORS_INDEX = "model.safetensors.index.json"
# The headers fetch: range stores in a model folder it writes (pipeline/formats/remote.py). It is this project's own
# bookkeeping: it is read only in the folders the download stage writes, and a user's folder carrying one is
# refused (its names would be taken as the weight files to link).
REMOTE_HEADERS = "remote_headers.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
# Header sizes beyond this are not a safetensors file (the format caps headers at 100 MB).
MAX_HEADER = 100_000_000


# --- files and names ----------------------------------------------------------------------------


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
# costs minutes and gigabytes before anything can refuse it (tests/formats/test_safetensors_file.py).
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
    the reference reader's rules, and the tests check those refusals (tests/formats/test_safetensors_file.py).
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
    key = (path.name, size, hashlib.blake2b(blob, digest_size=16).digest())
    if key in _PARSED:
        return list(_PARSED[key])
    data_start, header = parse_header(blob, str(path))
    entries = entries_from_header(header, data_start, path.name, size, str(path))
    global parses
    parses += 1
    if len(entries) <= _PARSED_MAX_TENSORS:  # a header of a million tensors is not kept
        if len(_PARSED) >= _PARSED_SIZE:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = tuple(entries)
    return entries


# Headers parsed in this process, by the file's name, size and header bytes: the same bytes parse to the same
# entries, so the download's checks and the count (hmp count links the same files) parse a header once. Keyed
# on the bytes, not the inode and time: a file rewritten in place in the same clock tick is never mistaken.
# Errors are not kept.
_PARSED: dict[tuple[str, int, bytes], tuple[Entry, ...]] = {}
_PARSED_SIZE = 256
_PARSED_MAX_TENSORS = 100_000
parses = 0  # headers actually parsed in this process (a test checks that one hmp count parses each once)


def forget() -> None:
    """Drop every parsed header kept (a test that counts parses starts from none)."""
    _PARSED.clear()


def present(path: Path) -> bool:
    """Something is there under that name (even a dangling symlink, which regular_file() then refuses)."""
    return path.exists() or path.is_symlink()


def weight_files(folder: Path, allow_pickle: bool = False) -> tuple[list[str], str]:
    """The weight files of a model folder and their format ('safetensors' or 'pickle'); [] if none.

    A sharded checkpoint is read through its index, and every shard it lists must exist. Every file
    named must be a regular file (or a symlink to one) inside folder. A folder that holds this project's
    own range-read bookkeeping (REMOTE_HEADERS) is not a model folder a user can give.
    """
    refuse_range_record(folder)
    if files := safetensors_files(folder):
        return files, "safetensors"
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if present(folder / PICKLE_INDEX):
        pickles = _shards(regular_file(folder / PICKLE_INDEX))
    if pickles:
        if not allow_pickle:
            raise PipelineError(
                f"{folder / pickles[0]}: pickle checkpoint refused (pickle can run code)", advice="allow_pickle"
            )
        return [regular_file(folder / name).name for name in pickles], "pickle"
    return [], ""


def refuse_range_record(folder: Path) -> None:
    """A model folder a user gives never holds the pipeline's own record of range-read headers."""
    if present(folder / REMOTE_HEADERS):
        raise PipelineError(
            f"{folder / REMOTE_HEADERS}: this file is the pipeline's own record of range-read headers, never read "
            "from a model folder; remove it (a model folder holds config.json and its weight files)"
        )


def safetensors_files(folder: Path) -> list[str]:
    """The safetensors files of a folder: the shards its index lists, else model.safetensors, else every
    *.safetensors file; [] if none."""
    index = folder / SAFETENSORS_INDEX
    if present(index):
        return _shards(regular_file(index))
    if present(folder / SAFETENSORS_SINGLE):
        return [regular_file(folder / SAFETENSORS_SINGLE).name]
    return [regular_file(folder / name).name for name in sorted(p.name for p in folder.glob("*.safetensors"))]


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
        if not present(index.parent / shard):
            raise PipelineError(f"{index}: lists shard {shard}, which is missing from {index.parent}")
        regular_file(index.parent / shard)
    return shards


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


# --- the format's interface (pipeline/formats/base.py) ------------------------------------------------------
class Safetensors(Format):
    """safetensors files (plain or quantized: pipeline/formats/quant/ regroups packed weights), beside a
    config.json, sharded through model.safetensors.index.json."""

    name = "safetensors"
    suffixes = (".safetensors",)

    def files(self, names: list[str], folder: Path | None = None) -> list[str]:
        if folder is not None:
            return safetensors_files(folder)
        return [SAFETENSORS_SINGLE] if SAFETENSORS_SINGLE in names else super().files(names)

    def entries(self, folder: Path, files: list[str]) -> list[Entry]:
        return read_checkpoint(folder, files)

    def header_prefix(self, rf: RangeReader, where: str) -> bytes:
        blob = header_bytes(rf, HEADER_GUESS)
        if rf.size is None:
            raise PipelineError(f"{where}: the server did not say how long the file is (Content-Range)")
        data_start, header = parse_header(blob, where)
        entries_from_header(header, data_start, Path(where).name, rf.size, where)
        return blob


HEADER_GUESS = 32 << 10  # the first range read of a safetensors file: the whole header of most (GPT-2's is 14.6 kB)


def header_bytes(rf: RangeReader, guess: int = 0) -> bytes:
    """The 8-byte length and the header of a safetensors file read by ranges: with guess, the first read asks
    for that many bytes (the whole header of most files: one request instead of two), then for the rest."""
    first = rf.read(0, max(8, guess), upto=True)
    if len(first) < 8:
        raise PipelineError(f"{rf.url}: {len(first)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", first[:8])
    if n > MAX_HEADER:
        raise PipelineError(f"{rf.url}: header length {n} is not that of a safetensors file")
    return first[: 8 + n] if len(first) >= 8 + n else first + rf.read(len(first), 8 + n - len(first))


FORMAT = Safetensors()
