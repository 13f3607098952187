"""Benchmark `hmp fit` on the largest shipped model, DeepSeek-V3 (671B), from its config alone (issue 21).

Each run is a fresh process: imports (torch, transformers and DeepSeek-V3's modelling module) timed apart, then
the whole plan `hmp fit` prints (the meta-device count, the cache layers, and the searches for the largest
context and batch that fit), and the process's peak memory. Printed as median [min–max], per engine (issue 29:
transformers, vLLM, llama.cpp; llama.cpp splits layers, so it plans 32 GPUs without TP or EP).

    python benchmarks/bench_fit.py [--runs 3] [--quick] [--engines transformers,vllm,llama.cpp]

--quick: one run, a check that it runs (DeepSeek-V3 stays: from its config alone, it is the quick part).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, repeated, spread  # noqa: E402

TARGET_SECONDS = 3.0  # the issue: hmp fit of the largest shipped model under 3 s after imports

SNIPPET = """
import json, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import torch, transformers, yaml
from pipeline.answers import fit
transformers.DeepseekV3ForCausalLM  # the family's module, loaded lazily
imports = time.perf_counter() - t0
entry = yaml.safe_load((Path(sys.argv[1]) / "conf/model/deepseek-v3.yaml").read_text())
config = Path(tempfile.mkdtemp()) / "config.json"
config.write_text(json.dumps(entry["architecture"]))
engine = sys.argv[2]
split = {"tp": 1, "ep": 1} if engine == "llama.cpp" else {"tp": 8, "ep": 32}
options = {"context": 32768, "batch": 8, "dtype": "bfloat16", "kv_dtype": "bfloat16", "gpu_memory": "80GB",
           "gpus": 32, **split, "train": None, "lora_rank": 16, "lora_targets": [], "checkpointing": False,
           "engine": engine}
t1 = time.perf_counter()
r = fit.plan(str(config), fit.FitOptions.of(options)).as_json()
print(imports, time.perf_counter() - t1, r["total_params"], r["bytes_per_gpu"], r["max_context"], r["max_batch"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs (median [min–max] is printed; default 3)")
    parser.add_argument("--quick", action="store_true", help="one run: a check that it runs")
    parser.add_argument("--engines", default="transformers,vllm,llama.cpp", help="engines, comma-separated")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    engines = [e for e in args.engines.split(",") if e]
    load = MachineLoad()
    results = {}
    for engine in engines:
        r = repeated(["-c", SNIPPET, str(ROOT), engine], args.runs, engine)
        results[engine] = (r.imports, r.seconds, r.peak_mib, *r.answer)
    print(load.header)
    for engine, (imports, secs, rss, total, per_gpu, longest, batch) in results.items():
        split = "no TP or EP (layers split)" if engine == "llama.cpp" else "TP 8, EP 32"
        print(
            f"hmp fit deepseek-v3 --engine {engine} ({total:,} parameters), 32k context × 8 on 32 GPUs of 80GB, "
            f"{split}; {args.runs} runs"
        )
        print(f"  per GPU {per_gpu / 2**30:,.2f} GiB; largest context {longest:,}; largest batch {batch:,}")
        median = sorted(secs)[len(secs) // 2]
        print(f"  {'imports (torch, transformers, the family), s':44s} {spread(imports):>22s}")
        print(
            f"  {'hmp fit after imports, s':44s} {spread(secs):>22s}  target ≤ {TARGET_SECONDS:g}: "
            f"{'ok' if median <= TARGET_SECONDS else 'MISSED'}"
        )
        print(f"  {'peak RSS of the process, MiB':44s} {spread(rss, '.0f'):>22s}\n")
    print(load.during())


if __name__ == "__main__":
    main()
