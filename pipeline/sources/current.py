"""Is a model folder the download stage made earlier still what the model's entry would make now?

The stage records in provenance.json the key of the model's validated params entry (with the code's version,
pipeline/core/memo.py) and, for source path, each source file it was made from (resolved path, size,
modification time) and the source folder's own modification time (a file added or removed changes it). A
folder is kept when its key matches, every source file is as recorded, and its own files are those recorded,
at their sizes. The Hub's files are pinned by the entry's revision; a branch name is not looked up again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.core import memo
from pipeline.core.params import ModelSpec

PROVENANCE = "provenance.json"


def entry_key(spec: ModelSpec) -> str:
    """What a folder depends on besides its source files: the validated entry and the code."""
    return memo.digest("download", memo.code_version("download"), spec)


def _stat(path: Path) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def origins(spec: ModelSpec, record: dict) -> list[dict[str, Any]]:
    """For source path: the source folder and each file of it the model folder was made from, as they are now."""
    if spec.source != "path":
        return []
    source = Path(spec.path).resolve()
    base = source if source.is_dir() else source.parent
    names = [f["name"] for f in record["files"]] + list(record.get("converted_from_pickle") or [])
    found = [_stat(base)] + [_stat(base / name) for name in sorted(set(names)) if (base / name).is_file()]
    if not source.is_dir():
        found.append(_stat(source))
    return [f for f in found if f is not None]


def unchanged(spec: ModelSpec, folder: Path, key: str) -> bool:
    """True when folder was made from this entry (key) and neither its sources nor its own files changed since."""
    try:
        record = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("entry") != key:
            return False
        files = {f["name"]: f["bytes"] for f in record["files"]}
        present = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != PROVENANCE}
        if present != files:
            return False
        recorded = record.get("origins") or []
        return all(_stat(Path(o["path"])) == o for o in recorded) and len(recorded) == len(origins(spec, record))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
