"""Per-model caches of the stages' work, so a sweep of 200 models recounts only the models that changed.

DVC reruns a stage when any of its inputs changed; the stage then asks this cache, model by model, whether it
has done exactly this work before. An entry is keyed by the sha256 of everything the result depends on: the
model's validated params entry, its files as they are now (folder_state: the bytes of config.json and the other
small files, each weight file's size and modification time), the settings the stage reads and the code the stage
runs (code_version: the packages its dvc.yaml deps list, plus the torch and transformers versions), so an entry can
only be reused where the work would give the same result.

Entries are JSON files, `<paths.memo>/<stage>/<key>.json` (git-ignored, never pickle): the key, the payload and
the sha256 of the payload's text. A file that cannot be read, does not parse, or whose key or checksum disagree
is a miss, recomputed and overwritten; never trusted and never an error. A stage returns what it computed only
after a round trip through this encoding, so an output is byte for byte the same whether it came from the
cache or a cold run. Each stage keeps at most MAX_ENTRIES entries (the least recently used go first).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("memo")

CODE_ROOT = Path(__file__).resolve().parents[1]  # pipeline/
LIBRARIES = ("torch", "transformers")  # their versions decide what a model builds to
MAX_ENTRIES = 4096  # per stage: a few sweeps of a few hundred models, a few tens of MB at most


@functools.cache
def code_version(stage: str | None = None) -> str:
    """sha256 of the code a stage runs and of the libraries' versions: the pipeline/ paths its dvc.yaml deps list
    (its module and the packages it imports; tests/test_architecture.py holds those equal), so an edit elsewhere in
    the package keeps its entries; every source file under pipeline/ for anything else (or without dvc.yaml)."""
    h = hashlib.sha256()
    for path in _code_files(stage):
        h.update(path.relative_to(CODE_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in LIBRARIES:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{dist}=={version}\0".encode())
    return h.hexdigest()


def _code_files(stage: str | None) -> list[Path]:
    roots = [CODE_ROOT]
    dvc_yaml = CODE_ROOT.parent / "dvc.yaml"
    if stage is not None and dvc_yaml.is_file():
        import yaml

        try:
            spec = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage)
        except (OSError, yaml.YAMLError):
            spec = None
        deps = (spec or {}).get("deps") or []
        listed = [CODE_ROOT.parent / d for d in deps if isinstance(d, str) and d.startswith("pipeline/")]
        roots = listed or roots
    files = {f for r in roots for f in ([r] if r.is_file() else r.rglob("*.py"))}
    return sorted(files)


def folder_state(folder: str | os.PathLike) -> list[Any]:
    """What a stage reads of a model folder, as a key: the bytes of its small files (config.json, provenance.json,
    an index: hashed whole) and each weight file's name, size and modification time (an edit in place changes
    them; hashing gigabytes for a key would cost what the work costs)."""
    out: list[Any] = []
    root = Path(folder)
    try:
        paths = sorted(p for p in root.rglob("*") if p.is_file())
    except OSError:
        return out
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        name = path.relative_to(root).as_posix()
        if path.suffix == ".json" and st.st_size <= SMALL_FILE:
            out.append([name, file_digest(path)])
        else:
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


SMALL_FILE = 64 << 20  # a JSON file up to this size is hashed whole into a key


def _plain(value: Any) -> Any:
    """json.dumps' fallback: numpy scalars as Python numbers, dataclasses (a ModelSpec) and paths as data."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not cacheable")


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain, allow_nan=True)


def digest(*parts: Any) -> str:
    """sha256 of parts as canonical JSON (mappings sorted by key)."""
    return hashlib.sha256(dumps(parts).encode()).hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes ('' when it cannot be read: a key that can never match a stored one's)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def frame_to_plain(df: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as JSON-able data that frame_from_plain turns back into an equal frame (columns, dtypes, values)."""
    data = [[None if _missing(v) else v for v in row] for row in df.astype(object).itertuples(index=False)]
    return {"columns": list(df.columns), "dtypes": [str(t) for t in df.dtypes], "data": data}


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def frame_from_plain(obj: dict[str, Any]) -> pd.DataFrame:
    columns, dtypes, data = obj["columns"], obj["dtypes"], obj["data"]
    if len(columns) != len(dtypes) or any(len(row) != len(columns) for row in data):
        raise ValueError("ragged frame")
    if len(set(columns)) != len(columns):
        raise ValueError("repeated column")
    values = list(zip(*data, strict=True)) if data else [()] * len(columns)
    return pd.DataFrame(
        {c: pd.Series(list(v), dtype=t) for c, t, v in zip(columns, dtypes, values, strict=True)}, columns=columns
    )


class Memo:
    """One stage's entries. get() and put() never raise for a bad entry or a folder that cannot be written."""

    def __init__(self, root: str | os.PathLike, stage: str, code: str | None = None) -> None:
        self.dir = Path(root) / stage
        self.stage = stage
        self.code = code or stage  # the DVC stage whose code decides these entries (code_version)
        self.hits = 0
        self.misses = 0

    def key(self, *parts: Any) -> str:
        """The key of a result that depends on parts (and, always, on this stage and the code)."""
        return digest(self.stage, code_version(self.code), *parts)

    def get(self, key: str) -> Any | None:
        """The payload stored under key, or None (missing, unreadable, corrupt, or another key's)."""
        path = self.dir / f"{key}.json"
        try:
            entry = json.loads(path.read_bytes().decode("utf-8"))
            text = dumps(entry["payload"])
            if entry["key"] != key or entry["sha256"] != hashlib.sha256(text.encode()).hexdigest():
                raise ValueError("key or checksum disagree")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            log.warning("%s: cache entry %s is unreadable (%s); recomputing it", self.stage, path, type(exc).__name__)
            self.misses += 1
            return None
        self.hits += 1
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass
        return entry["payload"]

    def put(self, key: str, payload: Any) -> Any:
        """Store payload under key; return it as a later get() will (after the JSON round trip)."""
        text = dumps(payload)
        plain = json.loads(text)
        entry = dumps({"key": key, "sha256": hashlib.sha256(text.encode()).hexdigest(), "payload": plain})
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.dir)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(entry)
            os.replace(tmp, self.dir / f"{key}.json")
        except OSError as exc:
            log.warning("%s: cannot write the cache entry %s (%s); results are unaffected", self.stage, key, exc)
        return plain

    def fetch(self, key: str, check: Any = None) -> Any | None:
        """get(key), a payload check() refuses (raises) counted as a corrupt entry."""
        payload = self.get(key)
        if payload is None or check is None:
            return payload
        try:
            return check(payload)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            log.warning("%s: cache entry %s does not decode (%s); recomputing it", self.stage, key, exc)
            self.hits -= 1
            self.misses += 1
            return None

    def prune(self, keep: int = MAX_ENTRIES) -> None:
        """Remove the least recently used entries beyond keep, and temp files a killed run left."""
        try:
            files = [(p.stat().st_mtime, p) for p in self.dir.iterdir() if p.is_file()]
        except OSError:
            return
        for _, path in files:
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        entries = sorted((f for f in files if f[1].suffix == ".json"), reverse=True)
        for _, path in entries[keep:]:
            path.unlink(missing_ok=True)

    def summary(self) -> str:
        return f"{self.misses} computed, {self.hits} from the cache ({self.dir})"
