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

UNAVAILABLE = "unavailable"  # PipelineError.kind of an input that could not be had (the other kind: "invalid")

# The way forward an error offers, as each door's user takes it: a stage's user edits a model file's fields, an
# hmp user passes options. {advice: (joiner, for the stages, for hmp)}; PipelineError(advice=...) names one.
ADVICE = {
    "config_source": (", or ", "use source: config", "use its config.json instead"),
    "allow_pickle": (
        "; ",
        "set allow_pickle: true in the model config to load it with torch.load(weights_only=True)",
        "pass --allow-pickle to load it with torch.load(weights_only=True)",
    ),
    "config_only": (
        "; ",
        "set config_only: true to count it from its config alone",
        "give its config.json to count it alone",
    ),
}
DOORS = ("stage", "hmp")


class PipelineError(Exception):
    """A problem with the user's input, as data, reported as one line (str()), never as a traceback.

    message: what was wrong, and where (a file, a field); model: which model, or None; kind: 'invalid' (the input
    is wrong: a refusal) or 'unavailable' (it could not be had: missing, gated, offline, unreachable). The one
    line names the model first, here and nowhere else: "model 'NAME': message".
    """

    def __init__(
        self,
        message: str = "",
        *,
        model: str | None = None,
        kind: str = "invalid",
        advice: str | None = None,
        door: str = "stage",
    ) -> None:
        if advice is not None and advice not in ADVICE:
            raise ValueError(f"no advice {advice!r}")
        self.message, self.model, self.kind, self.advice, self.door = str(message), model, kind, advice, door
        super().__init__(self.message)

    def __str__(self) -> str:
        text = self.message
        if self.advice is not None:
            joiner, *said = ADVICE[self.advice]
            text += joiner + said[DOORS.index(self.door)]
        if self.model is None:
            return text
        shown = self.model if self.model.isprintable() else repr(self.model)[1:-1]  # a name with a newline: escaped
        return f"model '{shown}': {text}"

    def _copy(self, **changes: Any) -> PipelineError:
        fields = {"model": self.model, "kind": self.kind, "advice": self.advice, "door": self.door} | changes
        return PipelineError(self.message, **fields)

    def named(self, model: str) -> PipelineError:
        """This error naming model, when it names none yet (the same error when it does)."""
        return self if self.model is not None else self._copy(model=model)

    def reworded(self, message: str) -> PipelineError:
        """This error with another message (a temporary path named as the user's own), all else kept."""
        copy = self._copy()
        copy.message = message
        copy.args = (message,)
        return copy

    def said_to(self, door: str) -> PipelineError:
        """This error with its advice as the door's user takes it ("hmp": options, not model-file fields)."""
        return self._copy(door=door)


class PipelineErrors(PipelineError):
    """Several models refused in one run: each is reported on its own line, so one run names every problem."""

    def __init__(self, errors: list[PipelineError], total: int) -> None:
        self.errors = errors
        self.total = total
        super().__init__(f"{len(errors)} of {total} models refused: " + "; ".join(str(e) for e in errors))

    def said_to(self, door: str) -> PipelineErrors:
        return PipelineErrors([e.said_to(door) for e in self.errors], self.total)

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
            errors.append(exc.named(name))
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
        if exc.model is not None:
            raise
        raise exc.named(model) from None


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


def read_json(path: str | Path, owner: str = "", missing: str = "is missing", model: str | None = None) -> Any:
    """A JSON file's content, or a PipelineError naming model (or owner) and path."""
    path = Path(path)
    said = f"{owner}: {path}" if owner else f"{path}"

    def refuse(what: str, kind: str = "invalid") -> PipelineError:
        return PipelineError(f"{said} {what}", model=model, kind=kind)

    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise refuse(missing, "unavailable") from None
    except IsADirectoryError:
        raise refuse("is a folder, not a JSON file") from None
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror or first_line(exc)})", "unavailable") from None
    except UnicodeDecodeError:
        raise refuse("is not UTF-8 text") from None
    except RecursionError:
        raise refuse("is nested too deeply to be a config") from None
    except json.JSONDecodeError as exc:
        raise refuse(f"is not valid JSON ({exc.msg})") from None


def read_json_object(
    path: str | Path, owner: str = "", missing: str = "is missing", model: str | None = None
) -> dict[str, Any]:
    """read_json for a file that must hold a JSON object (config.json, an index)."""
    data = read_json(path, owner, missing, model)
    if not isinstance(data, dict):
        said = f"{owner}: {path}" if owner else f"{path}"
        raise PipelineError(f"{said} holds a JSON {type(data).__name__}, not an object", model=model)
    return data
