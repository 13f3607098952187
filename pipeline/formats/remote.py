"""Reading a Hub checkpoint by HTTP Range requests: headers to count, embedding byte ranges to check a tie.

Every request goes through huggingface_hub's own HTTP machinery: its shared client (get_session:
proxies from the environment, its user agent, HF_HUB_OFFLINE enforced), its retries with backoff on
connection errors, timeouts and 429/5xx (http_stream_backoff), its error classification
(hf_raise_for_status: a missing repository, a gated one, a revision that is not there), and the
token and headers of build_hf_headers(). hub_url() builds the resolve URL for a pinned commit
(honouring HF_ENDPOINT) and resolve_revision() turns a branch into a commit sha. What stays ours:
a response that is not 206 to a Range request is refused before its body is read (no whole file by
accident), the Content-Range must be the range asked for and name the same file size as every earlier
answer for that file, each answer must arrive within a deadline, and bytes_fetched counts exactly the
body bytes received.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import UNAVAILABLE, PipelineError, first_line, read_json_object
from pipeline.formats import safetensors_file
from pipeline.formats.entries import Entry, plain_name, regular_file

REQUEST_BYTES = 16 << 20  # one Range request fetches at most this much
MAX_SMALL_FILE = 64 << 20  # config.json or an index read whole: anything longer is not one
# Each answer's overall deadline: MIN_SECONDS, plus its bytes at MIN_RATE. huggingface_hub's timeout only
# bounds each read, so a server that sends a byte every few seconds would otherwise be read for hours.
# The environment (HMP_RANGE_MIN_SECONDS, HMP_RANGE_MIN_RATE in bytes a second) overrides both.
MIN_SECONDS = 30.0
MIN_RATE = 64 << 10  # 64 KiB/s: a 16 MiB request may take 4.5 minutes; slower than that is a stalled server


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise PipelineError(f"{name}={raw!r} must be a positive number")
    return value


def deadline(length: int) -> float:
    """Seconds an answer of length bytes may take, from its headers to its last byte."""
    return _setting("HMP_RANGE_MIN_SECONDS", MIN_SECONDS) + length / _setting("HMP_RANGE_MIN_RATE", MIN_RATE)


class RangeFile:
    """A remote file read by byte ranges; bytes_fetched counts the body bytes received.

    headers go with every request (hub_headers() for the Hub: token and user agent); timeout is the
    seconds to wait for the server to connect or send data, huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT
    unless given.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float | None = None):
        from huggingface_hub import constants

        self.url = url
        self.headers = dict(headers or {})
        self.timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT if timeout is None else timeout
        self.bytes_fetched = 0
        self.requests = 0  # HTTP requests made (retries by huggingface_hub's backoff count as one)
        self.size: int | None = None

    @contextlib.contextmanager
    def _get(self, extra: dict[str, str]) -> Iterator[Any]:
        """A streamed GET through huggingface_hub (retried on connection errors, timeouts, 429 and 5xx).

        404 is FileNotFoundError; any other error status or a failed connection is one line naming the URL.
        The body is not read here: the caller checks the status first.
        """
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff, httpx

        # identity: Range and the byte count apply to the file itself, never to a compressed form of it
        headers = {**self.headers, "Accept-Encoding": "identity", **extra}
        self.requests += 1
        try:
            with http_stream_backoff("GET", self.url, headers=headers, timeout=self.timeout) as resp:
                if resp.status_code == 404 and resp.headers.get("X-Error-Code") in (None, "EntryNotFound"):
                    raise FileNotFoundError(self.url)  # the Hub names a missing repository or revision otherwise
                hf_raise_for_status(resp)
                yield resp
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise PipelineError(
                f"{self.url}: HTTP {exc.response.status_code}: no such repository, or it is private or gated "
                "(set HF_TOKEN to a token that may read it)",
                kind=UNAVAILABLE,
            ) from None
        except RevisionNotFoundError:
            raise PipelineError(
                f"{self.url}: HTTP 404: the repository has no such revision", kind=UNAVAILABLE
            ) from None
        except HfHubHTTPError as exc:
            status, reason = exc.response.status_code, exc.response.reason_phrase
            said = f" ({exc.server_message.strip().splitlines()[0]})" if (exc.server_message or "").strip() else ""
            if status in (401, 403):
                said += "; set HF_TOKEN to a token that may read it"
            kind = UNAVAILABLE if status in (401, 403, 404) else "invalid"
            raise PipelineError(f"{self.url}: HTTP {status} {reason}{said}", kind=kind) from None
        except OfflineModeIsEnabled:
            raise PipelineError(
                f"{self.url}: HF_HUB_OFFLINE is set, so the Hub is not asked", kind=UNAVAILABLE
            ) from None
        except httpx.TimeoutException:
            raise PipelineError(
                f"{self.url}: no answer within {self.timeout:g} s (HF_HUB_DOWNLOAD_TIMEOUT)", kind=UNAVAILABLE
            ) from None
        except httpx.HTTPError as exc:
            raise PipelineError(f"{self.url}: cannot connect ({first_line(exc)})", kind=UNAVAILABLE) from None

    def _body(self, resp: Any, limit: int, expected: int | None, progress: Any = None) -> bytes:
        """The response body, at most limit bytes, each received byte counted, within deadline(expected); for a
        body of unknown length (expected None: no Content-Length, a chunked answer), within deadline of the bytes
        received so far, so that a server dripping a small file byte by byte is cut after MIN_SECONDS or so.

        A failure while the body streams is reported here, as one line: raised inside
        http_stream_backoff's block, the client's own error would restart the request there. The
        deadline is checked as each piece arrives (iter_raw without a chunk size yields every read
        as it comes): a trickle is cut at most one read after it, silence by the per-read timeout.
        """
        from huggingface_hub.utils import httpx

        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise PipelineError(f"{self.url}: the server sent the file {encoding}-encoded; asked for it as it is")
        start = time.monotonic()
        data = bytearray()
        try:
            for block in resp.iter_raw():
                self.bytes_fetched += len(block)
                data += block
                if progress is not None:
                    progress.update(len(block))
                if len(data) > limit:
                    raise PipelineError(f"{self.url}: the server sent more than the {limit} bytes asked for")
                elapsed = time.monotonic() - start
                allowed = deadline(len(data) if expected is None else expected)
                if (expected is None or len(data) < expected) and elapsed > allowed:
                    of = "" if expected is None else f" of {expected:,}"
                    raise PipelineError(
                        f"{self.url}: {len(data):,}{of} bytes received in {elapsed:.1f} s, "
                        f"past this request's deadline of {allowed:.1f} s (HMP_RANGE_MIN_SECONDS plus the bytes "
                        "at HMP_RANGE_MIN_RATE bytes a second)"
                    )
        except httpx.HTTPError as exc:
            raise PipelineError(
                f"{self.url}: the transfer broke off after {len(data)} bytes ({first_line(exc)})", kind=UNAVAILABLE
            ) from None
        return bytes(data)

    def read(self, offset: int, length: int, progress: Any = None, upto: bool = False) -> bytes:
        """Bytes [offset, offset + length) of the file, by one Range request (progress: a bar to update).

        upto: the file may end sooner; then the bytes to its end (the server's Content-Range must say so)."""
        if length <= 0:
            return b""
        last = offset + length - 1
        with self._get({"Range": f"bytes={offset}-{last}"}) as resp:
            if resp.status_code != 206:
                raise PipelineError(f"{self.url}: the server ignored the Range request (HTTP {resp.status_code})")
            got = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
            if got is None or int(got.group(1)) != offset or int(got.group(2)) > last:
                raise PipelineError(
                    f"{self.url}: asked for bytes {offset}-{last}, "
                    f"the server sent {resp.headers.get('Content-Range') or 'no Content-Range'}"
                )
            if got.group(3) != "*":
                self._same_size(int(got.group(3)))
            if upto and int(got.group(2)) < last and self.size is not None and int(got.group(2)) == self.size - 1:
                length = self.size - offset  # the file ends first, as its Content-Range says
            data = self._body(resp, length, length, progress)
        if len(data) != length:
            raise PipelineError(f"{self.url}: asked for {length} bytes at {offset}, got {len(data)}")
        return data

    def read_all(self, limit: int = MAX_SMALL_FILE) -> bytes:
        """The whole (small) file by a plain GET: at most limit bytes are accepted."""
        with self._get({}) as resp:
            if resp.status_code != 200:
                raise PipelineError(f"{self.url}: HTTP {resp.status_code} to a plain GET (200 expected)")
            announced = resp.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limit:
                raise PipelineError(f"{self.url}: {int(announced):,} bytes, more than the {limit:,} read of it")
            expected = min(int(announced), limit) if announced.isdigit() else None
            data = self._body(resp, limit, expected)
        self._same_size(len(data))
        return data

    def _same_size(self, size: int) -> None:
        """Every answer about this file must name one size: a file that changes between requests (a revision
        that moved, a server serving two versions) would pair one version's header with another's bytes."""
        if self.size is not None and size != self.size:
            raise PipelineError(
                f"{self.url}: the file is {size:,} bytes in this answer but was {self.size:,} in an earlier one; "
                "it changed between requests"
            )
        self.size = size


def hub_url(hub_id: str, filename: str, revision: str) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(hub_id, filename, revision=revision)


LIBRARY_NAME = "how-many-params"  # named in the user agent huggingface_hub builds, before its own


def hub_headers() -> dict[str, str]:
    """huggingface_hub's headers for a Hub request: its token (HF_TOKEN or the stored login) and user agent."""
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name=LIBRARY_NAME)


def resolve_revision(hub_id: str, revision: str) -> str:
    """A full commit sha stays as it is; a branch or tag is resolved through the Hub API."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        sha = model_info(hub_id, revision).sha
    except PipelineError as exc:
        raise PipelineError(f"cannot resolve {hub_id}@{revision} ({exc})", kind=exc.kind) from None
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise PipelineError(f"cannot resolve {hub_id}@{revision} (the Hub API named no commit)")
    return sha


MAX_API_ANSWER = 16 << 20  # the Hub API's answer about one repository (its file list included)


def model_info(hub_id: str, revision: str | None = None) -> Any:
    """huggingface_hub's ModelInfo of a repository, asked as HfApi.model_info asks it (the same URL and headers,
    its retries and error classes), but bounded as every request here is: a deadline on the whole answer and a
    byte limit, so that an API answer dripped byte by byte cannot hold a caller for minutes."""
    from urllib.parse import quote

    from huggingface_hub import constants
    from huggingface_hub.hf_api import ModelInfo

    url = f"{constants.ENDPOINT}/api/models/{hub_id}"
    if revision is not None:
        url += f"/revision/{quote(revision, safe='')}"
    rf = RangeFile(url, hub_headers())
    try:
        data = json.loads(rf.read_all(MAX_API_ANSWER))
        return ModelInfo(**data)
    except FileNotFoundError:
        raise PipelineError(f"{url}: HTTP 404: no such repository or revision", kind=UNAVAILABLE) from None
    except (ValueError, TypeError) as exc:
        raise PipelineError(
            f"{url}: the Hub API's answer is not a repository's description ({first_line(exc)})"
        ) from None


def read_header(rf: RangeFile, guess: int = 0) -> tuple[int, dict]:
    """(data start, header) of a remote safetensors file: 8 bytes, then exactly the header.

    Why not a library reader (huggingface_hub 2.4, safetensors 0.8):
    - HfApi.parse_safetensors_file_metadata and get_safetensors_metadata fetch a fixed first 100 kB
      whatever the header's length, so bytes_fetched could not be the header alone; they take any 2xx
      reply (a server that ignores Range sends the whole file, read into memory) and never learn the
      file's size (no Content-Range), which the tiling check below needs.
    - They do not validate: the JSON is decoded with errors="ignore", a repeated tensor name silently
      replaces the first, and no dtype, no shape against its byte count and no tiling of the data
      region is checked, so a header that lends one tensor's bytes to another passes.
    - get_safetensors_metadata adds file_exists (a HEAD per file) and hf_hub_download of the index
      (through the cache) for what one Range request gives.
    - safetensors' own reader (safe_open, deserialize) validates, but only a whole local file or
      buffer, which range reads exist to avoid.
    So the bytes come through huggingface_hub's HTTP client (RangeFile) and safetensors_file.py's rules
    (parse_header, entries_from_header) judge the header.

    With guess, the first request asks for that many bytes (the whole header of most files: one request
    instead of two, what a census of thousands of repositories wants), then for the rest if it is longer.
    """
    return safetensors_file.parse_header(safetensors_file.header_bytes(rf, guess), rf.url)


REMOTE_HEADERS = safetensors_file.REMOTE_HEADERS
EMBEDDINGS = "embeddings.safetensors"


def write_headers(folder: Path, headers: dict[str, dict]) -> None:
    """Store each remote file's size, data start and header, so count works from them like local files."""
    (folder / REMOTE_HEADERS).write_text(json.dumps(headers, indent=1, sort_keys=True) + "\n")


def remote_entries(folder: Path) -> list[Entry]:
    """The tensors write_headers() recorded, each file's header checked again by the format's rules."""
    where = folder / REMOTE_HEADERS
    data = read_json_object(regular_file(where), str(folder))
    entries = []
    for file, info in sorted(data.items()):
        plain_name(file, where)
        if not isinstance(info, dict) or not all(isinstance(info.get(k), int) for k in ("data_start", "size")):
            raise PipelineError(f"{where}: {file}: not a record of size, data_start and header")
        if not isinstance(info.get("header"), dict):
            raise PipelineError(f"{where}: {file}: its header is not an object")
        entries += safetensors_file.entries_from_header(
            info["header"], info["data_start"], file, info["size"], str(where)
        )
    return entries


def copy_ranges(files: dict[str, RangeFile], wanted: list[Entry], out: Path, desc: str = "") -> None:
    """Fetch the byte ranges of wanted tensors into one local safetensors file, streaming to disk.

    A progress bar (bytes; on a terminal only, see pipeline/core/progress.py) follows the transfer.
    """
    from pipeline.core import progress

    header, offset = {}, 0
    for e in wanted:
        header[e.key] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.end - e.begin]}
        offset += e.end - e.begin
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(out, "wb") as fh, progress.bar(None, desc or "embeddings", "B", total=offset) as shown:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for e in wanted:
            pos = e.begin
            while pos < e.end:
                n = min(REQUEST_BYTES, e.end - pos)
                fh.write(files[e.file].read(pos, n, shown))
                pos += n
