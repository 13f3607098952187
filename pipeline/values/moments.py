"""Running moments, histograms and co-moments of parameter values, merged chunk by chunk in float64."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
    one strided copy of half-words and one bincount per batch. The report re-bins it over each group's own range.

    `every` = k counts every k-th value of each tensor, from its first (a systematic sample, the same
    whatever the chunking; 1 counts them all). torch's bincount costs about 1.8 ns a value on these
    cores, more than the read itself, so counting all of a large checkpoint's values would triple the
    pass (benchmarks/bench_values.py); means, deviations and extremes always come from every value.
    """

    every: int = 1
    _acc: object = None
    _idx: object = None  # bucket codes (uint16) waiting to be counted: one bincount per BATCH codes, not per chunk
    _fill: int = 0
    _pos: int = 0  # values of the current tensor seen so far
    BATCH = 1 << 22  # a bincount's fixed cost (a 65,536-bucket result to clear and add) spread over 4M codes

    def begin(self) -> None:
        """A new tensor starts: its first value is counted."""
        self._pos = 0

    def add(self, chunk: torch.Tensor) -> None:
        import numpy as np

        first = -self._pos % self.every
        self._pos += chunk.numel()
        # the top 16 bits of each counted float32 (its second half-word on a little-endian machine, its first on a
        # big-endian one), taken as they lie in memory: a strided copy, no arithmetic; the code is their pattern
        top = 1 if sys.byteorder == "little" else 0
        high = chunk.numpy().view(np.uint16)[2 * first + top :: 2 * self.every]
        while high.size:
            if self._idx is None:
                self._idx = np.empty(self.BATCH, dtype=np.uint16)
            take = high[: self.BATCH - self._fill]
            self._idx[self._fill : self._fill + take.size] = take
            self._fill += take.size
            high = high[take.size :]
            if self._fill == self.BATCH:
                self._count()

    def _count(self) -> None:
        import numpy as np
        import torch

        if self._fill:
            codes = torch.from_numpy(self._idx[: self._fill].astype(np.int32))
            counts = torch.bincount(codes, minlength=1 << 16)
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
        patterns = codes.astype(np.uint16).view(np.int16).astype(np.int32)  # the high half-word, as signed bits
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
