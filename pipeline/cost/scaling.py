"""How a measured quantity follows the context: which contexts to run on fake tensors, and the curve through what
they gave (pipeline.answers.fit's prefill, decoding step and fine-tuning step)."""

from __future__ import annotations

from collections.abc import Callable

# The longest context a model with state-space or recurrent mixers is run at on fake tensors: transformers'
# reference kernels scan token by token (Mamba's selective scan, the gated delta rule's chunks), one operator per
# token and layer, so its longer contexts follow from three sizes measured. A model that only attends runs the same
# operators at any length and is measured at the context asked.
MEASURED_UP_TO = 1024


def sizes(context: int, window: int | None, scans: bool) -> list[int]:
    """The contexts to measure: the one asked and half of it; for a model that scans, three up to MEASURED_UP_TO
    beyond that, each at least the widest sliding window shorter than the context (a prefill holds otherwise below
    a window than above it, so the sizes measured are on the context's side of it)."""
    top = max(MEASURED_UP_TO, 4 * window) if window and window < context else MEASURED_UP_TO
    if context <= top or not scans:
        return list(dict.fromkeys((context, max(context // 2, 1))))
    return [top, top // 2, top // 4]


def listed(sizes: list[int]) -> str:
    return " / ".join(f"{n:,}" for n in sizes)


def followed(context: int, sizes: list[int]) -> str:
    if context in sizes:
        return "other sizes as a·n + b·n² through the sizes measured"
    return (
        f"{context:,} and other sizes as c + a·n + b·n² through them (what a prefill holds: fixed terms, terms per "
        "token, per pair of tokens)"
    )


def through(points: list[tuple[int, float]]) -> Callable[[int], int]:
    """A curve through measured (size, bytes): exact at the first point; with two, a·n + b·n² (b at least 0); with
    three, c + a·n + b·n² through all three (logits and other fixed terms, per-token terms, T × T scores)."""
    (t, high), *rest = points
    if len(rest) == 2:
        (n1, y1), (n2, y2) = rest
        xs, ys = (t, n1, n2), (high, y1, y2)

        def lagrange(n: int) -> int:
            total = 0.0
            for i in range(3):
                term = ys[i]
                for j in range(3):
                    if i != j:
                        term *= (n - xs[j]) / (xs[i] - xs[j])
                total += term
            return max(int(round(total)), 0)

        return lambda n: int(round(high)) if n == t else lagrange(n)
    if not rest or rest[0][0] == t:
        a, b = high / t, 0.0
    else:  # high = a·T + b·T², low = a·h + b·h²
        half, low = rest[0]
        b = max((high - low * t / half) / (t * t - half * t), 0.0)
        a = (high - b * t * t) / t
    return lambda n: int(round(a * n + b * n * n)) if n != t else int(round(high))
