"""Error handling and logging shared by the stage entry points."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PipelineError(Exception):
    """A problem with the user's input. Reported as one line, never as a traceback."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): log to stderr, turn a PipelineError into one line and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def read_json(path: str | Path, owner: str, missing: str = "is missing") -> Any:
    """A JSON file's content, or a PipelineError naming owner and path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{owner}: {path} {missing}") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{owner}: {path} is not valid JSON ({exc.msg})") from None
