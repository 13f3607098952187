"""Reading parameter values from a checkpoint's files: zero-copy memory-mapped views in cache-sized float32 chunks,
half types widened, fp8 scaled and GGUF blocks dequantized, mapped pages released as the pass moves on.
"""

from __future__ import annotations

import functools
import mmap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.formats.entries import Entry

if TYPE_CHECKING:
    import torch

CHUNK_ELEMENTS = 1 << 18  # 256K values: a 1 MB float32 chunk stays in a core's L2 cache


WINDOW_BYTES = 64 << 20  # pages behind this window are released from the mapping


FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def _ggml_type(name: str):
    """The GGUF block-quantized type of that name (Q8_0, Q4_K, ...) that gguf can dequantize, or None.

    Plain floats (F32, F16, BF16, F64) are read as floats; ggml's integer types (I8, I16, I32, I64) hold
    integers, not weights (no scale turns them into values), so they are not read as numbers, as packed
    integer codes of other formats are not.
    """
    try:
        import gguf

        qtype = gguf.GGMLQuantizationType[name]
    except (ImportError, KeyError):
        return None
    return qtype if name not in FLOAT_DTYPES and _dequantizable(qtype) else None


@functools.cache
def _dequantizable(qtype) -> bool:
    """gguf has a dequantizer for this block type: tried on one all-zero block (gguf has no public way to ask)."""
    import gguf
    import numpy as np

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if block == 1:  # one value per element: floats or integers, not a quantization
        return False
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def readable(entry: Entry, scales: dict | None = None) -> bool:
    """Its values can be read: floats of its shape, GGUF blocks (gguf's own dequantizer), or fp8 with its scales.

    Packed integer codes of other formats (GPTQ words, bitsandbytes bytes) are not.
    """
    return entry.dtype in FLOAT_DTYPES or _ggml_type(entry.dtype) is not None or entry.key in (scales or {})


def _torch_dtype(name: str):
    import torch

    return dict(zip(FLOAT_DTYPES, (torch.float32, torch.float16, torch.bfloat16, torch.float64), strict=True))[name]


def float32_chunks(flat: torch.Tensor, chunk_elements: int, work: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """float32 chunks of a 1-D tensor: views when it is float32, else widened into the work buffer."""
    import torch

    total = flat.numel()
    for start in range(0, total, chunk_elements):
        part = flat[start : start + chunk_elements]
        if part.dtype == torch.float32:
            yield part
        else:
            out = work[: part.numel()]
            out.copy_(part)
            yield out


class Reader:
    """Memory-mapped, zero-copy access to the tensors of a safetensors checkpoint."""

    def __init__(
        self, folder: Path, entries: list[Entry], chunk_elements: int = CHUNK_ELEMENTS, scales: dict | None = None
    ):
        import torch

        self.folder = folder
        self.entries = {e.key: e for e in entries}
        self.scales = scales or {}  # fp8 weight key -> (scale entry, block): quant.Regrouped.scales
        self.chunk_elements = chunk_elements
        self._maps: dict[str, mmap.mmap] = {}
        # one chunk's float32 buffers, reused: work for a tensor's chunks, work_y for the second of a pair read
        # together (correlate.py reads two embeddings side by side)
        self.work = torch.empty(chunk_elements, dtype=torch.float32)
        self.work_y = torch.empty(chunk_elements, dtype=torch.float32)

    def _map(self, file: str) -> mmap.mmap:
        if file not in self._maps:
            with open(self.folder / file, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            mm.madvise(mmap.MADV_SEQUENTIAL)
            self._maps[file] = mm
        return self._maps[file]

    def view(self, key: str) -> torch.Tensor:
        """The tensor's values as a flat tensor over the mapped file (no copy)."""
        import torch

        e = self.entries[key]
        dtype = _torch_dtype(e.dtype)
        if e.numel == 0:
            return torch.empty(0, dtype=dtype)
        with warnings.catch_warnings():  # the mapping is read-only; nothing here writes to it
            warnings.simplefilter("ignore", UserWarning)
            return torch.frombuffer(self._map(e.file), dtype=dtype, count=e.numel, offset=e.begin)

    def tensor(self, key: str) -> torch.Tensor:
        """The whole tensor in its logical shape: a copy in its stored dtype, or float32 when it is dequantized."""
        import torch

        e = self.entries[key]
        if _ggml_type(e.dtype) is None and key not in self.scales:
            return self.view(key).clone().reshape(e.shape)
        out = torch.empty(e.numel, dtype=torch.float32)
        done = 0
        for chunk in self.chunks(key):
            out[done : done + chunk.numel()] = chunk
            done += chunk.numel()
        return out.reshape(e.shape)

    def _release(self, key: str, upto: int) -> None:
        """Drop the mapped pages of key's bytes before element upto (they are still in the page cache)."""
        e = self.entries[key]
        itemsize = (e.end - e.begin) // max(e.numel, 1)
        page = mmap.PAGESIZE
        start = e.begin // page * page
        end = (e.begin + upto * itemsize) // page * page
        if end > start:
            self._map(e.file).madvise(mmap.MADV_DONTNEED, start, end - start)

    def _dequantized(self, e: Entry) -> Iterator[torch.Tensor]:
        """float32 chunks of a GGUF-quantized tensor: whole rows at a time through gguf's own dequantizer."""
        import gguf
        import numpy as np
        import torch

        qtype = _ggml_type(e.dtype)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        cols = e.shape[-1] if e.shape else 1
        rows = e.numel // max(cols, 1)
        row_bytes = cols // block * type_size
        step = max(1, self.chunk_elements // max(cols, 1))
        for r0 in range(0, rows, step):
            n = min(step, rows - r0)
            raw = np.frombuffer(self._map(e.file), dtype=np.uint8, count=n * row_bytes, offset=e.begin + r0 * row_bytes)
            yield torch.from_numpy(
                np.ascontiguousarray(
                    gguf.quants.dequantize(raw.reshape(n, row_bytes), qtype), dtype=np.float32
                ).reshape(-1)
            )
            self._release_bytes(e, (r0 + n) * row_bytes)

    def _release_bytes(self, e: Entry, done: int) -> None:
        page = mmap.PAGESIZE
        start, end = e.begin // page * page, (e.begin + done) // page * page
        if end - start >= WINDOW_BYTES:
            self._map(e.file).madvise(mmap.MADV_DONTNEED, start, end - start)

    def _fp8(self, e: Entry) -> Iterator[torch.Tensor]:
        """float32 chunks of an fp8 weight times its scales (torch's float8 types), whole blocks of rows at a time."""
        import torch

        scale_entry, (b0, b1) = self.scales[e.key]
        rows, cols = e.shape
        fp8 = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[e.dtype]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            w = torch.frombuffer(self._map(e.file), dtype=fp8, count=e.numel, offset=e.begin).view(rows, cols)
            s = torch.frombuffer(
                self._map(scale_entry.file),
                dtype=_torch_dtype(scale_entry.dtype),
                count=scale_entry.numel,
                offset=scale_entry.begin,
            ).view(*scale_entry.shape)
        step = max(b0, self.chunk_elements // max(cols, 1) // b0 * b0)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            per_row = s[r0 // b0 : (r1 + b0 - 1) // b0].float().repeat_interleave(b0, 0)[: r1 - r0]
            yield (w[r0:r1].float() * per_row.repeat_interleave(b1, 1)[:, :cols]).reshape(-1)

    def chunks(self, key: str, work=None) -> Iterator[torch.Tensor]:
        """float32 chunks of one tensor, releasing pages behind a moving window."""
        e = self.entries[key]
        if _ggml_type(e.dtype) is not None:
            yield from self._dequantized(e)
            return
        if key in self.scales:
            yield from self._fp8(e)
            return
        flat = self.view(key)
        itemsize = (e.end - e.begin) // max(e.numel, 1)
        window = max(WINDOW_BYTES // max(itemsize, 1), self.chunk_elements)
        done = 0
        for chunk in float32_chunks(flat, self.chunk_elements, self.work if work is None else work):
            yield chunk
            done += chunk.numel()
            if done % window < self.chunk_elements and done >= window:
                self._release(key, done)
        del flat
        self._release(key, e.numel)
