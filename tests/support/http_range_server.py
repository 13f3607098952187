"""A local HTTP server with Range support, laid out like the Hub's resolve URLs, counting the bytes it serves.

GET /<org>/<name>/resolve/<revision>/<file> serves <root>/<file>; a 'Range: bytes=a-b' header gets a 206
with exactly those bytes. HEAD on the same URL answers with the headers huggingface_hub's downloads read
(X-Repo-Commit, ETag, Content-Length), and GET /api/models/<org>/<name>/tree/<revision> lists the files,
so snapshot_download runs against it unchanged. It listens on 127.0.0.1 only and stops with the test.

For tests of the client's behaviour it records every request's headers (`seen`), can fail the next
n GETs of file data with an HTTP status (`fail_next`, each failure counted in `failures`), keep them
waiting a number of seconds before it answers (`stall_next`) or between its headers and the body
(`stall_body_next`), send the next bodies one byte at a time with a pause between bytes
(`trickle_next`: each byte arrives well within any per-read timeout, the whole body never), and can
ignore Range headers (`ignore_range`) like a server that only sends whole files. `grow_by` makes every
file that many bytes longer from then on (zeros appended, the Content-Range total and Content-Length
saying so), as when a file is replaced on the server between two requests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, root: Path, repo_id: str, revision: str):
        self.root, self.prefix = Path(root), f"/{repo_id}/resolve/{revision}/"
        self.tree = f"/api/models/{repo_id}/tree/{revision}"
        self.revision = revision
        self.bytes_served = 0
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers) of every request
        self.fail_next: list[int] = []  # statuses for the next GETs of file data, one each
        self.failures = 0
        self.stall_next: list[float] = []
        self.stall_body_next: list[float] = []
        self.trickle_next: list[float] = []  # seconds between bytes, for the next GETs of file data
        self.grow_by = 0
        self.ignore_range = False
        self.etags: dict[Path, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the Hub: the client reuses its connections

            def log_message(self, *args):  # keep test output clean
                pass

            def _record(self) -> None:
                with server.lock:
                    server.requests.append(self.path)
                    server.seen.append((self.command, self.path, dict(self.headers.items())))

            def _empty(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self) -> Path | None:
                path = self.path.split("?", 1)[0]
                if not path.startswith(server.prefix):
                    return None
                file = server.root / path[len(server.prefix) :]
                return file if file.is_file() else None

            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                self._record()
                file = self._file()
                if file is None:
                    self._empty(404)
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", server.revision)
                self.send_header("ETag", server.etag(file))
                self.send_header("Content-Length", str(file.stat().st_size + server.grow_by))
                self.end_headers()

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._record()
                if self.path.split("?", 1)[0] == server.tree:
                    listing = [
                        {"type": "file", "path": p.name, "size": p.stat().st_size, "oid": "0" * 40}
                        for p in sorted(server.root.iterdir())
                        if p.is_file()
                    ]
                    body = json.dumps(listing).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                path = self._file()
                if path is None:
                    self._empty(404)
                    return
                with server.lock:
                    status = server.fail_next.pop(0) if server.fail_next else None
                    server.failures += status is not None
                    stall = server.stall_next.pop(0) if server.stall_next else 0
                    stall_body = server.stall_body_next.pop(0) if server.stall_body_next and not status else 0
                    trickle = server.trickle_next.pop(0) if server.trickle_next and not status else 0
                    grow = server.grow_by
                time.sleep(stall)
                if status is not None:
                    self._empty(status)
                    return
                size = path.stat().st_size + grow
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if server.ignore_range:
                    match = None
                start, end = (int(match.group(1)), min(int(match.group(2)), size - 1)) if match else (0, size - 1)
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                self.wfile.flush()
                time.sleep(stall_body)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    left = end - start + 1
                    while left:
                        step = min(left, 1 if trickle else 1 << 20)
                        block = fh.read(step) or bytes(step)  # past the file's real end: the zeros it grew by
                        with server.lock:  # counted before it is sent: the client may check right after
                            server.bytes_served += len(block)
                        try:
                            self.wfile.write(block)
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a deadline)
                            return
                        left -= len(block)
                        time.sleep(trickle)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def etag(self, path: Path) -> str:
        """The file's sha256, as the Hub's ETag of a stored file (computed once per file)."""
        with self.lock:
            if path not in self.etags:
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                self.etags[path] = f'"{digest.hexdigest()}"'
            return self.etags[path]

    def headers_of(self, method: str = "GET") -> list[dict[str, str]]:
        """The headers of every request of that method, lower-cased names."""
        return [{k.lower(): v for k, v in h.items()} for m, _, h in self.seen if m == method]

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
