"""Benchmark counting a GGUF file with Gemma's 262,144-token vocabulary, against gguf's and transformers' readers.

The file is a tied Llama as llama.cpp writes one: every token string, score and token type of the
vocabulary, and tiny tensors (d = 8, one block), so reading the metadata is all the work there is. Each
figure is a fresh process (benchmarks/measure.py: wall time with the interpreter start and imports, and
its own peak RSS), median [min–max] over --runs runs:
  hmp count FILE --json: the whole count (header, config, meta-device build, reconcile, tie check), and the
    same on the same model with a 64-token vocabulary: the difference, taken per run, is what the
    vocabulary costs (the rest is importing torch and transformers, about 3 s, and counting);
  the project's header reader alone (pipeline/gguf_header.read), timed after its imports;
  gguf.GGUFReader(FILE), what the pipeline used to read tensors with, timed after its imports;
  transformers' load_gguf_checkpoint(FILE, return_tensors=False), what it used for the config.
The files are written into a temporary folder, removed when the benchmark ends.

    python benchmarks/bench_gguf.py [--runs 3] [--vocab 262144] [--quick]

--quick: one run on a 4,096-token vocabulary, a check that it runs (the figures are not the benchmark's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import MachineLoad, Run, run_python, spread  # noqa: E402

TARGET_SECONDS = 1.0  # what the vocabulary may add to hmp count (gguf's reader alone takes ~18 s on it)

# Each snippet imports first, then times only its reading step, and prints "vocab_size seconds".
OURS = """
import sys, time
from pathlib import Path
from pipeline.formats import gguf_file, gguf_header
import transformers.modeling_gguf_pytorch_utils
t = time.perf_counter()
config = gguf_file.config([Path(sys.argv[1])])
print(config["vocab_size"], time.perf_counter() - t)
"""
GGUF_READER = """
import sys, time
import gguf
t = time.perf_counter()
reader = gguf.GGUFReader(sys.argv[1])
print(len(reader.fields["tokenizer.ggml.tokens"].data), time.perf_counter() - t)
"""
TRANSFORMERS = """
import sys, time
import torch, gguf
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
t = time.perf_counter()
config = load_gguf_checkpoint(sys.argv[1], return_tensors=False)["config"]
print(config["vocab_size"], time.perf_counter() - t)
"""

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per figure (median [min–max] is printed; default 3)")
    parser.add_argument("--vocab", type=int, help="tokens in the vocabulary (default Gemma's: 262,144)")
    parser.add_argument("--quick", action="store_true", help="one run on a 4,096-token vocabulary")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.vocab is None:
        args.vocab = 4096 if args.quick else 262_144
    from pipeline.model import formulas  # after the arguments: --help answers without importing torch
    from tests.formats.test_gguf_file import write_vocab_gguf

    load = MachineLoad()  # before the runs: the load of everything else
    expected = formulas.llama_params(args.vocab, 8, 1, 16, 2, 1, tied=True)  # the file's closed form
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        path = write_vocab_gguf(Path(tmp) / "vocab.gguf", args.vocab)
        small = write_vocab_gguf(Path(tmp) / "small.gguf", 64)
        size = path.stat().st_size
        rows: dict[str, list[Run]] = {"hmp": [], "hmp64": [], "ours": [], "gguf": [], "transformers": []}
        for _ in range(args.runs):  # interleaved, so a busy moment does not fall on one method only
            for key, file in (("hmp", path), ("hmp64", small)):
                rows[key].append(
                    run_python(["-m", "pipeline.cli.hmp", "count", str(file), "--json"], cwd=ROOT, env=ENV)
                )
            for key, code in (("ours", OURS), ("gguf", GGUF_READER), ("transformers", TRANSFORMERS)):
                rows[key].append(run_python(["-c", code, str(path)], cwd=ROOT, env=ENV))
    during = load.during()

    totals = {json.loads(r.stdout)["summary"]["total"] for r in rows["hmp"]}
    assert totals == {expected}, f"hmp count gave {totals}, the closed form {expected:,}"
    vocab = {int(r.stdout.split()[0]) for key in ("ours", "gguf", "transformers") for r in rows[key]}
    assert vocab == {args.vocab}, f"the readers disagree on the vocabulary: {vocab}"

    print(load.header)
    print(f"GGUF with a {args.vocab:,}-token vocabulary (tokens, scores, token types), tiny tensors, "
          f"{size / 1e6:.1f} MB; {expected:,} parameters; {args.runs} runs, each figure median [min–max]")  # fmt: skip
    print()
    print(f"{'fresh process each':<52}{'process (s)':>20}  {'read step (s)':>20}  {'peak RSS (MiB)':>18}")
    labels = {
        "hmp": "hmp count FILE --json (the whole count)",
        "hmp64": "hmp count, the same model with 64 tokens",
        "ours": "project: gguf_header + gguf_file.config",
        "gguf": "gguf.GGUFReader(FILE)",
        "transformers": "transformers load_gguf_checkpoint(FILE)",
    }
    for key, label in labels.items():
        step = "-" if key.startswith("hmp") else spread(float(r.stdout.split()[1]) for r in rows[key])
        print(f"{label:<52}{spread(r.seconds for r in rows[key]):>20}  {step:>20}  "
              f"{spread((r.peak_mib for r in rows[key]), '.0f'):>18}")  # fmt: skip
    cost = [big.seconds - base.seconds for big, base in zip(rows["hmp"], rows["hmp64"], strict=True)]
    verdict = "ok" if statistics.median(cost) <= TARGET_SECONDS else "MISSED"
    print()
    print(f"what the {args.vocab:,}-token vocabulary adds to hmp count: {spread(cost)} s, "
          f"target ≤ {TARGET_SECONDS:g} s: {verdict}")  # fmt: skip
    print(during)


if __name__ == "__main__":
    main()
