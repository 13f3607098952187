"""Benchmark `hmp serve` (issue 31): a warm answer for each config (the server holds torch and transformers; the
second request for the same config and options is answered from what it keeps; a new context is computed), and
`hmp count CONFIG` through the running server (a fresh process: the console script, wall time), beside in-process
`hmp count CONFIG`, with the machine's load. Targets: a warm answer ≤ 300 ms, hmp count through the server ≤ 1 s.

    python benchmarks/bench_serve.py [--runs 5] [--quick]

--quick: GPT-2 only, two runs of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MachineLoad, spread  # noqa: E402

from tests.serve.server import Server  # noqa: E402

CORPUS = ROOT / "tests" / "support" / "config_corpus"
PUBLISHED = ROOT / "tests" / "support" / "published_configs"
CONFIGS = [PUBLISHED / "openai-community--gpt2.json", CORPUS / "meta-llama--Llama-3.1-8B.json",
           CORPUS / "deepseek-ai--DeepSeek-V3.json", CORPUS / "google--flan-t5-base.json"]  # fmt: skip
WARM_MS, CLI_S = 300, 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median [min–max] is printed)")
    parser.add_argument("--quick", action="store_true", help="GPT-2 only, two runs of each figure")
    args = parser.parse_args()
    configs = CONFIGS[:1] if args.quick else CONFIGS
    if args.quick:
        args.runs = 2
    load = MachineLoad()
    started = time.perf_counter()
    server = Server()
    start_s = time.perf_counter() - started
    hmp = shutil.which("hmp") or str(Path(sys.executable).with_name("hmp"))
    lines = [f"hmp serve: up and answering after {start_s:.1f} s (imports torch and transformers once)"]
    try:
        for path in configs:
            name, body = path.stem, path.read_bytes()
            t = time.perf_counter()
            status, _, _ = server.request("/api/count", body)
            cold = time.perf_counter() - t
            assert status == 200, name
            warm, fits = [], []
            for i in range(args.runs):
                t = time.perf_counter()
                server.request("/api/count", body)
                warm.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                status, _, _ = server.request("/api/fit", body, context=128 * (i + 1), batch=2)
                fits.append((time.perf_counter() - t) * 1000)
                assert status == 200, name
            ok = "ok" if max(warm) <= WARM_MS else "MISSED"
            lines += [f"{name}: first count {cold * 1000:,.0f} ms (builds it)",
                      f"  {'warm count, ms':44s} {spread(warm, '.1f'):>22s}  target ≤ {WARM_MS}: {ok}",
                      f"  {'hmp fit at a new context (computed), ms':44s} {spread(fits, '.0f'):>22s}"]  # fmt: skip
        config = configs[1] if len(configs) > 1 else configs[0]  # Llama-3.1-8B (GPT-2 with --quick)
        total = json.loads(server.request("/api/count", config.read_bytes())[2])["summary"]["total"]
        remote, local = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            run = subprocess.run([hmp, "count", str(config)], env={**os.environ, "HMP_SERVER": server.url},
                                 capture_output=True, text=True, check=True)  # fmt: skip
            remote.append(time.perf_counter() - t)
            assert f"{total:,} parameters" in run.stdout
        for _ in range(min(args.runs, 2)):
            env = {k: v for k, v in os.environ.items() if k != "HMP_SERVER"}
            t = time.perf_counter()
            subprocess.run([hmp, "count", str(config)], env=env, capture_output=True, text=True, check=True)
            local.append(time.perf_counter() - t)
        ok = "ok" if max(remote) <= CLI_S else "MISSED"
        lines += [f"hmp count {config.name}, wall time of the whole command",
                  f"  {'through the running server, s':44s} {spread(remote):>22s}  target ≤ {CLI_S:g}: {ok}",
                  f"  {'in-process (imports torch, transformers), s':44s} {spread(local):>22s}"]  # fmt: skip
        lines.append(f"server's resident memory after the runs: {server.rss_mib():,.0f} MiB")
    finally:
        server.stop()
    print(load.header)
    print("\n".join(lines))
    print(load.during())


if __name__ == "__main__":
    main()
