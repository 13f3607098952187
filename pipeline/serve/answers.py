"""What the server answers, and from which sources: the library's answers (pipeline.answers.arguments) kept by what
they depend on (a posted config's bytes, a sweep model's files, the options), one computation at a time, each
bounded in time; sources limited to the sweep's models, Hub ids in the local cache and folders it was started with.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line

MAX_BODY = 1 << 20  # a config.json is a few KiB; the largest published ones are under 100 KiB
MAX_DEPTH = 64  # nesting of a posted JSON document
KEPT = 512  # answers kept (a few KiB each)


class Refused(Exception):
    """A request the server will not answer: (HTTP status, one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Reply:
    status: int
    body: str  # JSON (what --json prints) or text (what hmp prints)
    media: str


class Answers:
    """The answers of one server: its allowed folders, its posted configs' folder, the answers it keeps."""

    def __init__(self, allow_dirs: list[Path], timeout: float) -> None:
        self.allow_dirs = [Path(d).resolve() for d in allow_dirs]
        self.timeout = timeout
        self.posted_dir = Path(tempfile.mkdtemp(prefix="hmp-serve-"))
        self.kept: collections.OrderedDict[tuple, Reply] = collections.OrderedDict()
        self.lock = threading.Lock()  # one build at a time: the library's builds share transformers' registries
        self.keep_lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.posted_dir, ignore_errors=True)

    def posted(self, body: bytes, client_path: str | None = None) -> str:
        """A posted config.json's content, checked and written once by its hash and file name: its path. Named as
        the client's own file is (its folder's name for a config.json, else its stem: pipeline.answers.source's
        shown_name), else by its _name_or_path or model_type, so the answer names the model as hmp would."""
        if len(body) > MAX_BODY:
            raise Refused(413, f"the body is {len(body):,} bytes, more than the {MAX_BODY:,} a config.json may be")
        try:
            config = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise Refused(400, f"the body is not a JSON document: {first_line(exc)}") from None
        if not isinstance(config, dict):
            raise Refused(400, f"the body is a JSON {type(config).__name__}, not a config.json object")
        if _depth(config) > MAX_DEPTH:
            raise Refused(400, f"the body nests deeper than {MAX_DEPTH} levels: not a config.json")
        if client_path:
            given = Path(client_path)
            parts = [_safe(given.parent.name), "config.json"] if given.name == "config.json" else [_json(given.stem)]
        else:  # a repository's own name, as _name_or_path gives it ('org/name', '/a/folder/', '.'), else its type
            named = str(config.get("_name_or_path") or "").replace("\\", "/").rstrip("/").rpartition("/")[2]
            parts = [_json(named.strip(". ") or str(config.get("model_type") or "config"))]
        folder = self.posted_dir / hashlib.sha256(body).hexdigest()[:32]
        path = folder.joinpath(*parts)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(body)
            tmp.replace(path)
        return str(path)

    def allowed(self, source: str) -> str:
        """A source named in a query: a model of conf/model/ (the sweep's), a Hub id in the local cache, or a path
        under an allowed folder (every file under it too: a link out of it is refused)."""
        from pipeline.answers import source as sources

        if "\x00" in source or len(source) > 1000:
            raise Refused(400, "source: not a name, a Hub id or a path")
        if sources.conf_entry(source) is not None:
            return source
        path = Path(source)
        if sources.HUB_ID.fullmatch(source) and source.count("/") == 1 and not path.exists():
            if not _cached(source):
                raise Refused(404, f"source {source!r}: not in the local Hub cache (the server never downloads)")
            return source
        if not path.is_absolute():
            raise Refused(403, f"source {source!r}: a path must be absolute, under a folder the server allows")
        real = path.resolve()
        if not any(real == d or d in real.parents for d in self.allow_dirs):
            raise Refused(403, f"source {source!r}: not under a folder the server allows (hmp serve --allow-dir)")
        if real.is_dir():
            for inner in list(real.rglob("*"))[:10_000]:
                if not any(d == inner.resolve() or d in inner.resolve().parents for d in self.allow_dirs):
                    raise Refused(403, f"source {source!r}: {inner.name} links out of the allowed folders")
        return str(real)

    def key(self, question: str, source: str, query: list[tuple[str, str]], as_text: bool) -> tuple:
        """What an answer depends on: the question, the source's files' content, the options."""
        from pipeline.answers import source as sources

        path, stamp = Path(source), ""
        if path.is_file():
            stamp = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            stamp = "|".join(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(path.rglob("*")))
        elif (conf := sources.conf_entry(source)) is not None:
            stamp = hashlib.sha256(conf[0].read_bytes()).hexdigest()
        return (question, source, stamp, tuple(sorted(query)), as_text)

    async def reply(self, question: str, source: str, query: list[tuple[str, str]], as_text: bool,
                    shown: str | None = None) -> Reply:  # fmt: skip
        """The answer (kept, or computed in a worker thread within the time limit); shown: what a posted config's
        path is called in it (the client's own path, or 'the posted config.json'), not the server's copy."""
        key = (*await asyncio.to_thread(self.key, question, source, query, as_text), shown)
        with self.keep_lock:
            if key in self.kept:
                self.kept.move_to_end(key)
                return self.kept[key]
        try:
            reply = await asyncio.wait_for(asyncio.to_thread(self._compute, question, source, query, as_text),
                                           self.timeout)  # fmt: skip
        except TimeoutError:
            raise Refused(504, f"no answer within {self.timeout:g} s (hmp serve --timeout)") from None
        if shown is not None:
            said = json.dumps(shown)[1:-1] if reply.media == "application/json" else shown
            reply = Reply(reply.status, reply.body.replace(json.dumps(source)[1:-1], said), reply.media)
        if reply.status < 500:
            with self.keep_lock:
                self.kept[key] = reply
                while len(self.kept) > KEPT:
                    self.kept.popitem(last=False)
        return reply

    def _compute(self, question: str, source: str, query: list[tuple[str, str]], as_text: bool) -> Reply:
        from pipeline.answers import arguments

        with self.lock:
            try:
                args = arguments.from_query(question, source, query)
                result = arguments.answer(question, args)
                if as_text:
                    return Reply(200, arguments.text(question, result, args), "text/plain; charset=utf-8")
                return Reply(200, json.dumps(result, indent=2), "application/json")
            except PipelineError as exc:
                status = 404 if exc.kind == "unavailable" else 400
                return Reply(status, json.dumps({"error": str(exc.said_to("hmp"))}), "application/json")
            except Exception as exc:  # noqa: BLE001 - a hostile config's crash is its one line; the server goes on
                return Reply(400, json.dumps({"error": f"{type(exc).__name__}: {first_line(exc)}"}),
                             "application/json")  # fmt: skip


def _safe(part: str) -> str:
    """One folder name, made safe: no separator, no leading dot, at most 100 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", part).lstrip(".-")[:100] or "model"


def _json(stem: str) -> str:
    """A file name for a posted config.json: stem made safe, then .json (the suffix that says what it holds)."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-")[:95] or "config") + ".json"


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def sources_listed() -> dict[str, list[str]]:
    """The sources the page offers: the models of conf/model/ and the Hub ids whose config.json is cached."""
    from pipeline.answers import source as sources

    conf = sorted({p.stem for folder in sources.CONF_MODELS if folder.is_dir() for p in folder.glob("*.yaml")})
    try:
        from huggingface_hub import scan_cache_dir

        hub = sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model" and _cached(r.repo_id))
    except Exception:  # noqa: BLE001 - no cache yet
        hub = []
    return {"sweep": conf, "hub": hub}
