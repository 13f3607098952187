"""A model hub on 127.0.0.1 for tests and benchmarks: the Hub's API and resolve URLs over many repositories.

LocalHub(repos, latency) serves, for every Repo it holds, what huggingface_hub's client asks the Hub for:

- GET|HEAD /{org}/{name}/resolve/{revision}/{path}: the file, whole (200) or a 'Range: bytes=a-b', 'bytes=a-' or
  'bytes=-n' of it (206 with the exact Content-Range; a range starting past the end is 416), with the headers the
  Hub sends (X-Repo-Commit, ETag, Content-Length, Accept-Ranges). A Sparse file is its prefix and then zeros, never
  held in memory.
- GET /api/models/{org}/{name} and /api/models/{org}/{name}/revision/{rev}: model_info's JSON (id, sha, siblings,
  gated, private, safetensors {parameters, total} where the repository has an api_total, config).
- GET /api/models/{org}/{name}/tree/{rev}[/{path}] (recursive=1 for everything below): what snapshot_download lists.
- GET /api/agent-harnesses: an empty registry (huggingface_hub fetches it once a day to build its user agent).

Errors are the Hub's, each with the X-Error-Code huggingface_hub's hf_raise_for_status maps to its own class: an
unknown repository is 401 RepoNotFound (RepositoryNotFoundError), a gated one's files 403 GatedRepo
(GatedRepoError), an unknown revision 404 RevisionNotFound (RevisionNotFoundError), a missing file 404
EntryNotFound (RemoteEntryNotFoundError). `latency` (seconds, settable while serving) is slept before every
answer; `drip` ({path suffix: seconds}) sends the answers of those paths one byte at a time, with no
Content-Length; `stats()` counts requests, body bytes and requests per path. HTTP/1.1 with keep-alive, as the Hub.

Run as a process for benchmarks (its own GIL, not the client's):

    python -m tests.support.hub --population 2000 --seed 0 --latency 0.05 --port-file /tmp/hub.port

writes the endpoint to the port file and serves until killed. In that form GET /_hub/stats answers the counters
as JSON, and GET /_hub/latency?seconds=0.05 sets the latency (neither is counted nor delayed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

CHUNK = 1 << 20
SHA_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Sparse:
    """A file of size bytes: prefix (a real header, say), then zeros; the zeros are never held in memory."""

    prefix: bytes
    size: int

    def __post_init__(self):
        if self.size < len(self.prefix):
            raise ValueError(f"a Sparse file of {self.size} bytes cannot hold a prefix of {len(self.prefix)}")

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file."""
        end = min(end, self.size)
        if start >= end:
            return b""
        head = self.prefix[start:end]
        return head + bytes(end - start - len(head))


def size_of(data: bytes | Sparse) -> int:
    return data.size if isinstance(data, Sparse) else len(data)


def read_range(data: bytes | Sparse, start: int, end: int) -> bytes:
    return data.read(start, end) if isinstance(data, Sparse) else data[start:end]


@dataclass
class Repo:
    """One repository: its files at commit sha, reachable by that sha or by any branch name in branches.

    gated: every file is refused with 403 GatedRepo (model_info still answers, as the Hub's does).
    api_total / api_parameters: the Hub API's safetensors figure (total, and parameters by dtype).
    served=False: a repository a list names but the hub does not have (RepoNotFound).
    listed: the revision a list written by hub_population.write_list names it at (default: main).
    meta: what tests/support/hub_population.py knows of it (family, expected totals, ...).
    """

    repo_id: str
    sha: str
    files: dict[str, bytes | Sparse]
    gated: bool = False
    api_total: int | None = None
    api_parameters: dict[str, int] | None = None
    branches: dict[str, str] | None = None
    served: bool = True
    listed: str = "main"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.branches is None:
            self.branches = {"main": self.sha}

    def commit_of(self, revision: str) -> str | None:
        """The commit a revision names here: the sha (or a branch's), else None."""
        if revision in self.branches:
            return self.branches[revision]
        if revision == self.sha or revision in self.branches.values():
            return revision
        return None


_ETAGS: dict[int, tuple[object, str]] = {}
_ETAG_LOCK = threading.Lock()


def etag_of(data: bytes | Sparse) -> str:
    """A stable ETag: the sha256 of a real file's bytes; of a Sparse file, of its prefix and size (its zeros are
    never hashed). Computed once per object."""
    key = id(data)
    with _ETAG_LOCK:
        hit = _ETAGS.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
    if isinstance(data, Sparse):
        digest = hashlib.sha256(data.prefix + b"\0sparse:" + str(data.size).encode()).hexdigest()
    else:
        digest = hashlib.sha256(data).hexdigest()
    with _ETAG_LOCK:
        _ETAGS[key] = (data, digest)
    return digest


class LocalHub:
    """A Hub on 127.0.0.1 serving repos (a ThreadingHTTPServer in a thread); use as a context manager.

    port=0 lets the system choose; .endpoint is "http://127.0.0.1:PORT" once constructed.
    """

    def __init__(self, repos: list[Repo], latency: float = 0.0, port: int = 0, control: bool = False):
        self.repos: dict[str, Repo] = {r.repo_id: r for r in repos if r.served}
        self.latency = latency
        self.control = control  # the /_hub/ paths (stats, latency): for the process form
        self.drip: dict[str, float] = {}  # path suffix -> seconds between bytes of its answers (settable while serving)
        self._lock = threading.Lock()
        self._requests = 0
        self._bytes = 0
        self._paths: Counter = Counter()
        self._methods: Counter = Counter()
        self._statuses: Counter = Counter()
        self._open: set = set()  # the connections being served (keep-alive ones wait here between requests)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the Hub: the client reuses its connections
            server_version = "LocalHub/1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                with hub._lock:
                    hub._open.add(self.connection)

            def finish(self):
                with hub._lock:
                    hub._open.discard(self.connection)
                super().finish()

            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                hub._handle(self, head=True)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                hub._handle(self, head=False)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many clients at once (the census runs tasks in parallel)

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="local-hub", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> LocalHub:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting, and end the kept-alive connections too (their threads would wait on them for ever)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            connections = list(self._open)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- statistics ---------------------------------------------------------------------------------

    def stats(self) -> dict:
        """A snapshot: requests, bytes_served (body bytes), per_path, per_method and per_status counts."""
        with self._lock:
            return {
                "requests": self._requests,
                "bytes_served": self._bytes,
                "per_path": dict(self._paths),
                "per_method": dict(self._methods),
                "per_status": dict(self._statuses),
            }

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def bytes_served(self) -> int:
        with self._lock:
            return self._bytes

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = self._bytes = 0
            self._paths.clear()
            self._methods.clear()
            self._statuses.clear()

    # --- answering ----------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlsplit(h.path)
        path, query = url.path, parse_qs(url.query)
        if self.control and path.startswith("/_hub/"):
            self._control(h, path, query)
            return
        with self._lock:
            self._requests += 1
            self._paths[path] += 1
            self._methods[h.command] += 1
        delay = self.latency
        if delay > 0:
            time.sleep(delay)
        try:
            self._route(h, path, query, head)
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            pass

    def _control(self, h, path: str, query: dict) -> None:
        if path == "/_hub/latency" and "seconds" in query:
            self.latency = float(query["seconds"][0])
            self._json(h, {"latency": self.latency}, head=False, count=False)
        elif path == "/_hub/stats":
            self._json(h, {**self.stats(), "latency": self.latency}, head=False, count=False)
        else:
            self._error(h, 404, None, "Not found", head=False)

    def _route(self, h, path: str, query: dict, head: bool) -> None:
        parts = [unquote(p) for p in path.split("/")[1:]]
        if path in ("", "/"):
            self._send(h, 200, {"Content-Type": "text/plain"}, b"LocalHub\n", head)
            return
        if path == "/api/agent-harnesses":  # huggingface_hub's user agent asks for this registry once a day
            self._json(h, {"standardEnvVars": [], "harnesses": {}}, head)
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, file = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            self._resolve(h, repo_id, revision, file, head)
            return
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest:
                self._info(h, repo_id, "main", head)
                return
            if rest[0] == "revision" and len(rest) >= 2:
                self._info(h, repo_id, "/".join(rest[1:]), head)
                return
            if rest[0] == "tree" and len(rest) >= 2:
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                self._tree(h, repo_id, rest[1], "/".join(rest[2:]), recursive, head)
                return
        self._error(h, 404, None, "Not found", head)

    def _repo(self, h, repo_id: str, revision: str, head: bool) -> tuple[Repo, str] | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 401, "RepoNotFound", "Repository not found", head)  # the Hub's answer to an unknown repo
            return None
        commit = repo.commit_of(revision)
        if commit is None:
            self._error(h, 404, "RevisionNotFound", "Invalid rev id: " + revision, head)
            return None
        return repo, commit

    def _resolve(self, h, repo_id: str, revision: str, file: str, head: bool) -> None:
        found = self._repo(h, repo_id, revision, head)
        if found is None:
            return
        repo, commit = found
        if repo.gated:
            self._error(
                h,
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{repo_id} to ask for access.",
                head,
                {"X-Repo-Commit": commit},
            )
            return
        data = repo.files.get(file)
        if data is None:
            self._error(h, 404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": commit})
            return
        size = size_of(data)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{etag_of(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        wanted = h.headers.get("Range")
        start, end, status = 0, size, 200  # [start, end)
        if wanted:
            span = _parse_range(wanted, size)
            if span is None:
                headers["Content-Range"] = f"bytes */{size}"
                self._send(h, 416, headers, b"", head)
                return
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        pause = next((s for suffix, s in self.drip.items() if urlsplit(h.path).path.endswith(suffix)), None)
        if pause is not None and not head and status == 200:
            self._drip(h, status, headers, read_range(data, start, end), pause)
            return
        headers["Content-Length"] = str(end - start)
        self._status(h, status, headers)
        if head:
            return
        pos = start
        while pos < end:
            block = read_range(data, pos, min(end, pos + CHUNK))
            with self._lock:  # counted before it is sent: a client may check right after its read
                self._bytes += len(block)
            h.wfile.write(block)
            pos += len(block)
        h.wfile.flush()

    def _siblings(self, repo: Repo) -> list[str]:
        return sorted(repo.files)

    def _info(self, h, repo_id: str, revision: str, head: bool) -> None:
        found = self._repo(h, repo_id, revision, head)
        if found is None:
            return
        repo, commit = found
        org, _, _ = repo_id.partition("/")
        info: dict = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": org,
            "sha": commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "tags": ["transformers", "safetensors"] if any(f.endswith(".safetensors") for f in repo.files) else [],
            "siblings": [{"rfilename": f} for f in self._siblings(repo)],
            "spaces": [],
        }
        config = repo.files.get("config.json")
        if isinstance(config, bytes):
            try:
                parsed = json.loads(config)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                info["config"] = {k: parsed[k] for k in ("architectures", "model_type") if k in parsed}
                if "model_type" in parsed:
                    info["tags"].append(str(parsed["model_type"]))
        if repo.api_total is not None:
            info["safetensors"] = {"parameters": dict(repo.api_parameters or {}), "total": repo.api_total}
        self._json(h, info, head)

    def _tree(self, h, repo_id: str, revision: str, under: str, recursive: bool, head: bool) -> None:
        found = self._repo(h, repo_id, revision, head)
        if found is None:
            return
        repo, _ = found
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        entries, folders = [], set()
        for name in self._siblings(repo):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            if recursive:  # every folder on the way, as the Hub lists them
                parts = rest.split("/")[:-1]
                for i in range(len(parts)):
                    folders.add(prefix + "/".join(parts[: i + 1]))
            data = repo.files[name]
            size = size_of(data)
            entry = {"type": "file", "oid": hashlib.sha1(etag_of(data).encode()).hexdigest(), "size": size}
            entry["path"] = name
            if name.endswith((".safetensors", ".gguf", ".bin")):
                entry["lfs"] = {"oid": etag_of(data), "size": size, "pointerSize": 134}
            entries.append(entry)
        if prefix and not entries and not folders:
            self._error(h, 404, "EntryNotFound", f"{under} does not exist on {revision}", head)
            return
        listing = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)] + entries
        self._json(h, listing, head)

    # --- the wire -----------------------------------------------------------------------------------

    def _status(self, h, status: int, headers: dict[str, str]) -> None:
        with self._lock:
            self._statuses[status] += 1
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()

    def _send(self, h, status: int, headers: dict[str, str], body: bytes, head: bool, count: bool = True) -> None:
        pause = next((s for suffix, s in self.drip.items() if urlsplit(h.path).path.endswith(suffix)), None)
        if pause is not None and not head and body:
            self._drip(h, status, headers, body, pause)
            return
        headers = {**headers, "Content-Length": str(len(body))}
        if count:
            self._status(h, status, headers)
        else:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
        if not head and body:
            if count:
                with self._lock:
                    self._bytes += len(body)
            h.wfile.write(body)
        h.wfile.flush()

    def _drip(self, h, status: int, headers: dict[str, str], body: bytes, pause: float) -> None:
        """The answer with no Content-Length (chunked), one byte every pause seconds: a hostile or broken server."""
        self._status(h, status, {**headers, "Transfer-Encoding": "chunked"})
        try:
            for byte in body:
                h.wfile.write(b"1\r\n" + bytes([byte]) + b"\r\n")
                h.wfile.flush()
                with self._lock:
                    self._bytes += 1
                time.sleep(pause)
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:  # the client gave up, as it should
            h.close_connection = True

    def _json(self, h, value, head: bool, count: bool = True) -> None:
        body = json.dumps(value).encode()
        self._send(h, 200, {"Content-Type": "application/json; charset=utf-8"}, body, head, count)

    def _error(
        self, h, status: int, code: str | None, message: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(h, status, headers, json.dumps({"error": message}).encode(), head)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single 'bytes=' range on a file of size bytes; None when it cannot be satisfied."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # bytes=-n: the last n bytes
        n = int(m.group(2))
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = size if not m.group(2) else min(int(m.group(2)) + 1, size)
    if start >= size or end <= start:
        return None
    return start, end


def resolve_url(endpoint: str, repo_id: str, revision: str, path: str) -> str:
    """The resolve URL of a file, as huggingface_hub's hf_hub_url builds it."""
    return f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=200, help="repositories (hub_population.population)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before every answer")
    parser.add_argument("--port", type=int, default=0, help="0: the system chooses")
    parser.add_argument("--port-file", type=Path, help="write the endpoint here once serving")
    parser.add_argument("--list", type=Path, help="also write the population's list here (text, or CSV if .csv)")
    args = parser.parse_args(argv)
    from tests.support import hub as module  # not __main__'s classes: the population's Repo and Sparse are these
    from tests.support import hub_population

    repos = hub_population.population(args.population, args.seed)
    if args.list:
        hub_population.write_list(args.list, repos, "csv" if args.list.suffix == ".csv" else "text")
    hub = module.LocalHub(repos, latency=args.latency, port=args.port, control=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with hub:
        if args.port_file:
            tmp = args.port_file.with_name(args.port_file.name + ".tmp")
            tmp.write_text(hub.endpoint + "\n")
            os.replace(tmp, args.port_file)  # whole or not at all: a reader never sees half an endpoint
        print(f"serving {len(hub.repos)} repositories at {hub.endpoint}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print(json.dumps(hub.stats()["per_method"]), file=sys.stderr)


if __name__ == "__main__":
    main()
