"""`hmp count|fit|flops` through a running `hmp serve` (HMP_SERVER=http://127.0.0.1:8000, or --server URL): the
question goes over HTTP, so this process imports neither torch nor transformers. A local config.json is posted;
any other source is named (the server reads it if it may). None when no server answers, or it may not read the
source: the caller then counts in-process. Standard library only: it must start in well under a second.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.core.errors import PipelineError

CONNECT_S = 0.5  # a server that does not accept within this is not there
ANSWER_S = 300.0  # its own limit (hmp serve --timeout) answers first


def asked(server: str, question: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """What `hmp QUESTION ...` would print, answered by the server; None to count in-process."""
    query = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("json", "server"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        query.append((action.option_strings[0].lstrip("-"), "true" if value is True else str(value)))
    if not args.json:
        query.append(("format", "text"))
    path = Path(args.source)
    body = None
    if path.is_file() and path.suffix == ".json":
        body = path.read_bytes()
    else:
        source = str(path.resolve()) if path.exists() else args.source
        query.append(("source", source))
    url = f"{server.rstrip('/')}/api/{question}?{urllib.parse.urlencode(query)}"
    headers = {"Content-Type": "application/json"}
    if body is not None:  # the server calls its copy by this path in the answer, as an in-process count would
        headers["X-Hmp-Path"] = urllib.parse.quote(str(path.resolve() if path.name == "config.json" else path))
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_S) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404, 413) or exc.code >= 500:  # it may not read this source, or failed: in-process
            return None
        try:
            message = json.loads(exc.read().decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            return None
        raise PipelineError(message) from None
    except (urllib.error.URLError, OSError, TimeoutError):
        return None
