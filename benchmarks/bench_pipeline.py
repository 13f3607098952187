"""Benchmark the pipeline on the default sweep (the four GPT-2 sizes) in temp copies of this repository.

Prints one table, each figure as median [min–max] over --runs runs, interleaved in this one process:
  warm dvc repro: a fresh copy with the committed dvc.lock, so only the download stage runs;
  no-op dvc repro: the same copy again, nothing to do;
  cold dvc repro -f: another fresh copy with results/ and reports/ removed, every stage runs;
  the peak RSS of the count stage (gpt2-xl in the sweep), read by the stage's own process.
It starts with the load average and cores before the runs, and ends with what other processes used during them.
The working tree is only read (copied with tests/repo_copy.py); nothing is written to it.

    python benchmarks/bench_pipeline.py [--runs 3] [--quick]

--quick: one run, a check that it runs (the sweep stays the default one: the warm run is warm from the committed
dvc.lock, which is that sweep's).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, run_python, spread, timed  # noqa: E402

from tests.support.repo_copy import ENV, copy_repo, dvc, sh  # noqa: E402

TARGETS = {"repro": 45.0, "noop": 5.0, "rss_mib": 1024.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per figure (median [min–max] is printed; default 3)")
    parser.add_argument("--quick", action="store_true", help="one run: a check that it runs")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    load = MachineLoad()  # before the runs: the load of everything else
    warm, noop, cold, rss, changed = [], [], [], [], set()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for i in range(args.runs):
            repo = copy_repo(Path(tmp) / f"warm{i}")  # no data/models, no DVC cache or run cache
            warm.append(timed(lambda repo=repo: dvc("repro", cwd=repo)))
            noop.append(timed(lambda repo=repo: dvc("repro", cwd=repo)))
            shutil.rmtree(repo)

            repo = copy_repo(Path(tmp) / f"cold{i}")
            for out in ("results", "reports"):
                shutil.rmtree(repo / out)
            cold.append(timed(lambda repo=repo: dvc("repro", "-f", cwd=repo)))
            status = sh("git", "status", "--porcelain", cwd=repo).stdout
            changed.update(line[3:] for line in status.splitlines())
            rss.append(run_python(["-m", "pipeline.stages.count"], cwd=repo, env=ENV).peak_mib)
            shutil.rmtree(repo)
    during = load.during()

    rows = [
        ("warm dvc repro (from committed dvc.lock)", warm, "s", TARGETS["repro"]),
        ("no-op dvc repro", noop, "s", TARGETS["noop"]),
        ("cold dvc repro -f (results removed)", cold, "s", TARGETS["repro"]),
        ("peak RSS of the count stage (gpt2-xl in sweep)", rss, "MiB", TARGETS["rss_mib"]),
    ]
    print(load.header)
    print(f"default sweep (4 GPT-2 sizes) in temp copies of the repo; {args.runs} runs, median [min–max]")
    print()
    print(f"{'measure':<48} {'unit':>4}  {'median [min–max]':>20}  {'target':>8}  verdict")
    for label, runs, unit, target in rows:
        fmt = ".0f" if unit == "MiB" else ".1f"
        verdict = "ok" if statistics.median(runs) <= target else "MISSED"
        print(f"{label:<48} {unit:>4}  {spread(runs, fmt):>20}  {'≤ ' + f'{target:g}':>8}  {verdict}")
    print()
    if changed:
        print(f"cold run changed tracked files: {', '.join(sorted(changed))}")
    else:
        print("cold run outputs byte-identical to the copied ones (git status clean in every copy)")
    print(during)


if __name__ == "__main__":
    main()
