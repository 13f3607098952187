"""Benchmark the pipeline on the default sweep (the four GPT-2 sizes) in a temp copy of this repository.

Prints one table: cold `dvc repro` (fresh copy, empty cache), no-op `dvc repro`, and the peak RSS of
the count stage with gpt2-xl in the sweep. Each figure is the median of --runs runs, all in this one
process, so they share the machine's state at the time.

    python benchmarks/bench_pipeline.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.repo_copy import ENV, copy_repo, dvc  # noqa: E402

TARGETS = {"cold": 45.0, "noop": 5.0, "rss_mb": 1024.0}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb(args: list[str], cwd: Path) -> float:
    """Peak resident set size of one child process, from the kernel's rusage of that child alone."""
    proc = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is printed)")
    args = parser.parse_args()
    cold, noop, rss = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for i in range(args.runs):
            repo = copy_repo(Path(tmp) / f"repo{i}")  # fresh: no data/models, no DVC cache or run cache
            cold.append(timed(lambda repo=repo: dvc("repro", cwd=repo)))
            noop.append(timed(lambda repo=repo: dvc("repro", cwd=repo)))
            rss.append(peak_rss_mb([sys.executable, "-m", "pipeline.count"], cwd=repo))
    rows = [
        ("cold dvc repro, default sweep (4 GPT-2 sizes)", statistics.median(cold), "s", TARGETS["cold"], cold),
        ("no-op dvc repro", statistics.median(noop), "s", TARGETS["noop"], noop),
        ("peak RSS of the count stage (gpt2-xl in sweep)", statistics.median(rss), "MB", TARGETS["rss_mb"], rss),
    ]
    print(f"{'measure':<50} {'median':>10} {'target':>10}  verdict  runs")
    for label, value, unit, target, runs in rows:
        verdict = "ok" if value <= target else "MISSED"
        each = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{label:<50} {value:>8.1f}{unit:>2} {'≤ ' + f'{target:g}':>8}{unit:>2}  {verdict:<7}  [{each}]")
    print(f"({args.runs} runs each; {os.cpu_count()} CPUs; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
