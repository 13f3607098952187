"""Benchmark `hmp flops` on the largest shipped model of each family (issue 30): wall time after imports and the
process's peak memory, each in a fresh process, with the machine's load.

Each model is counted at 4,096 tokens or its own positions where fewer (a model that scans is measured at 64): the
meta-device count, the closed form, and FlopCounterMode over the model's forward on fake tensors (two blocks of each
kind, each counted as often as its kind occurs; every token routed through k experts).

    python benchmarks/bench_flops.py [--runs 1] [--quick]

--quick: GPT-2 and Llama-3.1-8B only, one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, repeated, spread  # noqa: E402

CORPUS = ROOT / "tests" / "support" / "config_corpus"
PUBLISHED = ROOT / "tests" / "support" / "published_configs"
FAMILIES = {  # family: the largest config of it the project ships
    "GPT-2": PUBLISHED / "openai-community--gpt2.json",
    "Llama (dense, GQA)": CORPUS / "meta-llama--Llama-3.1-405B.json",
    "DeepSeek-V3 (MLA, MoE, shared experts)": CORPUS / "deepseek-ai--DeepSeek-V3.json",
    "Qwen3 (MoE)": CORPUS / "Qwen--Qwen3-235B-A22B.json",
    "Gemma 3 (sliding windows)": CORPUS / "google--gemma-3-1b-it.json",
    "Qwen2.5-VL (vision-language)": CORPUS / "Qwen--Qwen2.5-VL-7B-Instruct.json",
    "Mamba (state space)": CORPUS / "state-spaces--mamba-2.8b-hf.json",
    "Nemotron 3 (hybrid Mamba-2, MoE)": CORPUS / "nvidia--NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16.json",
    "Kimi K2 (MLA, MoE)": CORPUS / "moonshotai--Kimi-K2-Instruct.json",
    "T5 (encoder-decoder)": CORPUS / "google--t5-v1_1-xxl.json",
    "Whisper (speech encoder-decoder)": CORPUS / "openai--whisper-large-v3.json",
}
QUICK = ("GPT-2", "Llama (dense, GQA)")

SNIPPET = """
import sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import torch, transformers
from pipeline.answers import flops
imports = time.perf_counter() - t0
t1 = time.perf_counter()
r = flops.flops(sys.argv[2], flops.FlopsOptions(context=int(sys.argv[3])))
print(imports, time.perf_counter() - t1, r["total_params"], r["forward_flops_per_token"], r["context"],
      r["components"]["other_products"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per model (median [min–max] is printed)")
    parser.add_argument("--quick", action="store_true", help="GPT-2 and Llama-3.1-405B only, one run")
    args = parser.parse_args()
    families = {k: v for k, v in FAMILIES.items() if not args.quick or k in QUICK}
    load = MachineLoad()
    lines = []
    for family, path in families.items():
        limit = "1024" if "gpt2" in path.name else "448" if "whisper" in path.name else "4096"  # their positions
        r = repeated(["-c", SNIPPET, str(ROOT), str(path), limit], 1 if args.quick else args.runs, family)
        imports, secs, rss, (total, per_token, context, other) = r.imports, r.seconds, r.peak_mib, r.answer
        unnamed = f" ({other:,} of them products the closed form does not name)" if other else ""
        lines.append(f"{family}: {path.stem} ({total:,} parameters) at {context:,} tokens: {per_token:,} FLOPs per "
                     f"token{unnamed}")  # fmt: skip
        lines.append(f"  {'imports (torch, transformers), s':40s} {spread(imports):>22s}")
        lines.append(f"  {'hmp flops after imports, s':40s} {spread(secs):>22s}")
        lines.append(f"  {'peak RSS of the process, MiB':40s} {spread(rss, '.0f'):>22s}")
    print(load.header)
    print("\n".join(lines))
    print(load.during())


if __name__ == "__main__":
    main()
