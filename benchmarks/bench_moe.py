"""Benchmark counting the largest shipped mixture of experts, DeepSeek-V3 (671B), from its config alone.

Each run is a fresh process that imports torch and transformers (timed apart), then builds the model on
the meta device from conf/model/deepseek-v3.yaml, takes the inventory and the total and active counts
(the count stage's own functions), and reports its own peak memory. Printed as median [min–max].

    python benchmarks/bench_moe.py [--runs 3] [--quick]

--quick: one run, a check that it runs (DeepSeek-V3 stays: built on the meta device, it is the quick part).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, run_python, spread  # noqa: E402

TARGETS = {"seconds": 10.0, "rss_mib": 1536.0}  # after imports; the aim for a 671B model

SNIPPET = """
import sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import torch, transformers
from transformers import AutoConfig
from pipeline.model import inventory, moe
from pipeline.model import build
from pipeline.core import params
from pipeline.core import compose
imports = time.perf_counter() - t0
t1 = time.perf_counter()
entry = compose.compose(["sweep=dense-vs-moe"], conf_dir=sys.argv[1] + "/conf")["models"]["deepseek-v3"]
arch = dict(entry["architecture"])
config = AutoConfig.for_model(arch.pop("model_type"), **arch)
model = build.build_meta(config, "deepseek-v3")
inv = inventory.inventory(model, "deepseek-v3")
_, top_k = moe.settings(config, moe.structure(model), "deepseek-v3")
s = inventory.summarize(inv, top_k)
print(imports, time.perf_counter() - t1, s["total"], s["active"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs (median [min–max] is printed; default 3)")
    parser.add_argument("--quick", action="store_true", help="one run: a check that it runs")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    load = MachineLoad()
    imports, counting, rss, totals = [], [], [], set()
    for _ in range(args.runs):
        run = run_python(["-c", SNIPPET, str(ROOT)])
        imp, secs, total, active = run.stdout.split()
        imports.append(float(imp))
        counting.append(float(secs))
        rss.append(run.peak_mib)
        totals.add((int(total), int(active)))
    (total, active), *others = sorted(totals)
    assert not others, f"runs disagree: {totals}"
    print(load.header)
    print(f"DeepSeek-V3 from its config: {total:,} parameters, {active:,} active per token; {args.runs} runs\n")
    print(f"{'measure':44s} {'median [min–max]':>22s} {'target':>9s}  verdict")
    rows = [
        ("imports (torch, transformers), s", imports, None, ".2f"),
        ("build on meta + inventory + counts, s", counting, TARGETS["seconds"], ".2f"),
        ("peak RSS of the process, MiB", rss, TARGETS["rss_mib"], ".0f"),
    ]
    for label, values, target, fmt in rows:
        verdict = "" if target is None else ("ok" if sorted(values)[len(values) // 2] <= target else "MISSED")
        shown = "" if target is None else f"≤ {target:g}"
        print(f"{label:44s} {spread(values, fmt):>22s} {shown:>9s}  {verdict}")
    print()
    print(load.during())


if __name__ == "__main__":
    main()
