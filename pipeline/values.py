"""Statistics of parameter values, streamed from memory-mapped safetensors in bounded chunks.

Nothing here holds a whole tensor in float64: each tensor is read in row chunks of about
`chunk_elements` values, and per-chunk moments are merged into float64 accumulators (Chan et al.'s
pairwise update), so memory stays bounded whatever the checkpoint size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.checkpoint import Entry

if TYPE_CHECKING:
    import torch

CHUNK_ELEMENTS = 1 << 20  # values per chunk: 4 MB of float32 work buffer


@dataclass
class Moments:
    """Running count, mean, sum of squared deviations, min, max and sum of squares."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    sumsq: float = 0.0

    @classmethod
    def of(cls, chunk: torch.Tensor) -> Moments:
        """Moments of one chunk, computed in float64."""
        import torch

        if chunk.numel() == 0:
            return cls()
        c = chunk.to(torch.float64)
        mb = float(c.mean())
        lo, hi = torch.aminmax(c)
        return cls(c.numel(), mb, float((c - mb).square().sum()), float(lo), float(hi), float(c.square().sum()))

    def add(self, chunk: torch.Tensor) -> None:
        self.merge(Moments.of(chunk))

    def merge(self, o: Moments) -> None:
        if o.n == 0:
            return
        n = self.n + o.n
        delta = o.mean - self.mean
        self.mean += delta * o.n / n
        self.m2 += o.m2 + delta * delta * self.n * o.n / n
        self.n = n
        self.lo, self.hi = min(self.lo, o.lo), max(self.hi, o.hi)
        self.sumsq += o.sumsq

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else math.nan

    def row(self) -> dict:
        return {
            "count": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": self.lo,
            "max": self.hi,
            "l2": math.sqrt(self.sumsq),
        }


@dataclass
class Histogram:
    """Counts over fixed bins, with the values below and above the range counted apart."""

    lo: float
    hi: float
    bins: int
    counts: list[int] = field(default_factory=list)
    under: int = 0
    over: int = 0

    def add(self, chunk: torch.Tensor) -> None:
        import torch

        c = chunk.to(torch.float64)
        counts = torch.histc(c, bins=self.bins, min=self.lo, max=self.hi).to(torch.int64).tolist()
        self.counts = [a + b for a, b in zip(self.counts or [0] * self.bins, counts, strict=True)]
        self.under += int((c < self.lo).sum())
        self.over += int((c > self.hi).sum())

    def rows(self) -> list[dict]:
        width = (self.hi - self.lo) / self.bins
        counts = self.counts or [0] * self.bins
        out = [{"bin_left": -math.inf, "bin_right": self.lo, "count": self.under}]
        out += [
            {"bin_left": self.lo + i * width, "bin_right": self.lo + (i + 1) * width, "count": c}
            for i, c in enumerate(counts)
        ]
        out.append({"bin_left": self.hi, "bin_right": math.inf, "count": self.over})
        return out


@dataclass
class CoMoments:
    """Running Pearson correlation and max |x − y| of two equally shaped streams."""

    x: Moments = field(default_factory=Moments)
    y: Moments = field(default_factory=Moments)
    cxy: float = 0.0
    max_abs_diff: float = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        import torch

        a64, b64 = a.to(torch.float64), b.to(torch.float64)
        n_a, mean_xa, mean_ya = self.x.n, self.x.mean, self.y.mean
        ma, mb = float(a64.mean()), float(b64.mean())
        cb = float(((a64 - ma) * (b64 - mb)).sum())
        nb = a64.numel()
        n = n_a + nb
        self.cxy += cb + (ma - mean_xa) * (mb - mean_ya) * n_a * nb / n
        self.x.add(a)
        self.y.add(b)
        self.max_abs_diff = max(self.max_abs_diff, float((a64 - b64).abs().max()))

    @property
    def pearson_r(self) -> float:
        denom = math.sqrt(self.x.m2 * self.y.m2)
        return self.cxy / denom if denom else math.nan


def tensor_chunks(tensor_or_slice, shape: tuple[int, ...], chunk_elements: int = CHUNK_ELEMENTS) -> Iterator:
    """Row chunks (flattened) of a tensor or a safetensors slice, each about chunk_elements values."""
    if len(shape) == 0:
        yield tensor_or_slice[...].reshape(-1) if hasattr(tensor_or_slice, "reshape") else tensor_or_slice
        return
    rows = shape[0]
    per_row = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, chunk_elements // max(per_row, 1))
    for start in range(0, rows, step):
        yield tensor_or_slice[start : start + step].reshape(-1)


class Reader:
    """Memory-mapped access to the tensors of a safetensors checkpoint (one open handle per file)."""

    def __init__(self, folder: Path, entries: list[Entry]):
        self.folder = folder
        self.entries = {e.key: e for e in entries}
        self._handles: dict[str, object] = {}

    def _handle(self, file: str):
        from safetensors import safe_open

        if file not in self._handles:
            self._handles[file] = safe_open(str(self.folder / file), framework="pt")
        return self._handles[file]

    def chunks(self, key: str, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[torch.Tensor]:
        entry = self.entries[key]
        handle = self._handle(entry.file)
        if len(entry.shape) == 0:
            yield handle.get_tensor(key).reshape(-1)
            return
        yield from tensor_chunks(handle.get_slice(key), entry.shape, chunk_elements)


def correlate_stored(reader: Reader, key_x: str, key_y: str, chunk_elements: int = CHUNK_ELEMENTS) -> CoMoments:
    """Pearson r and max |x − y| of two stored tensors of one shape, streamed chunk by chunk."""
    acc = CoMoments()
    for a, b in zip(reader.chunks(key_x, chunk_elements), reader.chunks(key_y, chunk_elements), strict=True):
        acc.add(a, b)
    return acc


def correlate_tensors(x: torch.Tensor, y: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> CoMoments:
    """The same for two in-memory tensors (the course's check on a loaded model)."""
    acc = CoMoments()
    chunks_x = tensor_chunks(x.detach(), tuple(x.shape), chunk_elements)
    chunks_y = tensor_chunks(y.detach(), tuple(y.shape), chunk_elements)
    for a, b in zip(chunks_x, chunks_y, strict=True):
        acc.add(a, b)
    return acc


# Value groups for the histograms: what the course calls weights and biases, and the norm gains apart.
VALUE_GROUPS = {
    "matrix": "weights",
    "embedding": "weights",
    "bias": "biases",
    "norm_bias": "biases",
    "norm_gain": "norm_gains",
}
STAT_COLUMNS = ["model", "by", "group", "count", "mean", "std", "min", "max", "l2"]
HIST_COLUMNS = ["model", "group", "bin_left", "bin_right", "count"]


def distributions(
    reader: Reader, params_inv, name: str, lo: float, hi: float, bins: int, chunk_elements: int = CHUNK_ELEMENTS
):
    """(statistics, histograms) DataFrames of a model's parameter values, one pass over its tensors.

    params_inv holds the parameter rows of the inventory (a tied tensor once), with checkpoint keys.
    Statistics by role, component, value group and overall; histograms by value group.
    """
    import pandas as pd

    stats: dict[tuple[str, str], Moments] = {}
    hists: dict[str, Histogram] = {}
    for row in params_inv.itertuples(index=False):
        key = row.checkpoint_key.split(";")[0]
        group = VALUE_GROUPS[row.role]
        targets = [("all", "all"), ("role", row.role), ("component", row.component), ("group", group)]
        hist = hists.setdefault(group, Histogram(lo, hi, bins))
        for chunk in reader.chunks(key, chunk_elements):
            m = Moments.of(chunk)
            for t in targets:
                stats.setdefault(t, Moments()).merge(m)
            hist.add(chunk)
    order = {"all": 0, "group": 1, "role": 2, "component": 3}
    stat_rows = [
        {"model": name, "by": by, "group": group, **m.row()}
        for (by, group), m in sorted(stats.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]
    hist_rows = [{"model": name, "group": g, **r} for g in sorted(hists) for r in hists[g].rows()]
    return pd.DataFrame(stat_rows, columns=STAT_COLUMNS), pd.DataFrame(hist_rows, columns=HIST_COLUMNS)
