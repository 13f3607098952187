"""The options each question takes, read the same way by every door: `hmp count|fit|flops` (argparse on the command
line) and `hmp serve` (the query string of /api/count, /api/fit, /api/flops). One parser per question, built here;
answer() runs the question on parsed options and returns exactly what `--json` prints.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.core.errors import PipelineError

QUESTIONS = ("count", "fit", "flops")
PICKLE_HELP = "load .bin/.pt checkpoints with torch.load(weights_only=True) (pickle can run code)"
SOURCE_HELP = "config.json, checkpoint folder, .gguf file, or Hub id (owner/name)"


class Refusing(argparse.ArgumentParser):
    """An argparse parser whose bad input is a PipelineError (one line), never an exit."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        raise PipelineError(message)


def add_arguments(p: argparse.ArgumentParser, question: str) -> argparse.ArgumentParser:
    """The source and options of one question (count, fit or flops), as `hmp QUESTION --help` lists them."""
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--name", help="the model's name in the output (default: from the source)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    if question == "count":
        p.add_argument("--per-layer", action="store_true", help="also a torchinfo-style table of modules and blocks")
        p.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
        return p
    p.add_argument("--context", type=int, help="tokens per sequence (default: the model's own positions)")
    p.add_argument("--batch", type=int, default=1, help="sequences at once (default: 1)")
    if question == "flops":
        p.add_argument("--tokens", type=int, help="a training run's tokens: its total FLOPs")
        p.add_argument("--gpu", help="a GPU for the MFU: H100-SXM, H100-PCIe, H200, A100, L40S, MI300X")
        p.add_argument("--throughput", type=float, help="measured training tokens per second, for the MFU")
        p.add_argument("--gpus", type=int, default=1, help="GPUs that throughput came from (default: 1)")
        p.add_argument("--dtype", default="bfloat16", help="whose peak the MFU divides by (default: bfloat16)")
        return p
    _fit_arguments(p)
    return p


def _fit_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument(
        "--dtype",
        help="every weight in this dtype (default: as the checkpoint or its quantization_config stores them, "
        "else bfloat16)",
    )
    f.add_argument("--measure", action="store_true", help="also run PyTorch's MemTracker on the prefill (fake tensors)")
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


def parser(question: str) -> Refusing:
    if question not in QUESTIONS:
        raise PipelineError(f"{question!r}: the questions are {', '.join(QUESTIONS)}")
    return add_arguments(Refusing(prog=f"hmp {question}", add_help=False), question)


def from_query(question: str, source: str, query: list[tuple[str, str]]) -> argparse.Namespace:
    """A query string's options (the CLI's names, with - or _), parsed as the command line parses them: a flag
    given as true/1/yes (or empty) is set, false/0/no leaves it unset; an unknown name is refused."""
    p = parser(question)
    flags = {a.dest for a in p._actions if a.nargs == 0 and a.const is True}  # store_true
    argv = [source]
    for key, value in query:
        dest = key.replace("-", "_")
        if dest in ("source", "json") or dest.startswith("_"):
            continue
        if dest in flags:
            if value.strip().lower() not in ("", "1", "true", "yes", "0", "false", "no"):
                raise PipelineError(f"{key}={value!r}: a flag is true or false")
            argv += [f"--{dest.replace('_', '-')}"] if value.strip().lower() in ("", "1", "true", "yes") else []
            continue
        argv += [f"--{dest.replace('_', '-')}={value}"]
    args, unknown = p.parse_known_args(argv)
    if unknown:
        raise PipelineError(f"{unknown[0].split('=')[0].lstrip('-')}: not an option of hmp {question}")
    return args


def answer(question: str, args: argparse.Namespace) -> dict[str, Any]:
    """What `hmp QUESTION ... --json` prints, for parsed options."""
    if question == "flops":
        from pipeline.answers import flops

        return flops.flops(args.source, flops.FlopsOptions.of(vars(args)))
    if question == "fit":
        from pipeline.answers import fit

        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        return fit.plan(args.source, fit.FitOptions.of({**vars(args), "lora_targets": targets})).as_json()
    from pipeline.answers.count import count

    return count(args.source, args.revision, args.name, args.allow_pickle).as_json()


def text(question: str, result: dict[str, Any], args: argparse.Namespace) -> str:
    """What `hmp QUESTION ...` prints without --json."""
    if question == "flops":
        from pipeline.report.flopstext import flops_text

        return flops_text(result)
    if question == "fit":
        from pipeline.report.fitplan import fit_text

        return fit_text(result)
    from pipeline.report.counttext import count_text

    return count_text(result, args.per_layer)
