"""Benchmark the checkpoint paths on a synthetic checkpoint with GPT-2 XL's real shapes (6.4 GB, fp32, random).

Prints one table, headed by the machine's load average and core count (taken before the runs) and closed by
what other processes used during the runs:
  (a) the course's method (from_pretrained, then sum(p.numel())) against the project's count
      (meta-device build; safetensors headers), in time and peak RSS, each in a fresh process that reads
      its own peak memory (benchmarks/measure.py); the ratio to the course's count step is taken per run;
  (b) the value-statistics pass against a raw read of the same file (`cat file > /dev/null`, page cache warm),
      as ratios to the raw reads just before and after it in the same run: moments and embedding
      correlation, and the full distributions pass;
  (c) bytes fetched by the range-read path (counting; tie analysis) against a full download, through a
      local HTTP server on 127.0.0.1 that counts the bytes it serves.
Each timed figure is median [min–max] over --runs runs. The checkpoint is generated once into a
folder under the project, .bench/ (HMP_BENCH_CACHE to move it; `make clean` removes it), and reused.

    python benchmarks/bench_values.py [--runs 3] [--model gpt2-xl] [--quick]

--quick: one run on a tiny GPT-2-shaped checkpoint (synthetic.SHAPES["tiny"], under 1 MB): every path above, the
figures meaningless (the ≤ 2× targets are not met on so small a file), the counts still checked.
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

from measure import MachineLoad, Run, run_python, spread, timed  # noqa: E402
from synthetic import POSITIONS, SHAPES, VOCAB, gpt2_checkpoint  # noqa: E402

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
from pipeline.model import inventory
from pipeline.model import build
from pipeline.model import config_file
t = time.perf_counter()
config = config_file.load_config(Path(sys.argv[1]), "m")
total = inventory.summarize(inventory.inventory(build.build_meta(config, "m"), "m"))["total"]
print(total, time.perf_counter() - t)
"""
PROJECT_HEADERS = """
import sys, time
from pathlib import Path
import torch, transformers
from pipeline.formats import safetensors_file
from pipeline import formats
from pipeline.model import reconcile
from pipeline.model import inventory
from pipeline.model import build, config_file
t = time.perf_counter()
folder = Path(sys.argv[1])
model = build.build_meta(config_file.load_config(folder, "m"), "m")
rec = reconcile.reconcile(model, formats.load_entries(folder)[0], "m")
print(rec.entry_values - sum(e.numel for e, _ in rec.buffers), time.perf_counter() - t)
"""


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def count(code: str, folder: Path) -> Run:
    """A counting snippet in a fresh process: its wall time, its own peak RSS, and 'count seconds' on stdout."""
    return run_python(["-c", code, str(folder)], env=ENV)


def hist_every() -> int:
    """The default histogram sample stride, as conf/config.yaml sets it."""
    import yaml

    return int(yaml.safe_load((ROOT / "conf/config.yaml").read_text())["values"]["hist_every"])


def raw_read(path: Path) -> float:
    with open(os.devnull, "wb") as null:
        return timed(lambda: subprocess.run(["cat", str(path)], stdout=null, check=True))


def value_pass(folder: Path, bins: int, every: int = 1) -> tuple[float, float]:
    """(seconds of the distributions pass, seconds of the embedding correlation) in this process."""
    import pandas as pd

    from pipeline import formats
    from pipeline.model import build, config_file, inventory, reconcile
    from pipeline.values import correlate, distributions, reader

    entries, _ = formats.load_entries(folder)
    model = build.build_meta(config_file.load_config(folder, "m"), "m")
    rec = reconcile.reconcile(model, entries, "m")
    inv = inventory.parameters(inventory.with_checkpoint(inventory.inventory(model, "m"), model, rec))
    start = time.perf_counter()
    distributions.distributions(folder, entries, inv, "m", bins, every=every)
    dist = time.perf_counter() - start
    key = inv.loc[inv["is_input_embedding"], "checkpoint_key"].iloc[0]
    start = time.perf_counter()
    acc = correlate.correlate_stored(reader.Reader(folder, entries), key, key)
    corr = time.perf_counter() - start
    assert acc.pearson_r == 1.0
    del pd
    return dist, corr


def range_bytes(folder: Path) -> dict[str, int]:
    """Bytes the download stage fetches with fetch: range, and bytes of a header-only count, via a local server."""
    import yaml
    from huggingface_hub import constants

    from pipeline.formats import remote
    from tests.conftest import tiny_params
    from tests.support.http_range_server import RangeServer

    constants.HF_HUB_OFFLINE = False  # huggingface_hub's client talks to the local server only, as the child does
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
        subprocess.run([sys.executable, "-m", "pipeline.stages.download", "m"], cwd=work, env=env, check=True,
                       capture_output=True)  # fmt: skip
        prov = json.loads((work / "data/models/m/provenance.json").read_text())
        assert prov["bytes_fetched"] == server.bytes_served - before
    return {"header": header_bytes, "tie": prov["bytes_fetched"], "file": prov["checkpoint_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per figure (median [min–max] is printed; default 3)")
    parser.add_argument("--model", choices=sorted(SHAPES), help="which GPT-2 shapes (default gpt2-xl)")
    parser.add_argument("--quick", action="store_true", help="one run on the tiny shapes: a check that it runs")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.model is None:
        args.model = "tiny" if args.quick else "gpt2-xl"
    load = MachineLoad()  # before the runs: the load of everything else
    folder = gpt2_checkpoint(args.model)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size

    course, meta, headers = [], [], []
    for _ in range(args.runs):  # interleaved: the ratio to the course's method is taken within each run
        course.append(count(COURSE, folder))
        meta.append(count(PROJECT_META, folder))
        headers.append(count(PROJECT_HEADERS, folder))
    counts = {r.stdout.split()[0] for r in course + meta + headers}
    assert len(counts) == 1, f"the three methods disagree: {counts}"

    raw_read(weights)  # warm the page cache
    every = hist_every()
    reads, moments, corr, full, exact = [], [], [], [], []
    for _ in range(args.runs):  # read, moments + correlation, read, histograms, read, exact histograms, read
        before = raw_read(weights)
        m, c = value_pass(folder, bins=0)
        between = raw_read(weights)
        f = value_pass(folder, bins=100, every=every)[0]
        after = raw_read(weights)
        e = value_pass(folder, bins=100, every=1)[0]
        last = raw_read(weights)
        reads += [before, between, after, last]
        moments.append((m, m / ((before + between) / 2)))
        corr.append((c, c / ((before + between) / 2)))
        full.append((f, f / ((between + after) / 2)))
        exact.append((e, e / ((after + last) / 2)))
    during = load.during()
    fetched = range_bytes(folder)

    print(load.header)
    print(f"checkpoint: {args.model} shapes, fp32, {size / 1e9:.2f} GB, {counts.pop()} parameters; "
          f"{args.runs} runs, each figure median [min–max]")  # fmt: skip
    print()
    print(f"(a) counting, fresh process each              {'process (s)':>19}  {'count step (s)':>19}  "
          f"{'step × course':>19}  {'peak RSS (MiB)':>15}")  # fmt: skip
    for label, rows in (
        ("course: from_pretrained + sum(numel)", course),
        ("project: meta-device build", meta),
        ("project: safetensors headers + reconcile", headers),
    ):
        step = [float(r.stdout.split()[1]) for r in rows]
        ratio = [s / float(c.stdout.split()[1]) for s, c in zip(step, course, strict=True)]
        print(f"    {label:<42}{spread(r.seconds for r in rows):>19}  {spread(step):>19}  "
              f"{spread(ratio, '.3f'):>19}  {spread((r.peak_mib for r in rows), '.0f'):>15}")  # fmt: skip
    print()
    print(f"(b) value statistics, page cache warm         {'time (s)':>19}  {'× raw read':>19}  target ≤ 2×")
    print(f"    {'raw read (cat file > /dev/null)':<42}{spread(reads):>19}  {'1.00':>19}")
    shape = {"vocab_size": VOCAB, "n_positions": POSITIONS, **SHAPES[args.model]}
    wte = shape["vocab_size"] * shape["n_embd"] * 4
    for label, rows, scale in (
        ("moments of every tensor (bins: 0)", moments, 1.0),
        ("embedding correlation (wte against itself)", corr, size / (2 * wte)),
        (f"histograms too (every {every}th value, default)", full, 1.0),
        ("histograms of every value (hist_every: 1)", exact, 1.0),
    ):
        ratios = [r * scale for _, r in rows]
        note = " (against reading its 2 × wte bytes)" if scale != 1.0 else ""
        verdict = "ok" if statistics.median(ratios) <= 2 else "MISSED"
        verdict = "reference: exact counts" if rows is exact else verdict
        print(f"    {label:<42}{spread(t for t, _ in rows):>19}  {spread(ratios):>19}  {verdict}{note}")
    print()
    print("(c) bytes over HTTP (local Range server)                  bytes   share of the file")
    print(f"    {'full download':<42}{fetched['file']:>16,}   100.00 %")
    for label, n, limit in (
        ("count from headers", fetched["header"], "≤ 1 MB"),
        ("tie analysis (config, headers, wte)", fetched["tie"], "≤ 10 %"),
    ):
        print(f"    {label:<42}{n:>16,}   {100 * n / fetched['file']:>6.2f} %   target {limit}")
    print()
    print(during)


if __name__ == "__main__":
    main()
