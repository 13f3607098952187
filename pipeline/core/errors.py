"""Error handling and logging shared by the stage entry points."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


class PipelineError(Exception):
    """A problem with the user's input. Reported as one line, never as a traceback."""


class PipelineErrors(PipelineError):
    """Several models refused in one run: each is reported on its own line, so one run names every problem."""

    def __init__(self, errors: list[PipelineError], total: int) -> None:
        self.errors = errors
        self.total = total
        super().__init__(f"{len(errors)} of {total} models refused: " + "; ".join(str(e) for e in errors))

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors] + [
            f"{len(self.errors)} of {self.total} models refused; nothing was written"
        ]


def collect(items: Iterable[tuple[str, Any]], work: Callable[[str, Any], Any]) -> dict[str, Any]:
    """work(name, item) for every item, each PipelineError kept (named by the model) instead of stopping at
    the first; {name: result} when every item passed, else PipelineErrors naming each refused one."""
    results, errors, total = {}, [], 0
    for name, item in items:
        total += 1
        try:
            results[name] = work(name, item)
        except PipelineError as exc:  # named by its model once (the model's own checks name it already)
            errors.append(exc if str(exc).startswith("model ") else PipelineError(f"model '{name}': {exc}"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PipelineErrors(errors, total)
    return results


def run(main: Callable[[], None], level: int = logging.INFO) -> None:
    """Run a stage's main(): log to stderr, turn a PipelineError into one line and exit status 1."""
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)
    # huggingface_hub gives its logger a handler of its own: without this, each of its lines prints twice
    logging.getLogger("huggingface_hub").propagate = False
    # its HTTP client logs every request at INFO ("HTTP Request: GET …"): warnings and errors only
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        main()
    except PipelineError as exc:
        for line in exc.lines() if isinstance(exc, PipelineErrors) else [str(exc)]:
            print(f"error: {one_line(line)}", file=sys.stderr)
        sys.exit(1)


MAX_MESSAGE = 1000  # characters of an error line: a 10,000-character tensor name is cut, not printed whole


def one_line(text: str) -> str:
    """A message as one line: control characters (a tensor name with a newline in it) escaped, length capped."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 1] + "…"


@contextlib.contextmanager
def about(model: str) -> Iterator[None]:
    """Inside the block, every PipelineError names the model first (once)."""
    try:
        yield
    except PipelineError as exc:
        if str(exc).startswith(f"model '{model}'"):
            raise
        raise PipelineError(f"model '{model}': {exc}") from None


MAX_LINE = 400  # a message longer than this is cut: one line stays readable


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0].rstrip(" :")
    # transformers lists every model type it knows after an unknown one (800 names): keep the message, not the list
    line = re.sub(r"\. Should contain one of .*$", " (not a model type this transformers has)", line)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def read_json(path: str | Path, owner: str, missing: str = "is missing") -> Any:
    """A JSON file's content, or a PipelineError naming owner and path."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{owner}: {path} {missing}") from None
    except IsADirectoryError:
        raise PipelineError(f"{owner}: {path} is a folder, not a JSON file") from None
    except OSError as exc:
        raise PipelineError(f"{owner}: {path} cannot be read ({exc.strerror or first_line(exc)})") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{owner}: {path} is not UTF-8 text") from None
    except RecursionError:
        raise PipelineError(f"{owner}: {path} is nested too deeply to be a config") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{owner}: {path} is not valid JSON ({exc.msg})") from None


def read_json_object(path: str | Path, owner: str, missing: str = "is missing") -> dict[str, Any]:
    """read_json for a file that must hold a JSON object (config.json, an index)."""
    data = read_json(path, owner, missing)
    if not isinstance(data, dict):
        raise PipelineError(f"{owner}: {path} holds a JSON {type(data).__name__}, not an object")
    return data
