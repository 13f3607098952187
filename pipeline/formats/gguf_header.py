"""A bounded reader of GGUF headers: metadata and tensor table, each file read once per process.

The layout (gguf-py's gguf_reader.py and constants.py; llama.cpp's gguf.c):

    "GGUF", uint32 version (2 or 3), uint64 tensor count, uint64 metadata count,
    metadata pairs: string key, uint32 value type, value,
    tensor infos: string name, uint32 n_dims, uint64 dims[n_dims] (fastest first), uint32 ggml type, uint64 offset,
    padding to general.alignment (default 32), then the data region; each offset counts from its start.

A string is a uint64 byte length and its bytes; an array a uint32 item type, a uint64 item count, the items.

Why not gguf.GGUFReader: it turns every element of every array into numpy objects (a 262,144-token
vocabulary with its scores, token types and merges takes minutes) and trusts every length and count it
reads (a crafted array count grows memory until the process is killed). Here the file is memory-mapped
and read with struct.unpack_from; every length is checked against the bytes left before it is used,
counts have caps, and large values (the tokenizer's token list, scores, merges, chat template) are
skipped by seeking: only their type and item count are kept, which is all the count needs
(transformers takes vocab_size from len(tokenizer.ggml.tokens) when the metadata has none).
Small values (scalars, short strings, per-layer lists) are decoded, within a total budget.

The tensor table is held to the format's rules: known ggml types, 1 to 4 dimensions whose product fits
ggml's int64, whole blocks for block-quantized types, offsets aligned to general.alignment, byte ranges of
the size type and shape give, inside the data region, and no two overlapping: no tensor can point at
another's bytes (an "untied" head that is the embedding's bytes would fake r = 1 evidence).

Errors in the metadata say "no architecture transformers can read (...)": the architecture is metadata.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 used 32-bit lengths; neither gguf-py nor llama.cpp reads it any more
DEFAULT_ALIGNMENT = 32  # gguf.GGUF_DEFAULT_ALIGNMENT

# Caps: far above any published model, far below what a crafted count would make us allocate.
MAX_TENSORS = 65_536  # DeepSeek-V3 and Llama 3.1 405B have about 1,100 tensors
MAX_KV = 65_536  # real files hold 20 to 60 metadata pairs (a token list is one pair)
MAX_KEY = 65_535  # bytes; the GGUF spec's limit for a key
MAX_TENSOR_NAME = 256  # bytes; the spec says 64, llama.cpp 63: some slack, still bounded
MAX_DIMS = 4  # GGML_MAX_DIMS: ggml has no tensor of more dimensions
MAX_INT64 = (1 << 63) - 1  # ggml counts elements in int64
# What is decoded (everything else is skipped by seeking, its type and length kept):
DECODE_STRING = 65_536  # bytes of one string (names, licences; not a chat template of hundreds of kB)
DECODE_ARRAY = 4_096  # items of one array (per-layer lists; not a vocabulary)
DECODE_BUDGET = 16 << 20  # bytes of decoded values in all, so 65,536 small arrays cannot add up to gigabytes

# GGUF value types (gguf.GGUFValueType): struct format and size of the scalars.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALARS = {
    UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f",
    BOOL: "?", UINT64: "Q", INT64: "q", FLOAT64: "d",
}  # fmt: skip
TYPE_NAMES = {
    UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32", INT32: "int32",
    FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array", UINT64: "uint64", INT64: "int64",
    FLOAT64: "float64",
}  # fmt: skip


class Skipped:
    """A value not decoded (too long to be a config value): its length is known, its content is not."""

    def __repr__(self) -> str:
        return "<skipped>"


SKIPPED = Skipped()


@dataclass(frozen=True)
class Field:
    """One metadata pair's value: its type, item type and count (arrays), and the value if decoded.

    value: int, float or bool for scalars; bytes for a string (decoded as UTF-8 where it is used, so a
    broken string nobody reads breaks nothing); a tuple of those for an array; SKIPPED when too long.
    """

    type: int
    value: Any
    item_type: int | None = None
    count: int = 1  # items of an array; 1 otherwise

    @property
    def decoded(self) -> bool:
        return self.value is not SKIPPED


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml's order: the fastest-varying dimension first
    ggml_type: int
    type_name: str  # gguf.GGMLQuantizationType name: F32, Q8_0, ...
    begin: int  # byte offset of its data from the start of the file
    end: int


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict[str, Field]  # in file order
    tensors: list[TensorInfo]  # in file order
    alignment: int
    data_start: int
    size: int


def _quant_sizes() -> dict[int, tuple[str, int, int]]:
    """ggml type -> (name, block size, bytes per block), from the gguf package's own tables."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (t.name, block, size) for t, (block, size) in GGML_QUANT_SIZES.items()}


class _Parser:
    def __init__(self, path: Path, buf: mmap.mmap | bytes, size: int):
        self.path, self.buf, self.size = path, buf, size
        self.pos = 0
        self.budget = DECODE_BUDGET
        self.where = "the header"  # what is being read, for errors
        self.in_tensors = False  # past the metadata: errors are about the tensor table, not the architecture

    # --- errors --------------------------------------------------------------------------------

    def error(self, what: str) -> PipelineError:
        if self.in_tensors:
            return PipelineError(f"{self.path}: {what}")
        return PipelineError(f"{self.path}: no architecture transformers can read ({what})")

    def need(self, n: int) -> None:
        """n more bytes must be in the file at pos (else it is truncated, or a length in it is wrong)."""
        if n > self.size - self.pos:
            raise self.error(
                f"truncated: {self.where} needs {n:,} bytes at byte {self.pos:,}, past the end of the file "
                f"({self.size:,} bytes)"
            )

    # --- primitives ----------------------------------------------------------------------------

    def scalar(self, vtype: int) -> Any:
        fmt = "<" + SCALARS[vtype]
        n = struct.calcsize(fmt)
        self.need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self) -> int:
        return self.scalar(UINT32)

    def u64(self) -> int:
        return self.scalar(UINT64)

    def string_bytes(self, limit: int | None) -> bytes | Skipped:
        """A string's bytes if it is at most limit long (None: any length), else SKIPPED; always passed over."""
        n = self.u64()
        self.need(n)
        start = self.pos
        self.pos += n
        if limit is not None and n > limit:
            return SKIPPED
        return bytes(self.buf[start : start + n])

    def text(self, limit: int, what: str) -> str:
        """A string that must be decoded (a key, a tensor name): at most limit bytes of UTF-8."""
        n = self.u64()
        if n > limit:
            raise self.error(f"{what} is {n:,} bytes long, more than the {limit:,} a GGUF name may have")
        self.pos -= 8
        raw = self.string_bytes(None)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} {raw[:60]!r} is not UTF-8") from None

    # --- metadata ------------------------------------------------------------------------------

    def value(self, vtype: int, key: str) -> Field:
        if vtype in SCALARS:
            return Field(vtype, self.scalar(vtype))
        if vtype == STRING:
            raw = self.string_bytes(min(DECODE_STRING, self.budget))
            if raw is not SKIPPED:
                self.budget -= len(raw)
            return Field(STRING, raw)
        if vtype != ARRAY:
            raise self.error(f"metadata {key!r}: unknown value type {vtype}")
        item = self.u32()
        count = self.u64()
        if item == ARRAY:
            raise self.error(f"metadata {key!r}: an array of arrays (GGUF arrays hold numbers, bools or strings)")
        if item != STRING and item not in SCALARS:
            raise self.error(f"metadata {key!r}: an array of unknown value type {item}")
        # every item takes at least its own size (a string at least its 8-byte length): a count the rest of
        # the file cannot hold is refused before any item is read
        least = 8 if item == STRING else struct.calcsize(SCALARS[item])
        left = self.size - self.pos
        if count > left // least:
            raise self.error(
                f"metadata {key!r}: an array of {count:,} {TYPE_NAMES[item]} items cannot fit in the "
                f"{left:,} bytes left in the file"
            )
        if item == STRING:
            return Field(ARRAY, self.string_array(count), STRING, count)
        n = count * least
        if count > DECODE_ARRAY or n > self.budget:
            self.pos += n  # a fixed-size array: skipped in one step
            return Field(ARRAY, SKIPPED, item, count)
        items = struct.unpack_from(f"<{count}{SCALARS[item]}", self.buf, self.pos)
        self.pos += n
        self.budget -= n
        return Field(ARRAY, items, item, count)

    def string_array(self, count: int) -> tuple[bytes, ...] | Skipped:
        """count strings: decoded when few and short, else only walked (each length must be read to skip it)."""
        keep = count <= DECODE_ARRAY
        items: list[bytes] = []
        buf, size, pos = self.buf, self.size, self.pos
        unpack = struct.Struct("<Q").unpack_from
        for i in range(count):  # the hot loop of a 262,144-token vocabulary: plain struct reads, no objects
            if size - pos < 8:
                self.pos = pos
                self.where = f"item {i:,} of {count:,} of a string array"
                self.need(8)
            (n,) = unpack(buf, pos)
            pos += 8
            if n > size - pos:
                self.pos = pos
                self.where = f"string {i:,} of {count:,} ({n:,} bytes)"
                self.need(n)
            if keep:
                if n > DECODE_STRING or n > self.budget:
                    keep, items = False, []
                else:
                    items.append(bytes(buf[pos : pos + n]))
                    self.budget -= n
            pos += n
        self.pos = pos
        return tuple(items) if keep else SKIPPED

    # --- the whole header ----------------------------------------------------------------------

    def header(self) -> Header:
        if self.size < 24:
            raise self.error(f"not a GGUF file: {self.size} bytes, shorter than a GGUF header")
        magic = bytes(self.buf[:4])
        if magic != MAGIC:
            raise self.error(f"not a GGUF file: it starts with {magic!r}, not {MAGIC!r}")
        self.pos = 4
        version = self.u32()
        if version & 0xFFFF == 0 and version:  # a big-endian file read as little-endian
            raise self.error("a big-endian GGUF file; its tensor data cannot be read on this machine")
        if version not in VERSIONS:
            raise self.error(f"not a GGUF file of version 2 or 3: it says version {version:,}")
        n_tensors, n_kv = self.u64(), self.u64()
        # a metadata pair takes at least 13 bytes (key length, a 1-byte key, type, a 1-byte value)
        if n_kv > MAX_KV or n_kv > (self.size - self.pos) // 13:
            cap = f"more than the {MAX_KV:,} read" if n_kv > MAX_KV else f"more than its {self.size:,} bytes hold"
            raise self.error(f"its header lists {n_kv:,} metadata pairs, {cap}")
        fields: dict[str, Field] = {}
        for i in range(n_kv):
            self.where = f"metadata pair {i + 1:,} of {n_kv:,}"
            key = self.text(MAX_KEY, "a metadata key")
            self.where = f"metadata {key!r}"
            if key in fields:
                raise self.error(f"metadata {key!r} appears twice")
            fields[key] = self.value(self.u32(), key)
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in fields:
            f = fields["general.alignment"]
            if f.type != UINT32 or f.value == 0 or f.value & (f.value - 1):
                raise self.error(f"general.alignment must be a power of two stored as uint32, not {f.value!r}")
            alignment = f.value
        tensors = self.tensor_table(n_tensors, alignment)
        return Header(version, fields, tensors, alignment, self.data_start, self.size)

    def tensor_table(self, count: int, alignment: int) -> list[TensorInfo]:
        self.in_tensors = True
        # a tensor info takes at least 33 bytes (name length, 1-byte name, n_dims, one dim, type, offset)
        if count > MAX_TENSORS or count > (self.size - self.pos) // 33:
            cap = f"more than its {self.size:,} bytes hold"
            cap = f"more than the {MAX_TENSORS:,} read" if count > MAX_TENSORS else cap
            raise self.error(f"its header lists {count:,} tensors, {cap}")
        sizes = _quant_sizes()
        raw: list[tuple[str, tuple[int, ...], int, int, int]] = []  # name, dims, type, offset, bytes
        seen: set[str] = set()
        for i in range(count):
            self.where = f"tensor info {i + 1:,} of {count:,}"
            name = self.text(MAX_TENSOR_NAME, f"the name of tensor {i + 1:,} of {count:,}")
            what = f"tensor {name!r}"
            self.where = what
            if name in seen:
                raise self.error(f"{what} is listed twice")
            seen.add(name)
            n_dims = self.u32()
            if not 1 <= n_dims <= MAX_DIMS:
                raise self.error(f"{what} has {n_dims:,} dimensions; a ggml tensor has 1 to {MAX_DIMS}")
            dims = tuple(self.u64() for _ in range(n_dims))
            numel = 1
            for d in dims:
                numel *= d
            if numel > MAX_INT64 or max(dims) > MAX_INT64:  # ggml's int64 sizes (a 0 elsewhere does not excuse it)
                raise self.error(f"{what}: dimensions {list(dims)} hold {numel:,} values, more than ggml counts")
            ggml_type = self.u32()
            if ggml_type not in sizes:
                raise self.error(f"{what}: unknown ggml type {ggml_type}")
            type_name, block, type_size = sizes[ggml_type]
            if dims[0] % block:
                raise self.error(f"{what}: {type_name} packs blocks of {block} values, but its rows hold {dims[0]:,}")
            offset = self.u64()
            if offset % alignment:
                raise self.error(f"{what}: its offset {offset:,} is not a multiple of the alignment {alignment}")
            raw.append((name, dims, ggml_type, offset, numel // block * type_size))
        self.data_start = -(-self.pos // alignment) * alignment  # the tensor infos, padded to the alignment
        out = [
            TensorInfo(name, dims, t, sizes[t][0], self.data_start + off, self.data_start + off + n)
            for name, dims, t, off, n in raw
        ]
        # inside the data region, and no two sharing a byte: in offset order, each starts at or after the last end
        last: TensorInfo | None = None
        for t in sorted(out, key=lambda t: (t.begin, t.end)):
            if t.end > self.size:
                raise self.error(
                    f"tensor {t.name!r}: its {t.end - t.begin:,} bytes end at byte {t.end:,}, past the end of "
                    f"the file ({self.size:,} bytes)"
                )
            if last is not None and t.begin < last.end and t.end > t.begin:
                start, end = t.begin - self.data_start, t.end - self.data_start
                raise self.error(
                    f"tensor {t.name!r} (data bytes {start:,} to {end:,}) overlaps tensor {last.name!r} "
                    f"(to {last.end - self.data_start:,}); tensors may not share bytes"
                )
            if t.end > t.begin:
                last = t
        return out


_CACHE: dict[tuple[int, int, int, int], Header] = {}
_CACHE_SIZE = 64
parses = 0  # headers actually parsed in this process (the tests check each file is parsed once)


def read(path: Path) -> Header:
    """The header of one GGUF file, parsed once per process.

    Cached by the file's identity (device, inode, size, modification time) rather than its path: the
    download stage and `hmp count` hard-link a model's files into another folder, and the same inode
    there is the same header. Errors are not cached, and name the path they were reached by.
    """
    global parses
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    try:
        with open(path, "rb") as fh:
            if st.st_size == 0:
                header = _Parser(path, b"", 0).header()
            else:
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    header = _Parser(path, mm, len(mm)).header()
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    parses += 1
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = header
    return header


def parse_prefix(prefix: bytes, size: int, where: str) -> Header | None:
    """The header of a file of size bytes of which only the first len(prefix) are known (a range read);
    None when the header may run past them (read more, and try again).

    The bytes after the prefix read as zeros (a sparse temporary file, so a file of any size costs
    nothing). The parser reads the header in order, up to the end of the tensor table, so a header whose
    data starts within the prefix was read from known bytes only; any other outcome, an error included,
    is final only once the prefix is the whole file.
    """
    if size < 24 or len(prefix) >= size:
        return _Parser(Path(where), prefix[:size], size).header()
    with tempfile.TemporaryFile() as fh:
        fh.write(prefix)
        fh.truncate(size)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            try:
                header = _Parser(Path(where), mm, size).header()
            except PipelineError:
                return None
    return header if header.data_start <= len(prefix) else None


def forget() -> None:
    """Drop every cached header: call it before deleting a file read here (its inode may be reused)."""
    _CACHE.clear()
