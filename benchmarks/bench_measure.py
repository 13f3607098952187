"""Benchmark `hmp fit --measure` on the largest model of each family in the test corpus (issue 29).

Each model is one fresh process: `hmp fit CONFIG --context 8192 --measure --json` (the model's own positions if
fewer), which plans (the prefill and the decoding step measured on fake tensors, two blocks of each kind deep) and
then runs PyTorch's MemTracker over the plan's own largest run. Printed per model: the wall time of the process
(imports included), its peak memory, the plan's peak, and what that run held beyond its weights as the plan counted
it and as MemTracker did. One run each; the machine's load beside.

    python benchmarks/bench_measure.py [--quick]

--quick: the two smallest families only, at 1,024 tokens: a check that it runs.
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
# (family, the largest config of it the corpus holds, the context: 8,192 or the model's own positions if fewer)
FAMILIES = [
    ("convolution hybrid", "LiquidAI--LFM2-1.2B", 8192),
    ("state-space", "state-spaces--mamba-2.8b-hf", 8192),
    ("sliding window", "google--medgemma-27b-it", 8192),
    ("dense", "Qwen--Qwen2.5-72B", 8192),
    ("linear-attention hybrid, MoE", "Qwen--Qwen3-Next-80B-A3B-Thinking", 8192),
    ("dense, grouped multi-query", "tiiuae--falcon-180B-chat", 2048),
    ("latent attention, MoE", "deepseek-ai--DeepSeek-V3", 8192),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two smallest families at 1,024 tokens: a check")
    args = parser.parse_args()
    families = [(f, n, min(c, 1024)) for f, n, c in FAMILIES[:2]] if args.quick else FAMILIES
    load = MachineLoad()
    rows = []
    for family, name, context in families:
        argv = ["-m", "pipeline.cli.hmp", "fit", str(CORPUS / f"{name}.json"), "--context", str(context)]
        run = run_python([*argv, "--measure", "--json"], cwd=ROOT)
        wall = run.seconds
        r = json.loads(run.stdout)
        m = r.get("measured") or {}
        run_gib = f"{m['live'] / 2**30:,.2f} / {m['activations'] / 2**30:,.2f}" if m else "not measured"
        off = f"{(m['live'] - m['activations']) / m['activations'] * 100:+.2f} %" if m else "-"
        rows.append((family, name, context, r["total_params"], wall, run.peak_mib, r["peak_bytes"], run_gib, off))
    print(load.header)
    print("hmp fit --measure, batch 1, bfloat16: one fresh process per model\n")
    print(f"{'family':30s} {'model':36s} {'context':>8s} {'parameters':>17s} {'wall s':>7s} {'peak MiB':>9s} "
          f"{'plan peak GiB':>14s} {'run: plan / MemTracker GiB':>27s} {'apart':>8s}")  # fmt: skip
    for family, name, context, total, wall, mib, peak, run_gib, off in rows:
        print(f"{family:30s} {name:36s} {context:>8,} {total:>17,} {wall:>7.1f} {mib:>9.0f} {peak / 2**30:>14,.2f} "
              f"{run_gib:>27s} {off:>8s}")  # fmt: skip
    print(load.during())


if __name__ == "__main__":
    main()
