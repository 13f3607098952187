"""Benchmark a sweep of 200 config-only models (benchmarks/sweep_file.py) in temp copies of this repository.

Prints one table, each figure as median [min–max] over --runs runs, interleaved in this one process:
  cold dvc repro: a fresh copy (no data/, so no model folders and no caches), the sweep composed into params.yaml;
  no-op dvc repro: the same copy again, nothing to do;
  dvc repro after adding one model: a 201st model appended to the sweep file and params.yaml recomposed
  (`python -m pipeline.core.compose`, timed apart: it is the edit, not the run).
Then how many models each stage worked on in the run after adding one (from the stages' own log lines), and,
from the first run, where the time goes: each stage run directly (`python -m pipeline.stages.<stage>`), cold in
another fresh copy (whose results and reports must equal those after adding one, byte for byte) and again with
every cache filled.
It starts with the load average and cores before the runs, and ends with what other processes used during them.
The working tree is only read (copied with tests/support/repo_copy.py); nothing is written to it.

    python benchmarks/bench_sweep.py [--runs 3] [--models 200] [--quick]

--quick: one run of a sweep of 4 models (Mixtral-, Pythia-, Llama- and Mamba-shaped; a fifth added), a check that
it runs: the targets are for 200 models, and the results after adding one must still equal a cold run's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, spread, timed  # noqa: E402
from sweep_file import models, sweep_yaml  # noqa: E402

from tests.support.repo_copy import copy_repo, dvc, sh  # noqa: E402

TARGETS = {"cold": 90.0, "add": 10.0}
STAGES = ("download", "count", "ties", "bias", "report")
# The stages' own summary lines (pipeline/stages/*.py, pipeline/core/memo.py)
WORKED = {
    "download": re.compile(r"download: \d+ models: (\d+) materialised, (\d+) kept"),
    "count": re.compile(r"count: \d+ models: (\d+) computed, (\d+) from the cache"),
    "bias": re.compile(r"bias: \d+ models: (\d+) computed, (\d+) from the cache"),
    "report": re.compile(r"report: \d+ figures: (\d+) computed, (\d+) from the cache"),
}


def prepare(repo: Path, entries: list, name: str) -> float:
    """Write conf/sweep/<name>.yaml with entries and compose params.yaml from it; the seconds composing took."""
    (repo / "conf" / "sweep" / f"{name}.yaml").write_text(sweep_yaml(name, entries))
    return timed(lambda: sh(sys.executable, "-m", "pipeline.core.compose", f"sweep={name}", cwd=repo))


def repro(repo: Path, log: list[str]) -> float:
    def go() -> None:
        proc = dvc("repro", cwd=repo)
        log.append(proc.stdout + proc.stderr)

    return timed(go)


def worked(log: str) -> dict[str, tuple[int, int]]:
    """{stage: (models worked on, models taken as they were)} from one dvc repro's output."""
    found = {}
    for stage, pattern in WORKED.items():
        match = pattern.search(log)
        if match:
            found[stage] = (int(match.group(1)), int(match.group(2)))
    return found


def stage_times(repo: Path) -> dict[str, float]:
    """Each stage run directly, in pipeline order."""
    return {s: timed(lambda s=s: sh(sys.executable, "-m", f"pipeline.stages.{s}", cwd=repo)) for s in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per figure (median [min–max] is printed; default 3)")
    parser.add_argument("--models", type=int, help="models in the sweep (one more is added; default 200)")
    parser.add_argument("--quick", action="store_true", help="one run of 4 models: a check that it runs")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.models is None:
        args.models = 4 if args.quick else 200
    entries = models(args.models + 1)
    name = f"bench-{args.models}"
    load = MachineLoad()  # before the runs: the load of everything else
    cold, noop, add, compose, logs, breakdown = [], [], [], [], [], {}
    identical, differ = [], []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for i in range(args.runs):
            repo = copy_repo(Path(tmp) / f"sweep{i}")
            compose.append(prepare(repo, entries[:-1], name))
            cold.append(repro(repo, []))
            noop.append(repro(repo, []))
            compose.append(prepare(repo, entries, name))
            add.append(repro(repo, logs))
            if i == 0:  # where the time goes: the stages alone, with every cache filled, then cold
                breakdown["warm"] = stage_times(repo)
                fresh = copy_repo(Path(tmp) / "cold-stages")
                prepare(fresh, entries, name)
                breakdown["cold"] = stage_times(fresh)
                for out in ("results", "reports"):
                    pair = (str(repo / out), str(fresh / out))
                    diff = sh("git", "diff", "--no-index", "--stat", *pair, cwd=Path(tmp), check=False)
                    identical.append(diff.returncode == 0)
                    if diff.returncode:
                        differ.append(diff.stdout.strip())
                shutil.rmtree(fresh)
            shutil.rmtree(repo)
    during = load.during()

    rows = [
        (f"cold dvc repro ({args.models} models, no data/)", cold, TARGETS["cold"]),
        ("no-op dvc repro", noop, None),
        ("dvc repro after adding one model", add, TARGETS["add"]),
        (f"compose params.yaml ({args.models}/{args.models + 1} models; not in the above)", compose, None),
    ]
    print(load.header)
    print(f"a sweep of {args.models} config-only models in temp copies of the repo; {args.runs} runs, median [min–max]")
    print()
    print(f"{'measure':<62} {'unit':>4}  {'median [min–max]':>20}  {'target':>8}  verdict")
    for label, runs, target in rows:
        verdict = "" if target is None else "ok" if statistics.median(runs) <= target else "MISSED"
        shown = "" if target is None else f"≤ {target:g}"
        print(f"{label:<62} {'s':>4}  {spread(runs, '.1f'):>20}  {shown:>8}  {verdict}")
    print()
    print("models each stage worked on in the run after adding one (worked on / taken from the cache or kept):")
    for stage in WORKED:
        counts = [worked(log).get(stage) for log in logs]
        shown = ", ".join("did not run" if c is None else f"{c[0]} / {c[1]}" for c in counts)
        print(f"  {stage:<9} {shown}")
    print("  ties      reads every model's inventory again (no per-model cache: config-only models cost no torch)")
    print()
    print("where the time goes (first run; each stage alone, `python -m pipeline.stages.<stage>`):")
    print(f"  {'stage':<10} {'cold':>8} {'cached':>8}")
    for stage in STAGES:
        print(f"  {stage:<10} {breakdown['cold'][stage]:>7.1f}s {breakdown['warm'][stage]:>7.1f}s")
    total_cold = sum(breakdown["cold"].values())
    print(f"  {'all':<10} {total_cold:>7.1f}s {sum(breakdown['warm'].values()):>7.1f}s")
    dvc_share = statistics.median(cold) - total_cold
    print(f"  DVC's own share of a cold run: {dvc_share:.1f} s (the cold dvc repro minus its stages run alone)")
    print()
    if all(identical):
        print("results/ and reports/ after adding one model byte-identical to a cold run of the same sweep")
    else:
        print("results/ or reports/ after adding one model DIFFER from a cold run of the same sweep:")
        print("\n".join(differ))
    print(during)


if __name__ == "__main__":
    main()
