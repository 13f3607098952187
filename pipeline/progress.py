"""Progress bars for long work (downloads, range reads, the value pass, multi-model counts).

tqdm draws on stderr only when stderr is a terminal (`disable=None`), so logs, tests and CI stay clean;
HMP_PROGRESS=0 turns the bars off, HMP_PROGRESS=1 forces them on.
"""

from __future__ import annotations

import os
from typing import Any


def bar(iterable: Any = None, desc: str = "", unit: str = "it", total: float | None = None, **kwargs: Any):
    """A tqdm bar on stderr, over an iterable or updated by hand (`with bar(None, "reading", "B", total=n) as b:
    b.update(k)`); bytes scale to kB, MB, GB, values to k, M, G."""
    from tqdm.auto import tqdm

    if isinstance(iterable, int | float):  # bar(n, desc, unit): a total, updated by hand
        iterable, total = None, iterable

    forced = os.environ.get("HMP_PROGRESS")
    disable = None if forced is None else forced == "0"
    scale = {"unit_scale": True, "unit_divisor": 1024 if unit == "B" else 1000} if unit in ("B", "values") else {}
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **scale, **kwargs
    )
