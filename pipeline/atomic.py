"""Atomic output writing: every file appears whole or not at all (temp file in the same folder, then rename)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

# Floats in CSVs: enough digits to round-trip a share, few enough to stay readable and stable.
FLOAT_FORMAT = "%.10g"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """CSV with a fixed float format and Unix line ends, so reruns are byte-identical."""
    write_text(path, df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def sync_dir(directory: str | os.PathLike, keep: Iterable[str]) -> None:
    """Delete files in directory that are not in keep (outputs of models no longer in the sweep)."""
    directory = Path(directory)
    keep = set(keep)
    for child in directory.iterdir():
        if child.is_file() and child.name not in keep:
            child.unlink()


@contextlib.contextmanager
def replacing_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside path; on success it replaces path whole, on failure it vanishes."""
    path = Path(path)
    created = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # leave no empty folders behind either
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst (no bytes copied) where the file system allows it, else copy."""
    src = Path(src).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
