"""Benchmark the checkpoint paths on a synthetic checkpoint with GPT-2 XL's real shapes (6.4 GB, fp32, random).

Prints one table:
  (a) the course's method (from_pretrained, then sum(p.numel())) against the project's count
      (meta-device build; safetensors headers), in time and peak RSS, each in a fresh process;
  (b) the value-statistics pass against a raw read of the same file (`cat file > /dev/null`, page cache warm),
      as ratios from the same run: moments and embedding correlation, and the full distributions pass;
  (c) bytes fetched by the range-read path (counting; tie analysis) against a full download, through a
      local HTTP server on 127.0.0.1 that counts the bytes it serves.
Each figure is the median of --runs runs. The checkpoint is generated once into the system temp folder
(HMP_BENCH_CACHE to move it) and reused.

    python benchmarks/bench_values.py [--runs 3] [--model gpt2-xl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic import gpt2_checkpoint  # noqa: E402

# Each snippet imports first, then times only its counting step, and prints "count seconds".
COURSE = """
import sys, time
import torch, transformers
from transformers import AutoModelForCausalLM
t = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True)
print(sum(p.numel() for p in model.parameters()), time.perf_counter() - t)
"""
PROJECT_META = """
import sys, time
from pathlib import Path
import torch, transformers
from pipeline import inventory
t = time.perf_counter()
config = inventory.load_config(Path(sys.argv[1]), "m")
total = inventory.summarize(inventory.inventory(inventory.build_meta(config, "m"), "m"))["total"]
print(total, time.perf_counter() - t)
"""
PROJECT_HEADERS = """
import sys, time
from pathlib import Path
import torch, transformers
from pipeline import checkpoint, inventory
t = time.perf_counter()
folder = Path(sys.argv[1])
model = inventory.build_meta(inventory.load_config(folder, "m"), "m")
rec = checkpoint.reconcile(model, checkpoint.load_entries(folder)[0], "m")
print(rec.checkpoint_tensors - sum(e.numel for e, _ in rec.buffers), time.perf_counter() - t)
"""


def run_measured(code: str, arg: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of `python -c code arg` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, arg], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out = proc.stdout.read().decode().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {proc.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, out


def raw_read(path: Path) -> float:
    start = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", str(path)], stdout=null, check=True)
    return time.perf_counter() - start


def value_pass(folder: Path, bins: int) -> tuple[float, float]:
    """(seconds of the distributions pass, seconds of the embedding correlation) in this process."""
    import pandas as pd

    from pipeline import checkpoint, inventory, values

    entries, _ = checkpoint.load_entries(folder)
    model = inventory.build_meta(inventory.load_config(folder, "m"), "m")
    rec = checkpoint.reconcile(model, entries, "m")
    inv = inventory.parameters(inventory.with_checkpoint(inventory.inventory(model, "m"), model, rec))
    start = time.perf_counter()
    values.distributions(folder, entries, inv, "m", -1.0, 1.0, bins)
    dist = time.perf_counter() - start
    key = inv.loc[inv["is_input_embedding"], "checkpoint_key"].iloc[0]
    start = time.perf_counter()
    acc = values.correlate_stored(values.Reader(folder, entries), key, key)
    corr = time.perf_counter() - start
    assert acc.pearson_r == 1.0
    del pd
    return dist, corr


def range_bytes(folder: Path) -> dict[str, int]:
    """Bytes the download stage fetches with fetch: range, and bytes of a header-only count, via a local server."""
    import yaml

    from pipeline import remote
    from tests.conftest import tiny_params
    from tests.http_range_server import RangeServer

    sha = "0" * 40
    with tempfile.TemporaryDirectory(prefix="bench-range-") as tmp, RangeServer(folder, "bench/model", sha) as server:
        rf = remote.RangeFile(f"{server.endpoint}/bench/model/resolve/{sha}/model.safetensors")
        remote.read_header(rf)
        header_bytes = rf.bytes_fetched
        work = Path(tmp)
        (work / "conf").symlink_to(ROOT / "conf")
        models = {"m": {"source": "hub", "hub_id": "bench/model", "revision": sha, "fetch": "range"}}
        (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(models), sort_keys=False))
        before = server.bytes_served
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": server.endpoint, "HF_HUB_OFFLINE": "0"}
        subprocess.run([sys.executable, "-m", "pipeline.download", "m"], cwd=work, env=env, check=True,
                       capture_output=True)  # fmt: skip
        prov = json.loads((work / "data/models/m/provenance.json").read_text())
        assert prov["bytes_fetched"] == server.bytes_served - before
    return {"header": header_bytes, "tie": prov["bytes_fetched"], "file": prov["checkpoint_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is printed)")
    parser.add_argument("--model", default="gpt2-xl", choices=["gpt2", "gpt2-xl"], help="which GPT-2 shapes")
    args = parser.parse_args()
    folder = gpt2_checkpoint(args.model)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    med = statistics.median

    course, meta, headers = [], [], []
    for _ in range(args.runs):
        course.append(run_measured(COURSE, str(folder)))
        meta.append(run_measured(PROJECT_META, str(folder)))
        headers.append(run_measured(PROJECT_HEADERS, str(folder)))
    counts = {r[2].split()[0] for r in course + meta + headers}
    assert len(counts) == 1, f"the three methods disagree: {counts}"

    raw_read(weights)  # warm the page cache
    reads, moments, full, corr = [], [], [], []
    for _ in range(args.runs):
        reads.append(raw_read(weights))
        m, c = value_pass(folder, bins=0)
        moments.append(m)
        corr.append(c)
        full.append(value_pass(folder, bins=100)[0])
        reads.append(raw_read(weights))
    fetched = range_bytes(folder)
    raw = med(reads)

    print(f"checkpoint: {args.model} shapes, fp32, {size / 1e9:.2f} GB, {counts.pop()} parameters; {args.runs} runs")
    print()
    print("(a) counting, fresh process each            process (s)   count step (s)   peak RSS (MB)")
    for label, rows in (
        ("course: from_pretrained + sum(numel)", course),
        ("project: meta-device build", meta),
        ("project: safetensors headers + reconcile", headers),
    ):
        step = med(float(r[2].split()[1]) for r in rows)
        print(f"    {label:<42} {med(r[0] for r in rows):>11.2f}   {step:>14.2f}   {med(r[1] for r in rows):>13.0f}")
    print()
    print("(b) value statistics, page cache warm         time (s)   × raw read   target ≤ 2×")
    print(f"    raw read (cat file > /dev/null)            {raw:>8.2f}   {1.0:>10.2f}")
    wte = 50257 * (1600 if args.model == "gpt2-xl" else 768) * 4
    for label, t, scale in (
        ("moments of every tensor (bins: 0)", med(moments), 1.0),
        ("embedding correlation (wte against itself)", med(corr), size / (2 * wte)),
        ("distributions with 100-bin histograms", med(full), 1.0),
    ):
        ratio = t / raw * scale
        note = " (against reading its 2 × wte bytes)" if scale != 1.0 else ""
        verdict = "ok" if ratio <= 2 else "MISSED"
        print(f"    {label:<42} {t:>8.2f}   {ratio:>10.2f}   {verdict}{note}")
    print()
    print("(c) bytes over HTTP (local Range server)      bytes           share of the file")
    print(f"    full download                              {fetched['file']:>13,}   100.00 %")
    for label, n, limit in (
        ("count from headers", fetched["header"], "≤ 1 MB"),
        ("tie analysis (config, headers, wte)", fetched["tie"], "≤ 10 %"),
    ):
        print(f"    {label:<42} {n:>13,}   {100 * n / fetched['file']:>6.2f} %   target {limit}")


if __name__ == "__main__":
    main()
