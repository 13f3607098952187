"""What both benchmarks measure with: a child Python's own peak memory, spreads over runs, the machine's load.

Peak memory is read by the child itself, from /proc/self/status VmHWM, just before it exits. Neither
`os.wait4` in the parent nor `getrusage(RUSAGE_SELF)` in the child will do on Linux: when the child
execs, the kernel folds the peak of the memory it was forked from (the parent's) into the child's
ru_maxrss, so every child reports at least the parent's size. VmHWM belongs to the memory map exec
creates, so it counts the child's own pages only (tests/benchmarks/test_measure.py checks this).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Runs `-c code args...` or `-m module args...` as python would, then writes the process's own peak RSS
# in KiB to the file named first. Self-contained: it must not import anything the target might not.
_CHILD = """
import sys
report, kind, target, *rest = sys.argv[1:]
try:
    if kind == "-m":
        import runpy
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *rest]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
finally:
    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except OSError:  # no /proc (not Linux): ru_maxrss, which may include the parent's memory
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    with open(report, "w") as fh:
        fh.write(str(kib))
"""


@dataclass(frozen=True)
class Run:
    seconds: float  # wall time of the whole process, interpreter start included
    peak_mib: float  # the process's own peak resident set size
    stdout: str


def run_python(args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Run:
    """Run `python <args>` (args: "-c", code, ... or "-m", module, ...) in a fresh process and measure it."""
    kind, target, *rest = args
    if kind not in ("-c", "-m"):
        raise ValueError(f"args must start with -c or -m, not {kind!r}")
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        report = Path(tmp) / "peak_kib"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(report), kind, target, *rest],
            cwd=cwd,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            what = target if kind == "-m" else "snippet"
            raise SystemExit(f"python {kind} {what} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return Run(seconds, int(report.read_text()) / 1024, proc.stdout.strip())


@dataclass
class Repeated:
    """A snippet run several times in fresh processes: what it printed first (imports' seconds, then its own), the
    peak memory of each run, and the integers it printed after them, the same in every run."""

    imports: list[float]
    seconds: list[float]
    peak_mib: list[float]
    answer: tuple[int, ...]


def repeated(args: Sequence[str], runs: int, what: str) -> Repeated:
    """Run `python <args>` runs times; each prints the imports' seconds, its own seconds, then integers."""
    imports, secs, rss, seen = [], [], [], set()
    for _ in range(runs):
        run = run_python(args)
        imp, sec, *rest = run.stdout.split()
        imports.append(float(imp))
        secs.append(float(sec))
        rss.append(run.peak_mib)
        seen.add(tuple(int(x) for x in rest))
    answer, *others = sorted(seen)
    if others:
        raise AssertionError(f"{what}: runs disagree: {seen}")
    return Repeated(imports, secs, rss, answer)


def timed(fn: Callable[[], object]) -> float:
    """Seconds fn() takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(values: Iterable[float], fmt: str = ".2f") -> str:
    """'median [min–max]' of the values."""
    vals = list(values)
    return f"{statistics.median(vals):{fmt}} [{min(vals):{fmt}}–{max(vals):{fmt}}]"


class MachineLoad:
    """The machine as the runs start (load average, cores, python), then what everything else used during them.

    Make it before the runs: the load average then is that of other work. The load average cannot tell
    this benchmark's own processes from the rest, so during() takes the CPU time the kernel counted as busy
    (steal included) since then, minus this process's and its waited-for children's.
    """

    def __init__(self) -> None:
        self.header = f"load average: {_loadavg()} · cores: {_cores()} · python {platform.python_version()}"
        self._start = (time.monotonic(), _busy_seconds(), _own_seconds())

    def during(self) -> str:
        wall = time.monotonic() - self._start[0]
        line = f"load average after the runs: {_loadavg()} (this benchmark's own processes included)"
        busy = _busy_seconds()
        if busy is None or self._start[1] is None:
            return line
        others = max(0.0, (busy - self._start[1]) - (_own_seconds() - self._start[2])) / wall
        return f"{line}; other processes kept {others:.2f} of {os.cpu_count()} cores busy over the {wall:.0f} s"


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cores() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable}" if usable == os.cpu_count() else f"{usable} (of {os.cpu_count()})"


def _busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal), or None."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (theirs include their children's)."""
    return sum(
        r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
