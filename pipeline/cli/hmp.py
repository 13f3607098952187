"""`hmp`: count any model in one command, or add it to the pipeline's sweep.

    hmp count SOURCE [--revision REV] [--json] [--per-layer]
    hmp fit SOURCE [--context N] [--batch B] [--gpu-memory 80GB] [--gpus N] [--tp N] [--train full|lora|qlora]
    hmp add NAME SOURCE [--revision REV] [--sweep SWEEP] [--stated-size 117M]
    hmp flops SOURCE [--context N] [--batch B] [--tokens D] [--gpu H100-SXM --throughput TOKENS/S]
    hmp census LIST -o OUT.csv [--workers N] [--threads T] [--scheduler ADDRESS]
    hmp serve [--host 127.0.0.1] [--port 8000] [--allow-dir DIR]

With HMP_SERVER=http://127.0.0.1:8000 (or --server URL), count, fit and flops ask a running `hmp serve`: this
process then imports neither torch nor transformers; it counts in-process when no server answers.

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
import os
import sys
from pathlib import Path

from pipeline.answers import arguments
from pipeline.answers.arguments import PICKLE_HELP
from pipeline.core.errors import PipelineError, first_line

log = logging.getLogger("hmp")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hmp", description="Exact parameter counts of any transformer.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    questions = {}
    for question, text in QUESTION_HELP.items():
        questions[question] = arguments.add_arguments(sub.add_parser(question, help=text), question)
        questions[question].add_argument("--server", help="a running hmp serve's URL (default: $HMP_SERVER)")
    v = sub.add_parser("serve", help="a JSON API and a web page for count, fit and flops, with the imports done once")
    v.add_argument("--host", default="127.0.0.1", help="the address to bind (default: 127.0.0.1, this machine only)")
    v.add_argument("--port", type=int, default=8000, help="the port (default: 8000)")
    v.add_argument("--allow-dir", action="append", default=[], help="a folder whose models ?source= may name (repeat)")
    v.add_argument("--timeout", type=float, default=120.0, help="seconds one answer may take (default: 120)")
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
        if args.command in questions and (server := args.server or os.environ.get("HMP_SERVER")):
            from pipeline.cli.remote import asked

            answer = asked(server, args.command, args, questions[args.command])
            if answer is not None:
                _say(answer)
                return
        _command(args)
    except PipelineError as exc:  # its advice as an hmp user takes it: options, not model-file fields
        raise exc.said_to("hmp") from None


def _version() -> str:
    """hmp's version and the libraries that decide what a model builds to (never imported for it: metadata only)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "absent"

    return f"hmp {of('how-many-params')} (transformers {of('transformers')}, torch {of('torch')})"


QUESTION_HELP = {
    "count": "count a config.json, a checkpoint folder, a .gguf file or a Hub id",
    "fit": "will it fit? memory for inference or fine-tuning, per GPU and in total",
    "flops": "how much compute? FLOPs per token of a forward and a training step",
}


def _command(args: argparse.Namespace) -> None:
    if args.command in QUESTION_HELP:
        result = arguments.answer(args.command, args)
        _say(json.dumps(result, indent=2) if args.json else arguments.text(args.command, result, args))
        return
    if args.command == "serve":
        from pipeline.serve.app import serve

        serve(args.host, args.port, [Path(d) for d in args.allow_dir], args.timeout)
        return
    if args.command == "census":
        from pipeline.cli.census import census_command

        _say(census_command(args.list, args.output, args.workers, args.threads, args.scheduler))
        return
    if args.command == "add":
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
