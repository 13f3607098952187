"""Statistics of parameter values, streamed from memory-mapped safetensors at close to memory bandwidth.

Each tensor is viewed in place through mmap (no copy for float32; half types are widened into one
float32 work buffer), and walked in cache-sized chunks. Per chunk, float32 kernels give the sum,
the sum of squares (a dot product), min and max; the totals accumulate in Python floats (float64).
Consumed pages are released (madvise DONTNEED) every window, so resident memory stays bounded by the
chunk and window sizes whatever the checkpoint size, including checkpoints larger than RAM.

Precision: float32 chunk sums are cascaded by torch and accumulated in float64 across chunks, so
means, standard deviations and correlations carry about 6 significant digits.
"""

from __future__ import annotations

import functools
import math
import mmap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import checkpoint
from pipeline.checkpoint import Entry

if TYPE_CHECKING:
    import torch

CHUNK_ELEMENTS = 1 << 18  # 256K values: a 1 MB float32 chunk stays in a core's L2 cache
WINDOW_BYTES = 64 << 20  # pages behind this window are released from the mapping


@dataclass
class Moments:
    """Running count, sum, sum of squares, min and max (float64 accumulators)."""

    n: int = 0
    s: float = 0.0
    ss: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    @classmethod
    def of(cls, chunk: torch.Tensor) -> Moments:
        """Moments of one float32 chunk, from float32 kernels."""
        import torch

        if chunk.numel() == 0:
            return cls()
        lo, hi = torch.aminmax(chunk)
        return cls(chunk.numel(), float(chunk.sum()), float(torch.dot(chunk, chunk)), float(lo), float(hi))

    def merge(self, o: Moments) -> None:
        self.n += o.n
        self.s += o.s
        self.ss += o.ss
        self.lo, self.hi = min(self.lo, o.lo), max(self.hi, o.hi)

    @property
    def mean(self) -> float:
        return self.s / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(max(self.ss / self.n - self.mean**2, 0.0)) if self.n else math.nan

    def row(self) -> dict:
        return {
            "count": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": self.lo,
            "max": self.hi,
            "l2": math.sqrt(self.ss),
        }


@dataclass
class Histogram:
    """Counts per bfloat16 bucket: every counted float32 value falls in the bucket of its top 16 bits.

    A value's sign, exponent and first 7 mantissa bits pick one of 65,536 buckets, so the histogram
    resolves every scale at once (128 buckets per factor of two), needs no range chosen in advance
    (weights of std 0.02 and norm gains of exactly 1.0 both land in buckets of their own) and costs
    one shift and one bincount per chunk. The report re-bins it over each group's own range.

    `every` = k counts every k-th value of each tensor, from its first (a systematic sample, the same
    whatever the chunking; 1 counts them all). torch's bincount costs about 1.8 ns a value on these
    cores, more than the read itself, so counting all of a large checkpoint's values would triple the
    pass (benchmarks/bench_values.py); means, deviations and extremes always come from every value.
    """

    every: int = 1
    _acc: object = None
    _idx: object = None  # bucket codes waiting to be counted: one bincount per BATCH codes, not one per chunk
    _fill: int = 0
    _pos: int = 0  # values of the current tensor seen so far
    BATCH = 1 << 22  # a bincount's fixed cost (a 65,536-bucket result to clear and add) spread over 4M codes

    def begin(self) -> None:
        """A new tensor starts: its first value is counted."""
        self._pos = 0

    def add(self, chunk: torch.Tensor) -> None:
        import torch

        first = -self._pos % self.every
        self._pos += chunk.numel()
        part = chunk[first :: self.every] if self.every > 1 else chunk
        while part.numel():
            if self._idx is None:
                self._idx = torch.empty(self.BATCH, dtype=torch.int32)
            take = part[: self.BATCH - self._fill]
            out = self._idx[self._fill : self._fill + take.numel()]
            torch.bitwise_right_shift(take.view(torch.int32), 16, out=out)  # sign-extended: -32768..32767
            self._fill += take.numel()
            part = part[take.numel() :]
            if self._fill == self.BATCH:
                self._count()

    def _count(self) -> None:
        import torch

        if self._fill:
            idx = self._idx[: self._fill]
            idx.add_(1 << 15)
            counts = torch.bincount(idx, minlength=1 << 16)
            self._acc = counts if self._acc is None else self._acc + counts
            self._fill = 0

    def merge(self, other: Histogram) -> None:
        other._count()
        if other._acc is not None:
            self._acc = other._acc.clone() if self._acc is None else self._acc + other._acc

    def rows(self) -> list[dict]:
        """One row per non-empty bucket, [bin_left, bin_right) in value order; NaN and infinities in one row apart."""
        import numpy as np

        self._count()
        if self._acc is None:
            return []
        counts = self._acc.numpy()
        codes = np.nonzero(counts)[0]
        patterns = (codes.astype(np.int64) - (1 << 15)).astype(np.int32)
        lower = (patterns.astype(np.int64) << 16).astype(np.int32).view(np.float32)
        upper = ((patterns.astype(np.int64) + 1) << 16).astype(np.int32).view(np.float32)
        finite = np.isfinite(lower) & np.isfinite(upper) & ((patterns & 0x7F80) != 0x7F80)
        left, right = np.minimum(lower, upper), np.maximum(lower, upper)
        rows = [
            {"bin_left": float(a), "bin_right": float(b), "count": int(c)}
            for a, b, c, ok in zip(left, right, counts[codes], finite, strict=True)
            if ok
        ]
        rows.sort(key=lambda r: (r["bin_left"], r["bin_right"]))
        odd = int(counts[codes][~finite].sum())
        if odd:
            rows.append({"bin_left": math.nan, "bin_right": math.nan, "count": odd})
        return rows


@dataclass
class CoMoments:
    """Running Pearson correlation and max |x − y| of two equally shaped streams."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0
    max_abs_diff: float = 0.0
    _diff: object = None
    every: int = 0  # keep every k-th pair (0: none), a deterministic sample for the report's tie figure
    samples: list = field(default_factory=list)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        import torch

        n = a.numel()
        if self.every:
            first = -self.n % self.every  # the same global positions whatever the chunking
            self.samples.append((a[first :: self.every].clone(), b[first :: self.every].clone()))
        if self._diff is None or self._diff.numel() < n:
            self._diff = torch.empty(n, dtype=torch.float32)
        diff = self._diff[:n]
        self.n += n
        self.sx += float(a.sum())
        self.sy += float(b.sum())
        self.sxx += float(torch.dot(a, a))
        self.syy += float(torch.dot(b, b))
        self.sxy += float(torch.dot(a, b))
        torch.sub(a, b, out=diff)
        self.max_abs_diff = max(self.max_abs_diff, float(diff.abs_().max()))

    def sample(self):
        """The kept pairs as a DataFrame (input, output)."""
        import pandas as pd
        import torch

        if not self.samples:
            return pd.DataFrame(columns=["input", "output"])
        xs = torch.cat([x for x, _ in self.samples]).double().numpy()
        ys = torch.cat([y for _, y in self.samples]).double().numpy()
        return pd.DataFrame({"input": xs, "output": ys})

    @property
    def pearson_r(self) -> float:
        cov = self.n * self.sxy - self.sx * self.sy
        vx = self.n * self.sxx - self.sx * self.sx
        vy = self.n * self.syy - self.sy * self.sy
        return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


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
        self._work = torch.empty(chunk_elements, dtype=torch.float32)
        self._work2 = torch.empty(chunk_elements, dtype=torch.float32)

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
        for chunk in float32_chunks(flat, self.chunk_elements, self._work if work is None else work):
            yield chunk
            done += chunk.numel()
            if done % window < self.chunk_elements and done >= window:
                self._release(key, done)
        del flat
        self._release(key, e.numel)


SAMPLE_POINTS = 2000  # pairs kept for the report's tie figure


def _every(numel: int) -> int:
    return max(1, numel // SAMPLE_POINTS)


def correlate_stored(reader: Reader, key_x: str, key_y: str) -> CoMoments:
    """Pearson r and max |x − y| of two stored tensors of one shape, streamed chunk by chunk."""
    acc = CoMoments(every=_every(reader.entries[key_x].numel))
    for a, b in _aligned(reader.chunks(key_x, reader._work), reader.chunks(key_y, reader._work2)):
        acc.add(a, b)
    return acc


def _aligned(xs: Iterator[torch.Tensor], ys: Iterator[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of equal-length pieces of two chunk streams that may chunk differently (a float and a GGUF tensor)."""
    a = b = None
    while True:
        if a is None or a.numel() == 0:
            a = next(xs, None)
        if b is None or b.numel() == 0:
            b = next(ys, None)
        if a is None or b is None:
            if (a is not None and a.numel()) or (b is not None and b.numel()) or next(xs, None) is not None:
                raise ValueError("the two tensors hold different numbers of values")
            return
        n = min(a.numel(), b.numel())
        yield a[:n], b[:n]
        a, b = a[n:], b[n:]


def correlate_tensors(x: torch.Tensor, y: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> CoMoments:
    """The same for two in-memory tensors (the course's check on a loaded model)."""
    import torch

    acc = CoMoments(every=_every(x.numel()))
    wx, wy = torch.empty(chunk_elements), torch.empty(chunk_elements)
    fx, fy = x.detach().reshape(-1), y.detach().reshape(-1)
    for a, b in zip(float32_chunks(fx, chunk_elements, wx), float32_chunks(fy, chunk_elements, wy), strict=True):
        acc.add(a, b)
    return acc


# Value groups for the histograms: what the course calls weights and biases, and the norm gains apart.
VALUE_GROUPS = {
    "matrix": "weights",
    "embedding": "weights",
    "bias": "biases",
    "norm_bias": "biases",
    "norm_gain": "norm_gains",
    "attention_sink": "attention_sinks",
}
STAT_COLUMNS = ["model", "by", "group", "count", "mean", "std", "min", "max", "l2"]
HIST_COLUMNS = ["model", "group", "every", "bin_left", "bin_right", "count"]


def distributions(
    folder: Path,
    entries: list[Entry],
    params_inv,
    name: str,
    bins: int,
    chunk_elements: int = CHUNK_ELEMENTS,
    threads: int = 2,
    scales: dict | None = None,
    every: int = 1,
):
    """(statistics, histograms) DataFrames of a model's parameter values, in one pass over its tensors.

    params_inv holds the parameter rows of the inventory (a tied tensor once), with checkpoint keys.
    Statistics by role, component, value group and overall, from every value; histograms by value group
    (none if bins is 0) of every `every`-th value of each tensor.
    Tensors are spread over `threads` workers (torch kernels release the GIL); each tensor's moments
    come from one worker and are merged in inventory order, so the result does not depend on scheduling.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    import torch

    patterns = checkpoint.expert_patterns(e.key for e in entries)  # once per checkpoint, not once per tensor
    by_key = {e.key: e for e in entries}
    first = params_inv["checkpoint_key"].str.split(";").str[0]
    unreadable = first.map(lambda k: k in by_key and not readable(by_key[k], scales)).to_numpy(dtype=bool)
    # packed or integer-coded weights are not read as numbers: counted apart, one row per stored dtype
    skipped = params_inv[unreadable].assign(stored=first[unreadable].map(lambda k: by_key[k].dtype))
    rows = list(params_inv[~unreadable].itertuples(index=False))
    local = threading.local()
    workers: list[tuple[Reader, dict[str, Histogram]]] = []

    def one(row) -> Moments:
        if not hasattr(local, "reader"):
            local.reader, local.hists = Reader(folder, entries, chunk_elements, scales), {}
            workers.append((local.reader, local.hists))
        group = VALUE_GROUPS[row.role]
        hist = local.hists.setdefault(group, Histogram(every)) if bins > 0 else None
        m = Moments()
        # a tied tensor stored twice is read once; a parameter merged from per-expert tensors is read from all
        keys = checkpoint.source_keys(row.checkpoint_key, patterns) if "*" in row.checkpoint_key else []
        for key in keys or [row.checkpoint_key.split(";")[0]]:
            if hist is not None:
                hist.begin()
            for chunk in local.reader.chunks(key):
                m.merge(Moments.of(chunk))
                if hist is not None:
                    hist.add(chunk)
        return m

    from pipeline import progress

    before = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else before)  # parallel over tensors, not inside each kernel
    try:
        order = sorted(range(len(rows)), key=lambda i: -rows[i].numel)  # big tensors first balance the workers
        with (
            progress.bar(None, f"{name}: values", "values", total=sum(int(r.numel) for r in rows)) as shown,
            ThreadPoolExecutor(max_workers=max(threads, 1)) as pool,
        ):

            def tracked(i: int) -> Moments:
                m = one(rows[i])
                shown.update(int(rows[i].numel))
                return m

            done = dict(zip(order, pool.map(tracked, order), strict=True))
    finally:
        torch.set_num_threads(before)

    stats: dict[tuple[str, str], Moments] = {}
    for i, row in enumerate(rows):  # merged in inventory order: deterministic sums
        group = VALUE_GROUPS[row.role]
        for key in (("all", "all"), ("role", row.role), ("component", row.component), ("group", group)):
            stats.setdefault(key, Moments()).merge(done[i])
    hists: dict[str, Histogram] = {}
    for _, hs in workers:
        for g, h in hs.items():
            if g not in hists:
                hists[g] = Histogram(every)
            hists[g].merge(h)
    rank = {"all": 0, "group": 1, "role": 2, "component": 3}
    stat_rows = [
        {"model": name, "by": by, "group": group, **m.row()}
        for (by, group), m in sorted(stats.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1]))
    ]
    stat_rows += [
        {"model": name, "by": "skipped", "group": dtype, "count": int(part["numel"].sum())}
        for dtype, part in sorted(skipped.groupby("stored"), key=lambda kv: kv[0])
    ]
    hist_rows = [{"model": name, "group": g, "every": every, **r} for g in sorted(hists) for r in hists[g].rows()]
    return pd.DataFrame(stat_rows, columns=STAT_COLUMNS), pd.DataFrame(hist_rows, columns=HIST_COLUMNS)
