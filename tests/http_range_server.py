"""A local HTTP server with Range support, laid out like the Hub's resolve URLs, counting the bytes it serves.

GET /<org>/<name>/resolve/<revision>/<file> serves <root>/<file>; a 'Range: bytes=a-b' header gets a 206
with exactly those bytes. It listens on 127.0.0.1 only and stops with the test.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, root: Path, repo_id: str, revision: str):
        self.root, self.prefix = Path(root), f"/{repo_id}/resolve/{revision}/"
        self.bytes_served = 0
        self.lock = threading.Lock()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                if not self.path.startswith(server.prefix):
                    self.send_error(404)
                    return
                path = server.root / self.path[len(server.prefix) :]
                if not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                start, end = (int(match.group(1)), min(int(match.group(2)), size - 1)) if match else (0, size - 1)
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                with open(path, "rb") as fh:
                    fh.seek(start)
                    left = end - start + 1
                    while left:
                        block = fh.read(min(left, 1 << 20))
                        with server.lock:  # counted before it is sent: the client may check right after
                            server.bytes_served += len(block)
                        self.wfile.write(block)
                        left -= len(block)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
