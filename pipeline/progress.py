"""Progress bars for long work (downloads, range reads, the value pass, multi-model counts).

tqdm draws on stderr only when stderr is a terminal (`disable=None`), so logs, tests and CI stay clean;
HMP_PROGRESS=0 turns the bars off, HMP_PROGRESS=1 forces them on.
"""

from __future__ import annotations

import os
from typing import Any


def bar(total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any):
    """A tqdm bar on stderr: `with bar(n, "reading", "B") as b: b.update(k)`; bytes scale to kB, MB, GB."""
    from tqdm.auto import tqdm

    forced = os.environ.get("HMP_PROGRESS")
    disable = None if forced is None else forced == "0"
    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **scale, **kwargs)
