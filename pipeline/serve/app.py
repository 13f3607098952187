"""The ASGI app of `hmp serve` (FastAPI, served by uvicorn): the JSON API, its OpenAPI description, the web page.

    POST /api/count|fit|flops   the body a config.json's content; options as query parameters (the CLI's names)
    GET  /api/count|fit|flops?source=...   a model of conf/model/, a Hub id in the local cache, or a path under
                                           a folder the server was started with (--allow-dir)
    GET  /api/sources           what the page offers to pick
    GET  /                      the page (pipeline/serve/page.html: no CDN, figures drawn in the page)

Each answer is exactly what `hmp QUESTION ... --json` prints (?format=text: what it prints without --json); bad
input is {"error": "<the one line>"} with a 4xx status.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from pipeline.answers import arguments
from pipeline.serve.answers import MAX_BODY, Answers, Refused, Reply, sources_listed

PAGE = Path(__file__).with_name("page.html")
DRAINED = 16 * MAX_BODY


def _parameters(question: str) -> list[dict[str, Any]]:
    """The OpenAPI parameters of a question: its CLI options, with their help."""
    out = []
    for action in arguments.parser(question)._actions:
        if not action.option_strings or action.dest == "json":
            continue
        kind = {int: "integer", float: "number"}.get(action.type, "string")
        if action.nargs == 0:
            kind = "boolean"
        out.append({"name": action.option_strings[0].lstrip("-"), "in": "query", "required": False,
                    "description": action.help or "", "schema": {"type": kind}})  # fmt: skip
    schema = {"type": "string", "enum": ["json", "text"]}
    out.append({"name": "format", "in": "query", "required": False,
                "description": "text: what hmp prints without --json", "schema": schema})  # fmt: skip
    return out


async def _body(request: Any) -> bytes:
    """The request's body, refused past MAX_BODY. What is sent beyond it is read and dropped, up to DRAINED (so
    the client, still sending, reads the refusal rather than a closed connection); past that the connection ends."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        elif size > DRAINED:
            break
    if size > MAX_BODY:
        raise Refused(413, f"the body is more than the {MAX_BODY:,} bytes a config.json may be")
    return b"".join(chunks)


def _options(request: Any) -> tuple[list[tuple[str, str]], bool]:
    """The question's options from the query (all but source and format), and whether text is asked for."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("source", "format")]
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "text"):
        raise Refused(400, f"format={fmt!r}: json or text")
    return query, fmt == "text"


def make_app(allow_dirs: list[Path] | None = None, timeout: float = 120.0) -> Any:
    answers = Answers(list(allow_dirs or []), timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        answers.close()

    app = FastAPI(title="how-many-params", description=__doc__, version="1", lifespan=lifespan)

    def refused(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    def replied(reply: Reply) -> Response:
        return Response(reply.body, status_code=reply.status, media_type=reply.media)

    def route(question: str) -> None:
        async def posted(request: Request) -> Response:
            try:
                client = request.headers.get("x-hmp-path")
                client = unquote(client)[:1000] if client else None
                path = answers.posted(await _body(request), client)
                query, as_text = _options(request)
                shown = client or "the posted config.json"
                return replied(await answers.reply(question, path, query, as_text, shown))
            except Refused as exc:
                return refused(exc.status, exc.message)

        async def named(request: Request) -> Response:
            try:
                source = request.query_params.get("source")
                if not source:
                    raise Refused(400, "source: give ?source=NAME (a model of the sweep, a cached Hub id or a path)")
                query, as_text = _options(request)
                return replied(await answers.reply(question, answers.allowed(source), query, as_text))
            except Refused as exc:
                return refused(exc.status, exc.message)

        extra = {"parameters": _parameters(question)}
        body = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
        app.add_api_route(f"/api/{question}", posted, methods=["POST"], summary=f"hmp {question} of a posted "
                          "config.json", openapi_extra={**extra, **body})  # fmt: skip
        get_extra = {"parameters": [{"name": "source", "in": "query", "required": True,
                                     "schema": {"type": "string"}}, *extra["parameters"]]}  # fmt: skip
        app.add_api_route(f"/api/{question}", named, methods=["GET"], summary=f"hmp {question} of a source the "
                          "server may read", openapi_extra=get_extra)  # fmt: skip

    for question in arguments.QUESTIONS:
        route(question)

    @app.get("/api/sources", summary="the sweep's models and the cached Hub ids")
    async def listed() -> Response:
        import asyncio

        return JSONResponse(await asyncio.to_thread(sources_listed))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    app.state.answers = answers
    return app


# A GPT-2 of two small blocks: asked each question once at start, so that the first real answer does not pay
# for what transformers and torch import and set up on their first build, fake-tensor run and FLOP count
WARM_CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2, "n_embd": 64,
               "n_head": 2, "vocab_size": 128, "n_positions": 64}  # fmt: skip


# A model built on the meta device is some 100,000 objects, nearly all acyclic (freed as soon as unused): Python's
# default thresholds (700, 10, 10) scan the young ones thousands of times and the kept models in full every few
# answers: 2.1 s of collections over the count and FLOPs of every other config of the corpus (182 answers), up to
# 0.12 s in one answer; with these, 0.6 s over the same answers, 0.03 s at most.
GC_THRESHOLDS = (10_000, 20, 100)


def warm() -> None:
    """Import what every answer needs and run each question once on WARM_CONFIG, then freeze what is there for the
    garbage collector (gc.freeze: the 400,000 objects torch and transformers leave are never scanned again) and
    collect less often (GC_THRESHOLDS), so that no answer waits on collections of the models it builds."""
    import gc
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hmp-warm-") as tmp:
        path = Path(tmp) / "warm.json"
        path.write_text(json.dumps(WARM_CONFIG))
        for question in arguments.QUESTIONS:
            options = [] if question == "count" else [("context", "32")]
            arguments.answer(question, arguments.from_query(question, str(path), options))
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(host: str, port: int, allow_dirs: list[Path], timeout: float) -> None:
    """Run until Ctrl-C (uvicorn's own handling: it finishes the requests in flight and stops)."""
    import os

    import uvicorn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the server reads the local Hub cache; it never downloads
    warm()
    app = make_app(allow_dirs, timeout)
    print(json.dumps({"serving": f"http://{host}:{port}", "allow_dirs": [str(d) for d in allow_dirs]}), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
