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

    forced = os.environ.get("HMP_PROGRESS")
    disable = None if forced is None else forced == "0"
    scale = {"unit_scale": True, "unit_divisor": 1024 if unit == "B" else 1000} if unit in ("B", "values") else {}
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **scale, **kwargs
    )


def hub_tqdm():
    """The tqdm class for huggingface_hub's own bars (snapshot_download): the library's, under the rule above.

    The library draws its byte bars on a terminal only, but its "Fetching N files" bar (hf_thread_map)
    also on a pipe; through this class every one of its bars follows the pipeline's rule: on a
    terminal only, HMP_PROGRESS=0 or 1 to force, and HF_HUB_DISABLE_PROGRESS_BARS still wins. The
    download stage draws no bar of its own around them.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    forced = os.environ.get("HMP_PROGRESS")

    class Bars(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            if forced is None:
                kwargs.setdefault("disable", None)  # None: tqdm's terminal test (the library may pass True)
            else:
                kwargs["disable"] = forced == "0"
            super().__init__(*args, **kwargs)

    return Bars


class Ticker:
    """A bar that also says where it is, one line at most every `every` seconds, when the bar itself is not drawn
    (stderr is not a terminal: a log, CI): a long run is never silent. HMP_PROGRESS=0 silences both."""

    def __init__(self, inner: Any, desc: str, unit: str, total: int, every: float = 30.0):
        import sys
        import time

        self.inner, self.desc, self.unit, self.total, self.every = inner, desc, unit, total, every
        self.done, self.start = 0, time.monotonic()
        self.next = self.start + every
        self.lines = bool(getattr(inner, "disable", False)) and os.environ.get("HMP_PROGRESS") != "0"
        self.err = sys.stderr

    def update(self, n: int = 1) -> None:
        import time

        self.inner.update(n)
        self.done += n
        now = time.monotonic()
        if self.lines and now >= self.next and self.done < self.total:
            self.next = now + self.every
            print(f"{self.desc}: {self.done:,} of {self.total:,} {self.unit} done, {now - self.start:.0f} s",
                  file=self.err, flush=True)  # fmt: skip
