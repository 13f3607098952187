"""Benchmark `hmp fit --measure` on the largest model of each family in the test corpus (issue 29).

Each model is one fresh process: `hmp fit CONFIG --context 8192 --measure --json`, which plans (the prefill and the
decoding step measured on fake tensors, two blocks of each kind deep) and then runs PyTorch's MemTracker over every
block of the same prefill. Printed per model: the wall time of the process (imports included), its peak memory,
the plan's peak and MemTracker's, and how far apart they are. One run each; the machine's load beside.

    python benchmarks/bench_measure.py [--quick]

--quick: the two smallest families only, a check that it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, run_python  # noqa: E402

CORPUS = ROOT / "tests" / "support" / "config_corpus"
# (family, the largest config of it the corpus holds)
FAMILIES = [
    ("convolution hybrid", "LiquidAI--LFM2-1.2B"),
    ("state-space", "state-spaces--mamba-2.8b-hf"),
    ("sliding window", "google--medgemma-27b-it"),
    ("dense", "Qwen--Qwen2.5-72B"),
    ("linear-attention hybrid, MoE", "Qwen--Qwen3-Next-80B-A3B-Thinking"),
    ("dense, multi-query", "tiiuae--falcon-180B-chat"),
    ("latent attention, MoE", "deepseek-ai--DeepSeek-V3"),
]
CONTEXT = 8192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest families: a check that it runs")
    args = parser.parse_args()
    families = FAMILIES[:2] if args.quick else FAMILIES
    load = MachineLoad()
    rows = []
    for family, name in families:
        argv = ["-m", "pipeline.cli.hmp", "fit", str(CORPUS / f"{name}.json"), "--context", str(CONTEXT)]
        run = run_python([*argv, "--measure", "--json"], cwd=ROOT)
        wall = run.seconds
        r = json.loads(run.stdout)
        measured = (r.get("measured") or {}).get("peak")
        off = f"{(r['peak_bytes'] - measured) / measured * 100:+.2f} %" if measured else "not measured"
        rows.append((family, name, r["total_params"], wall, run.peak_mib, r["peak_bytes"], measured, off))
    print(load.header)
    print(f"hmp fit --measure at {CONTEXT:,} tokens, batch 1, bfloat16: one fresh process per model\n")
    print(f"{'family':30s} {'model':36s} {'parameters':>17s} {'wall s':>7s} {'peak MiB':>9s} "
          f"{'plan peak GiB':>14s} {'MemTracker GiB':>15s} {'plan vs MemTracker':>19s}")  # fmt: skip
    for family, name, total, wall, mib, peak, measured, off in rows:
        tracked = f"{measured / 2**30:,.2f}" if measured else "-"
        print(f"{family:30s} {name:36s} {total:>17,} {wall:>7.1f} {mib:>9.0f} {peak / 2**30:>14,.2f} "
              f"{tracked:>15s} {off:>19s}")  # fmt: skip
    print(load.during())


if __name__ == "__main__":
    main()
