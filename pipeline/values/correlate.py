"""Pearson r and max |difference| of two matrices (the embedding and the unembedding), streamed side by side."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.values.moments import CoMoments
from pipeline.values.reader import CHUNK_ELEMENTS, Reader, float32_chunks

if TYPE_CHECKING:
    import torch

SAMPLE_POINTS = 2000  # pairs kept for the report's tie figure


def _every(numel: int) -> int:
    return max(1, numel // SAMPLE_POINTS)


def correlate_stored(reader: Reader, key_x: str, key_y: str) -> CoMoments:
    """Pearson r and max |x − y| of two stored tensors of one shape, streamed chunk by chunk."""
    acc = CoMoments(every=_every(reader.entries[key_x].numel))
    for a, b in _aligned(reader.chunks(key_x, reader.work), reader.chunks(key_y, reader.work_y)):
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
