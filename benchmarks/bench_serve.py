"""Benchmark `hmp serve` (issue 31): how soon it answers after start; for every config of the project's corpus of
published config.json files (tests/support/config_corpus, each new to the server) the time of its first count, fit
and FLOPs, of a fit at a new context and of an answer it keeps; and `hmp count CONFIG` through the running server (a
fresh process: the console script, wall time) beside in-process `hmp count CONFIG`, with the machine's load.
Targets: a warm answer ≤ 300 ms, hmp count through the server ≤ 1 s.

    python benchmarks/bench_serve.py [--runs 5] [--quick]

--quick: GPT-2 and three configs of the corpus, two runs of the command-line figures.
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
GPT2 = PUBLISHED / "openai-community--gpt2.json"
LLAMA = CORPUS / "meta-llama--Llama-3.1-8B.json"
QUICK = [GPT2, LLAMA, CORPUS / "deepseek-ai--DeepSeek-V3.json", CORPUS / "google--flan-t5-base.json"]
WARM_MS, CLI_S = 300, 1.0


def corpus() -> list[Path]:
    return [GPT2] + sorted(p for p in CORPUS.glob("*.json") if p.stem.count("--") == 1)


def timed(server: Server, path: str, body: bytes, **query: object) -> tuple[float, int]:
    t = time.perf_counter()
    status, _, _ = server.request(path, body, **query)
    return (time.perf_counter() - t) * 1000, status


def first_answers(server: Server, configs: list[Path]) -> list[str]:
    """Each config asked once of each question (new to the server), then a fit at a new context, then a kept one."""
    rows: dict[str, list[tuple[float, str, int]]] = {k: [] for k in ("count", "fit", "flops", "new", "kept")}
    for path in configs:
        body, name = path.read_bytes(), path.stem
        for question in ("count", "fit", "flops"):
            ms, status = timed(server, f"/api/{question}", body)
            rows[question].append((ms, name, status))
        ms, status = timed(server, "/api/fit", body, context=1000, batch=3)
        rows["new"].append((ms, name, status))
        ms, status = timed(server, "/api/count", body)
        rows["kept"].append((ms, name, status))
    labels = {"count": "count, first asked", "fit": "fit at its own context, first asked",
              "flops": "FLOPs at its own context, first asked", "new": "fit at a new context (1,000 × 3)",
              "kept": "count asked again (kept)"}  # fmt: skip
    lines = [f"every config new to the server ({len(configs)}: the corpus and GPT-2), one request each, ms:"]
    for key, found in rows.items():
        times = [ms for ms, _, _ in found]
        over = sorted((ms, name) for ms, name, _ in found if ms > WARM_MS)
        refused = sum(status != 200 for _, _, status in found)
        lines.append(f"  {labels[key]:44s} {spread(times, '.0f'):>22s}  ≤ {WARM_MS}: {len(found) - len(over)} of "
                     f"{len(found)}" + (f" ({refused} refused, each its one line)" if refused else ""))  # fmt: skip
        if over:
            lines.append("    over: " + ", ".join(f"{name} {ms:,.0f}" for ms, name in over[::-1][:6])
                         + (f" and {len(over) - 6} more" if len(over) > 6 else ""))  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median [min–max] is printed)")
    parser.add_argument("--quick", action="store_true", help="GPT-2 only, two runs of each figure")
    args = parser.parse_args()
    configs = QUICK if args.quick else corpus()
    if args.quick:
        args.runs = 2
    load = MachineLoad()
    started = time.perf_counter()
    server = Server()
    start_s = time.perf_counter() - started
    hmp = shutil.which("hmp") or str(Path(sys.executable).with_name("hmp"))
    lines = [
        f"hmp serve: up and answering after {start_s:.1f} s (imports torch and transformers, asks a small GPT-2 once)"
    ]
    try:
        ms, status = timed(server, "/api/count", GPT2.read_bytes() + b"\n")  # new bytes: GPT-2 is asked below
        assert status == 200
        lines.append(f"its first answer after start: count of {GPT2.stem}, {ms:,.0f} ms")
        lines += first_answers(server, configs)
        config = LLAMA
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
