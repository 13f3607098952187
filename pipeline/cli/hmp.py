"""`hmp`: count any model in one command, or add it to the pipeline's sweep.

    hmp count SOURCE [--revision REV] [--json] [--per-layer]
    hmp fit SOURCE [--context N] [--batch B] [--gpu-memory 80GB] [--gpus N] [--tp N] [--train full|lora|qlora]
    hmp add NAME SOURCE [--revision REV] [--sweep SWEEP] [--stated-size 117M]
    hmp census LIST -o OUT.csv [--workers N] [--threads T] [--scheduler ADDRESS]

SOURCE is a config.json file, a checkpoint folder (safetensors, or a GGUF file or folder), or a Hub id
(`openai-community/gpt2`). `count` runs the stages' own library on it (the download stage's source
checks and links, the count stage's inventory, reconciliation and conventions, the ties stage's
evidence, the bias stage's split) in a temporary folder, and prints what the report would say of it.
`add` writes conf/model/NAME.yaml (a Hub id pinned to the commit it resolved), lists it in a sweep and
rewrites params.yaml, so `dvc repro` counts it with the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from pipeline.core.errors import PipelineError, first_line

log = logging.getLogger("hmp")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hmp", description="Exact parameter counts of any transformer.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    c = _sourced(sub, "count", "count a config.json, a checkpoint folder, a .gguf file or a Hub id")
    c.add_argument("--json", action="store_true", help="print JSON for scripts")
    c.add_argument("--per-layer", action="store_true", help="also a torchinfo-style table of modules and blocks")
    c.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    f = _sourced(sub, "fit", "will it fit? memory for inference or fine-tuning, per GPU and in total", sized=True)
    f.add_argument(
        "--dtype",
        help="every weight in this dtype (default: as the checkpoint or its quantization_config stores them, "
        "else bfloat16)",
    )
    f.add_argument(
        "--measure",
        action="store_true",
        help="also run PyTorch's MemTracker on the prefill (fake tensors) and print its peak",
    )
    f.add_argument("--kv-dtype", default="bfloat16", help="the KV cache's dtype (default: bfloat16)")
    f.add_argument(
        "--gpu-memory", default="80GB", help="memory of one GPU with its unit: 80GB, 24GiB, 24G (default: 80GB)"
    )
    f.add_argument("--gpus", type=int, default=1, help="GPUs (default: 1)")
    f.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default: 1)")
    f.add_argument("--ep", type=int, default=1, help="expert-parallel degree for routed experts (default: 1)")
    f.add_argument("--train", choices=["full", "lora", "qlora"], help="fine-tuning memory instead of inference")
    f.add_argument("--lora-rank", type=int, default=16, help="LoRA rank r (default: 16)")
    f.add_argument("--lora-targets", default="q_proj,v_proj", help="linear layers LoRA adapts (default: q_proj,v_proj)")
    f.add_argument("--checkpointing", action="store_true", help="full activation checkpointing while training")
    f.add_argument("--engine", default="transformers", help="whose allocation: transformers, vllm or llama.cpp")
    f.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm: share of each GPU (0.9)")
    f.add_argument("--max-num-batched-tokens", type=int, help="vllm: tokens per step (default: vllm serve's)")
    f.add_argument("--max-num-seqs", type=int, help="vllm: requests per step (default: vllm serve's)")
    f.add_argument("--n-gpu-layers", type=int, help="llama.cpp: layers offloaded, -ngl (default: all)")
    f.add_argument("--cache-type", default="f16", help="llama.cpp: the KV cache's type, -ctk/-ctv (default: f16)")
    f.add_argument("--json", action="store_true", help="print JSON for scripts")
    o = _sourced(sub, "flops", "how much compute? FLOPs per token of a forward and a training step", sized=True)
    o.add_argument("--tokens", type=int, help="a training run's tokens: its total FLOPs")
    o.add_argument("--gpu", help="a GPU for the MFU: H100-SXM, H100-PCIe, H200, A100, L40S, MI300X")
    o.add_argument("--throughput", type=float, help="measured training tokens per second, for the MFU")
    o.add_argument("--gpus", type=int, default=1, help="GPUs that throughput came from (default: 1)")
    o.add_argument("--dtype", default="bfloat16", help="whose peak the MFU divides by (default: bfloat16)")
    o.add_argument("--json", action="store_true", help="print JSON for scripts")
    s = sub.add_parser("census", help="count every repository a list names (Hub ids or folders) on Dask, resumably")
    s.add_argument("list", help="text file of Hub ids (owner/name@REVISION) or folders, or CSV with a source column")
    s.add_argument("-o", "--output", required=True, help="the CSV to write (a killed census resumes from it)")
    s.add_argument("--workers", type=int, default=2, help="Dask worker processes of the local cluster (default: 2)")
    s.add_argument("--threads", type=int, default=16, help="requests in flight per worker (default: 16)")
    s.add_argument("--scheduler", help="a Dask scheduler's address (tcp://HOST:8786) instead of a local cluster")
    a = sub.add_parser("add", help="add a model to conf/ and params.yaml, for dvc repro")
    a.add_argument("name", help="the model's name in the pipeline (letters, digits, '-' and '_')")
    a.add_argument("source", help="config.json, checkpoint folder, .gguf file, or Hub id (owner/name)")
    a.add_argument("--revision", help="Hub branch, tag or commit to pin (default: main, resolved to its commit)")
    a.add_argument("--sweep", help="the conf/sweep/ file to list it in (default: the sweep params.yaml records)")
    a.add_argument("--stated-size", help="the size its authors state, e.g. 117M (the report compares it)")
    a.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP + " (written as allow_pickle: true)")
    args = parser.parse_args(argv)
    try:
        _command(args)
    except PipelineError as exc:  # its advice as an hmp user takes it: options, not model-file fields
        raise exc.said_to("hmp") from None


def _sourced(sub: Any, command: str, text: str, sized: bool = False) -> argparse.ArgumentParser:
    """A command that reads one model: its source, revision and name (and its context and batch, sized)."""
    p = sub.add_parser(command, help=text)
    p.add_argument("source", help="config.json, checkpoint folder, .gguf file, or Hub id (owner/name)")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--name", help="the model's name in the output (default: from the source)")
    if sized:
        p.add_argument("--context", type=int, help="tokens per sequence (default: the model's own positions)")
        p.add_argument("--batch", type=int, default=1, help="sequences at once (default: 1)")
    return p


def _version() -> str:
    """hmp's version and the libraries that decide what a model builds to (never imported for it: metadata only)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    return f"hmp {of('how-many-params')} (transformers {of('transformers')}, torch {of('torch')})"


PICKLE_HELP = "load .bin/.pt checkpoints with torch.load(weights_only=True) (pickle can run code)"


def _command(args: argparse.Namespace) -> None:
    if args.command == "flops":
        from pipeline.answers import flops
        from pipeline.report.flopstext import flops_text

        result = flops.flops(args.source, flops.FlopsOptions.of(vars(args)))
        _say(json.dumps(result, indent=2) if args.json else flops_text(result))
        return
    if args.command == "fit":
        from pipeline.answers import fit
        from pipeline.report.fitplan import fit_text

        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        result = fit.plan(args.source, fit.FitOptions.of({**vars(args), "lora_targets": targets})).as_json()
        _say(json.dumps(result, indent=2) if args.json else fit_text(result))
        return
    if args.command == "census":
        from pipeline.cli.census import census_command

        _say(census_command(args.list, args.output, args.workers, args.threads, args.scheduler))
        return
    if args.command == "count":
        from pipeline.answers.count import count
        from pipeline.cli.count import text

        result = count(args.source, args.revision, args.name, args.allow_pickle).as_json()
        _say(json.dumps(result, indent=2) if args.json else text(result, args.per_layer))
    else:
        from pipeline.answers.add import add

        written = add(args.name, args.source, args.revision, args.sweep, args.stated_size, args.allow_pickle)
        _say(f"added {args.name}: wrote {', '.join(str(p) for p in written)}; now run `dvc repro`")


def _say(answer: str) -> None:
    """Print the answer and make sure it reached stdout: a full disk or a closed file is an error, not exit 0."""
    try:
        print(answer)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader stopped early (hmp count ... | head): entry_point ends quietly
    except OSError as exc:
        raise PipelineError(f"cannot write the answer to stdout ({exc.strerror or first_line(exc)})") from None


def _stack_on_request() -> None:
    """`kill -USR1 <pid>` prints where every thread of a running hmp is (a census that seems stuck), and it goes on."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def entry_point() -> None:
    """The console script: one-line errors, never a traceback (as the stages)."""
    import os

    from pipeline.core.errors import run

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its config notes are not the answer either
    _stack_on_request()
    try:
        run(lambda: main(sys.argv[1:]), level=logging.WARNING)  # the stages' progress lines are not the answer
    except BrokenPipeError:
        # The reader closed the pipe (hmp count ... | head -1): nothing more can be said there. Point stdout
        # at /dev/null so the interpreter's own flush at exit stays quiet, and exit as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    entry_point()
