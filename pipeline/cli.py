"""Error handling and logging shared by the stage entry points."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


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
