"""Reading a Hub checkpoint by HTTP Range requests: headers to count, embedding byte ranges to check a tie.

The Hub-specific part is thin: hub_url() builds the resolve URL for a pinned commit (honouring
HF_ENDPOINT) and resolve_revision() turns a branch into a commit sha. Everything else talks plain
HTTP to any server that honours Range, and counts the bytes it receives.
"""

from __future__ import annotations

import json
import re
import struct
import urllib.error
import urllib.request
from pathlib import Path

from pipeline import checkpoint
from pipeline.cli import PipelineError, first_line, read_json_object

REQUEST_BYTES = 16 << 20  # one Range request fetches at most this much
TIMEOUT = 30  # seconds per request


class RangeFile:
    """A remote file read by byte ranges; bytes_fetched counts the body bytes received."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.url = url
        self.headers = dict(headers or {})
        self.bytes_fetched = 0
        self.size: int | None = None

    def _get(self, extra: dict[str, str]):
        req = urllib.request.Request(self.url, headers={**self.headers, **extra})
        try:
            return urllib.request.urlopen(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(self.url) from None
            raise PipelineError(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PipelineError(f"{self.url}: cannot connect ({reason})") from None

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the file, by one Range request."""
        if length <= 0:
            return b""
        with self._get({"Range": f"bytes={offset}-{offset + length - 1}"}) as resp:
            if resp.status != 206:
                raise PipelineError(f"{self.url}: the server ignored the Range request (HTTP {resp.status})")
            total = re.search(r"/(\d+)$", resp.headers.get("Content-Range", ""))
            if total:
                self.size = int(total.group(1))
            data = resp.read(length)
        self.bytes_fetched += len(data)
        if len(data) != length:
            raise PipelineError(f"{self.url}: asked for {length} bytes at {offset}, got {len(data)}")
        return data

    def read_all(self) -> bytes:
        """The whole (small) file by a plain GET."""
        with self._get({}) as resp:
            data = resp.read()
        self.bytes_fetched += len(data)
        self.size = len(data)
        return data


def hub_url(hub_id: str, filename: str, revision: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(hub_id, filename, revision=revision)


def hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers()


def resolve_revision(hub_id: str, revision: str) -> str:
    """A full commit sha stays as it is; a branch or tag is resolved through the Hub API."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(hub_id, revision=revision).sha
    except Exception as exc:  # the Hub client raises many types for an unreachable or unknown repo
        raise PipelineError(f"cannot resolve {hub_id}@{revision} ({first_line(exc)})") from None


def read_header(rf: RangeFile) -> tuple[int, dict]:
    """(data start, header) of a remote safetensors file: 8 bytes, then exactly the header."""
    (n,) = struct.unpack("<Q", rf.read(0, 8))
    if n > checkpoint.MAX_HEADER:
        raise PipelineError(f"{rf.url}: header length {n} is not that of a safetensors file")
    return checkpoint.parse_header(struct.pack("<Q", n) + rf.read(8, n), rf.url)


REMOTE_HEADERS = "remote_headers.json"
EMBEDDINGS = "embeddings.safetensors"


def write_headers(folder: Path, headers: dict[str, dict]) -> None:
    """Store each remote file's size, data start and header, so count works from them like local files."""
    (folder / REMOTE_HEADERS).write_text(json.dumps(headers, indent=1, sort_keys=True) + "\n")


def remote_entries(folder: Path) -> list[checkpoint.Entry]:
    data = read_json_object(folder / REMOTE_HEADERS, str(folder))
    entries = []
    for file, info in sorted(data.items()):
        checkpoint.plain_name(file, folder / REMOTE_HEADERS)
        entries += checkpoint.entries_from_header(info["header"], info["data_start"], file, info["size"])
    return entries


def copy_ranges(files: dict[str, RangeFile], wanted: list[checkpoint.Entry], out: Path) -> None:
    """Fetch the byte ranges of wanted tensors into one local safetensors file, streaming to disk."""
    header, offset = {}, 0
    for e in wanted:
        header[e.key] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.end - e.begin]}
        offset += e.end - e.begin
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(out, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for e in wanted:
            pos = e.begin
            while pos < e.end:
                n = min(REQUEST_BYTES, e.end - pos)
                fh.write(files[e.file].read(pos, n))
                pos += n
