"""A real `hmp serve` on 127.0.0.1 for the tests: started in its own process, waited for, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, allow_dir: Path | None = None, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "pipeline.cli.hmp", "serve", "--port", str(self.port), "--timeout", str(timeout)]
        if allow_dir is not None:
            cmd += ["--allow-dir", str(allow_dir)]
        env = {k: v for k, v in os.environ.items() if k != "HMP_SERVER"}
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hmp serve exited: {self.process.stderr.read()}")
            try:
                self.get("/api/sources")
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("hmp serve did not answer within 180 s")

    def request(self, path: str, body: bytes | None = None, method: str | None = None,
                **query: object) -> tuple[int, str, str]:  # fmt: skip
        """(status, content type, body text)."""
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.headers.get("content-type", ""), r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("content-type", ""), e.read().decode("utf-8")

    def get(self, path: str, **query: object) -> tuple[int, str, str]:
        return self.request(path, **query)

    def json(self, path: str, body: bytes | None = None, **query: object) -> tuple[int, dict]:
        status, _, text = self.request(path, body, **query)
        return status, json.loads(text)

    def rss_mib(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, as a user stops it: (its exit status, what it wrote to stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode, self.process.stderr.read()
