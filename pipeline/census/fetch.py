"""What a census reads of one repository: config.json, the safetensors index and every header, or a GGUF header.

From the Hub, by Range requests through huggingface_hub's client (pipeline/formats/remote.py: its
retries, its error classes, a deadline and a byte limit on every answer); offline (HF_HUB_OFFLINE), from
the local Hugging Face cache; from a local folder, from its files. Nothing else is read: no weights.
The result is plain data (bytes and dicts), so Dask can hand it to whichever worker counts that
architecture. Each repository may take at most MAX_REPO_BYTES; every request is bounded by remote.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.census.listing import Source
from pipeline.core.errors import UNAVAILABLE, PipelineError, first_line
from pipeline.formats import base, remote, safetensors_file
from pipeline.formats.entries import plain_name, regular_file

MAX_REPO_BYTES = 256 << 20  # headers of a 671B model in 163 shards take ~10 MB; 256 MB is not a header
MAX_SHARDS = 4096  # checkpoint files one index may list
MAX_SMALL = 16 << 20  # config.json or an index: an ImageNet-21k label map is ~1 MB, DeepSeek-V3's index ~9 MB
SHA = re.compile(r"[0-9a-f]{40}")
STATE_READS = 8  # shard headers (or quant states) of one repository read at once


@dataclass
class Fetched:
    """One repository's headers, as read: enough to count it, nothing more."""

    source: Source
    revision: str = ""  # the commit read (Hub), '' for a local folder
    config: bytes = b""
    fmt: str = ""  # a registered format's name (pipeline/formats/base.py) | '' (config.json alone)
    # file -> (its leading bytes that hold the header, the file's size), as its format reads them (header_prefix)
    prefixes: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    pieces: dict[str, dict[int, bytes]] = field(default_factory=dict)  # file -> offset -> bytes (quant states)
    index_total: Any = None  # the index's metadata.total_parameters, as it says
    api_total: Any = None  # the Hub API's safetensors.total, when the API was asked
    bytes_fetched: int = 0
    requests: int = 0


class LocalFile:
    """A local file read like a RangeFile (the cache, or a listed folder); bytes_fetched counts what was read."""

    def __init__(self, path: Path):
        self.url = str(path)
        self.path = path
        self.bytes_fetched = 0
        self.requests = 0
        self.size: int | None = None
        if path.exists() or path.is_symlink():  # there, so it must be a regular file (not a FIFO, a device, ...)
            self.size = regular_file(path).stat().st_size

    def _need(self) -> None:
        if self.size is None:
            raise FileNotFoundError(self.url)

    def read(self, offset: int, length: int, progress: Any = None, upto: bool = False) -> bytes:
        self._need()
        if upto:
            length = min(length, self.size - offset)
        if offset + length > self.size:
            raise PipelineError(
                f"{self.url}: asked for bytes {offset}-{offset + length - 1} of a {self.size}-byte file"
            )
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        self.bytes_fetched += len(data)
        self.requests += 1
        return data

    def read_all(self, limit: int = 0) -> bytes:
        self._need()
        if self.size > (limit or MAX_SMALL):
            raise PipelineError(f"{self.url}: {self.size:,} bytes, more than the {limit or MAX_SMALL:,} read of it")
        return self.read(0, self.size)


class Repo:
    """The files of one listed source, opened lazily, every read counted against the repository's budget."""

    def __init__(self, src: Source):
        self.src = src
        self.opened: dict[str, Any] = {}
        self.revision = ""
        self.api_total = None
        self.siblings: list[str] | None = None  # the files the Hub API listed, when it was asked
        self.api_requests = 0
        self.folder: Path | None = None
        if src.kind == "path":
            self.folder = Path(src.source).expanduser()
        elif _offline():
            self.folder = _cached_snapshot(src)
            self.revision = self.folder.name
        else:
            self.revision = self._resolve()
        self.headers = remote.hub_headers() if self.folder is None else {}

    def _resolve(self) -> str:
        """A commit sha as it is; a branch or tag through the Hub API (which also says its own count)."""
        if SHA.fullmatch(self.src.revision):
            return self.src.revision
        self.api_requests += 1
        try:
            info = remote.model_info(self.src.hub_id, self.src.revision)  # bounded in time and bytes
        except PipelineError as exc:  # missing, gated, unreachable, too slow
            raise PipelineError(
                f"cannot resolve {self.src.hub_id}@{self.src.revision} ({_said(exc)})", kind=UNAVAILABLE
            ) from None
        self.siblings = sorted(s.rfilename for s in info.siblings or []) if info.siblings is not None else None
        total = getattr(getattr(info, "safetensors", None), "total", None)
        self.api_total = total if isinstance(total, int | float) and not isinstance(total, bool) else None
        if not isinstance(info.sha, str) or not SHA.fullmatch(info.sha):
            raise PipelineError(f"{self.src.hub_id}@{self.src.revision}: the Hub API named no commit")
        return info.sha

    def file(self, name: str) -> Any:
        if name not in self.opened:
            if self.folder is not None:
                self.opened[name] = LocalFile(self.folder / name)
            else:
                url = remote.hub_url(self.src.hub_id, name, self.revision)
                self.opened[name] = remote.RangeFile(url, self.headers)
        self._budget()
        return self.opened[name]

    def small(self, name: str) -> bytes | None:
        """A whole small file (config.json, an index), None when the repository has none."""
        try:
            blob = self.file(name).read_all()
        except FileNotFoundError:
            return None
        finally:
            self._budget()
        if len(blob) > MAX_SMALL:
            raise PipelineError(
                f"{name}: {len(blob):,} bytes; a config or an index of a census holds at most {MAX_SMALL:,}"
            )
        return blob

    @property
    def bytes_fetched(self) -> int:
        return sum(f.bytes_fetched for f in list(self.opened.values()))

    def _budget(self) -> None:
        if self.bytes_fetched > MAX_REPO_BYTES:
            raise PipelineError(f"more than {MAX_REPO_BYTES:,} bytes of headers; not a checkpoint census reads")

    def names(self) -> list[str]:
        """Every file the repository holds (asked only when config.json is missing: a GGUF repository)."""
        if self.folder is not None:  # the folder's own files, as a checkpoint folder holds them: never a walk down
            return _listed(self.folder)
        if self.siblings is not None:
            return self.siblings
        self.api_requests += 1
        try:
            info = remote.model_info(self.src.hub_id, self.revision)
        except PipelineError as exc:
            raise PipelineError(
                f"cannot list {self.src.hub_id}@{self.revision} ({_said(exc)})", kind=UNAVAILABLE
            ) from None
        return sorted(s.rfilename for s in info.siblings or [])


MAX_LISTED = 10_000  # entries of a local folder looked at for its GGUF files (a home folder is not a checkpoint)


def _listed(folder: Path) -> list[str]:
    """The regular files directly in folder, at most MAX_LISTED entries looked at, else one line."""
    import os

    names = []
    with os.scandir(folder) as entries:
        for n, entry in enumerate(entries):
            if n >= MAX_LISTED:
                raise PipelineError(f"{folder}: more than {MAX_LISTED:,} entries; not a checkpoint folder")
            if entry.is_file(follow_symlinks=False):
                names.append(entry.name)
    return sorted(names)


def fetch(src: Source) -> Fetched:
    """Read one source's config.json and headers (or a GGUF header); a PipelineError says why it cannot be."""
    if src.kind == "bad":
        raise PipelineError(src.problem, kind=src.problem_kind)
    if src.kind == "path" and Path(src.source).expanduser().is_file():
        fmt = base.for_file(Path(src.source))
        if fmt is None or not fmt.carries_config:
            raise PipelineError("a local file in a census list must be a .gguf file; list a checkpoint folder")
        src = Source(src.line, src.source, "", "path", file=Path(src.source).name, hub_total=src.hub_total)
        repo = Repo(Source(src.line, str(Path(src.source).expanduser().parent), "", "path"))
    else:
        repo = Repo(src)
    out = Fetched(src, repo.revision, api_total=repo.api_total)
    try:
        if src.file:
            fmt = base.for_file(Path(src.file))
            _prefixes(repo, fmt, fmt.files([src.file]), out)
        else:
            _checkpoint(repo, out)
    except FileNotFoundError as exc:
        raise PipelineError(f"{short(str(exc.args[0]))} not found", kind=UNAVAILABLE) from None
    out.bytes_fetched = repo.bytes_fetched
    out.requests = sum(getattr(f, "requests", 0) for f in list(repo.opened.values())) + repo.api_requests
    return out


def _checkpoint(repo: Repo, out: Fetched) -> None:
    config = repo.small("config.json")
    if config is None:  # a format whose files carry the config (GGUF), the one model the repository holds
        try:
            found = base.in_names(repo.names(), carrying=True)
        except PipelineError as exc:
            raise PipelineError(f"no config.json, and {exc.message}", kind=exc.kind) from None
        if found is None:
            raise PipelineError("no config.json and no GGUF file")
        _prefixes(repo, *found, out)
        return
    out.config = config
    # Another registered format beside config.json needs the repository's file list (a Hub API request);
    # safetensors needs none (its index, else model.safetensors), so the list is asked only when one is registered.
    others = [f for f in base.REGISTERED.values() if not f.carries_config and f is not safetensors_file.FORMAT]
    if others and (found := base.in_names(repo.names(), carrying=False)) and found[0] is not safetensors_file.FORMAT:
        _prefixes(repo, *found, out)  # config.json beside another registered format's files
        return
    index = repo.small(safetensors_file.SAFETENSORS_INDEX)
    if index is None:
        try:
            _prefixes(repo, safetensors_file.FORMAT, [safetensors_file.SAFETENSORS_SINGLE], out)
        except FileNotFoundError:
            return  # config.json alone: counted from it, and said so
    else:  # a sharded checkpoint: its headers read several at a time, in the index's order
        names, out.index_total = _index(index)
        _prefixes(repo, safetensors_file.FORMAT, names, out)
    _quant_states(repo, out)


def _quant_states(repo: Repo, out: Fetched) -> None:
    """bitsandbytes 4-bit keeps each weight's shape in a small JSON tensor (its quant state): those bytes are read
    too, a few hundred each, several requests in flight (the rest of the data never is)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.formats import MAX_STATE_BYTES, quant

    try:
        q = quant.quantization_config(json.loads(out.config))
    except (ValueError, PipelineError, AttributeError):
        return  # the count says what is wrong with the config
    if not q or q.get("quant_method") != "bitsandbytes":
        return
    wanted = []
    for name, (prefix, _) in out.prefixes.items():
        data_start, header = safetensors_file.parse_header(prefix, name)
        for key, t in header.items():
            if ".quant_state." in key and isinstance(t, dict):
                begin, end = (data_start + o for o in t["data_offsets"])
                if end - begin > MAX_STATE_BYTES:
                    raise PipelineError(f"tensor {key!r}: {end - begin:,} bytes is too large for a quant state")
                wanted.append((name, begin, end))
    with ThreadPoolExecutor(max_workers=STATE_READS) as pool:
        blobs = list(pool.map(lambda w: repo.file(w[0]).read(w[1], w[2] - w[1]), wanted))
    for (name, begin, _), blob in zip(wanted, blobs, strict=True):
        out.pieces.setdefault(name, {})[begin] = blob


def _index(blob: bytes) -> tuple[list[str], Any]:
    """The shard names an index lists, and the total it claims (metadata.total_parameters), as it says it."""
    try:
        data = json.loads(blob)
    except ValueError as exc:
        raise PipelineError(f"{safetensors_file.SAFETENSORS_INDEX}: not JSON ({first_line(exc)})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PipelineError(f"{safetensors_file.SAFETENSORS_INDEX}: not a checkpoint index (no weight_map)")
    names = sorted({plain_name(s, Path(safetensors_file.SAFETENSORS_INDEX)) for s in weight_map.values()})
    if len(names) > MAX_SHARDS:
        raise PipelineError(f"{safetensors_file.SAFETENSORS_INDEX}: lists {len(names):,} files (at most {MAX_SHARDS})")
    meta = data.get("metadata")
    claimed = meta.get("total_parameters") if isinstance(meta, dict) else None
    if claimed is not None and (isinstance(claimed, bool) or not isinstance(claimed, int | float | str)):
        claimed = json.dumps(claimed)[:100]  # not a number: kept as written (cut), and flagged
    return names, claimed


def _prefixes(repo: Repo, fmt: Any, names: list[str], out: Fetched) -> None:
    """The leading bytes that hold each file's header, as the format reads them (Format.header_prefix), several
    files at a time, in the given order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> tuple[bytes, int]:
        rf = repo.file(name)
        prefix = fmt.header_prefix(rf, short(rf.url))
        return prefix, rf.size

    if len(names) == 1:
        out.prefixes = {names[0]: one(names[0])}
    else:
        with ThreadPoolExecutor(max_workers=STATE_READS) as pool:
            out.prefixes = dict(zip(names, pool.map(one, names), strict=True))
    out.fmt = fmt.name


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _cached_snapshot(src: Source) -> Path:
    """The cached snapshot folder of src at its revision (HF_HUB_OFFLINE: the census reads the cache alone)."""
    from huggingface_hub import constants

    repo_dir = Path(constants.HF_HUB_CACHE) / f"models--{src.hub_id.replace('/', '--')}"
    revision = src.revision
    if not SHA.fullmatch(revision):
        ref = repo_dir / "refs" / revision
        revision = ref.read_text().strip() if ref.is_file() else ""
    folder = repo_dir / "snapshots" / revision
    if not revision or not folder.is_dir():
        raise PipelineError(
            f"HF_HUB_OFFLINE is set and {src.hub_id}@{src.revision} is not in the cache {constants.HF_HUB_CACHE}",
            kind=UNAVAILABLE,
        )
    return folder


def short(url: str) -> str:
    """A URL without the endpoint (so a row does not depend on which host or port served it)."""
    from huggingface_hub import constants

    return url.replace(constants.ENDPOINT.rstrip("/") + "/", "")


def _said(exc: BaseException) -> str:
    if isinstance(exc, PipelineError):
        return short(first_line(exc))
    return short(f"{type(exc).__name__}: {first_line(exc)}")
