"""Atomic output writing: every file appears whole or not at all (temp file in the same folder, then rename).

A stage that writes several files opens a `batch()`: each file is written to its temp file at once,
and only when every one of them is written (and the stage's work is done) are they renamed into
place, together. A stage that fails or is killed before that leaves the previous outputs untouched;
its temp files (named `.<name>.<random>.tmp`, ignored by DVC through .dvcignore) are removed the next
time the stage writes that folder. Files and folders get the permissions the umask allows, like any
other program's outputs.

A batch of several files commits through a journal: before the first rename, the list of renames is
written (itself atomically) to JOURNAL in the working folder, and removed after the last. A run killed
between two renames leaves the journal, and the next write or read of the pipeline's outputs finishes
the renames first (recover()), so readers never see a new summary.csv beside an old inventory.

A write that the file system refuses (read-only folder, full disk) is a PipelineError naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import PipelineError, first_line

# Floats in CSVs: enough digits to round-trip a share, few enough to stay readable and stable.
FLOAT_FORMAT = "%.10g"
TMP_SUFFIX = ".tmp"
JOURNAL = Path(".atomic-batch.journal")  # in the working folder (the repository root, where stages run)

log = logging.getLogger("atomic")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refused(path: Path, exc: OSError) -> PipelineError:
    """A one-line error for a write the file system refused."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted"}.get(exc.errno)
    if why is None:
        why = exc.strerror or first_line(exc)
    return PipelineError(f"cannot write {path}: {why}")


class _Batch:
    """Temp files written so far, renamed into place together by commit()."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temp file, final path)
        self.removals: list[Path] = []

    def commit(self) -> None:
        journal = len(self.pending) + len(self.removals) > 1
        if journal:  # the commit point: from here on, recover() finishes what a kill interrupts
            record = {
                "renames": [[str(tmp.absolute()), str(path.absolute())] for tmp, path in self.pending],
                "removals": [str(path.absolute()) for path in self.removals],
            }
            _write_journal(json.dumps(record))
        for tmp, path in self.pending:
            os.replace(tmp, path)
        for path in self.removals:
            path.unlink(missing_ok=True)
        if journal:
            JOURNAL.unlink(missing_ok=True)
        self.pending.clear()

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending.clear()


_batches: list[_Batch] = []


def _write_journal(text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{JOURNAL.name}.", suffix=TMP_SUFFIX, dir=JOURNAL.absolute().parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, JOURNAL)


def recover() -> None:
    """Finish the renames of a batch whose run was killed between two of them (its journal is still there)."""
    if not JOURNAL.is_file() or _batches:
        return
    try:
        record = json.loads(JOURNAL.read_text())
        renames, removals = record["renames"], record["removals"]
    except (OSError, ValueError, KeyError, TypeError):
        JOURNAL.unlink(missing_ok=True)  # not one this module wrote whole: nothing to finish
        return
    done = 0
    for tmp, path in renames:
        if os.path.lexists(tmp):  # renamed already if it is gone
            os.replace(tmp, path)
            done += 1
    for path in removals:
        Path(path).unlink(missing_ok=True)
    JOURNAL.unlink(missing_ok=True)
    log.warning("finished an interrupted write: %d of %d files renamed into place", done, len(renames))


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """Defer every write inside the block to its end, then rename all files into place together."""
    recover()
    b = _Batch()
    _batches.append(b)
    try:
        yield
        b.commit()
    except BaseException:
        b.discard()
        raise
    finally:
        _batches.remove(b)


def clean_leftovers(directory: Path, name: str | None = None) -> None:
    """Remove temp files and folders a killed run left in directory (all, or only those of one name)."""
    if not directory.is_dir():
        return
    pattern = f".{name}.*{TMP_SUFFIX}" if name else f".*{TMP_SUFFIX}"
    for child in directory.glob(pattern):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _mkdir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _refused(directory, exc) from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    recover()
    _mkdir(path.parent)
    clean_leftovers(path.parent, path.name)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _refused(path, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs honour the umask
        if _batches:
            _batches[-1].pending.append((tmp, path))
        else:
            os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _refused(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_changed(path: str | os.PathLike, data: bytes) -> None:
    """write_bytes, unless path already holds exactly data: a sweep of 200 per-model files rewrites only the ones
    that changed (each write is an fsync)."""
    path = Path(path)
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return
    except OSError:
        pass
    write_bytes(path, data)


def staged(path: str | os.PathLike) -> bytes:
    """What path holds once the current batch commits: its staged temp file if it has one, else the file itself."""
    path = Path(path)
    for b in reversed(_batches):
        for tmp, final in reversed(b.pending):
            if final == path:
                return tmp.read_bytes()
    return path.read_bytes()


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def csv_text(df: pd.DataFrame) -> str:
    """A frame's CSV text with a fixed float format and Unix line ends, so reruns are byte-identical."""
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """CSV with a fixed float format and Unix line ends (csv_text), so reruns are byte-identical."""
    write_text(path, csv_text(df))


def sync_dir(directory: str | os.PathLike, keep: Iterable[str]) -> None:
    """Delete files in directory that are not in keep (outputs of models no longer in the sweep).

    Inside a batch() the deletions happen at its commit, with the writes.
    """
    directory = Path(directory)
    keep = set(keep)
    if not directory.is_dir():
        return
    doomed = [child for child in directory.iterdir() if child.is_file() and child.name not in keep]
    pending = {tmp for b in _batches for tmp, _ in b.pending}
    doomed = [child for child in doomed if child not in pending]
    if _batches:
        _batches[-1].removals.extend(doomed)
    else:
        for child in doomed:
            child.unlink()


@contextlib.contextmanager
def replacing_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside path; on success it replaces path whole, on failure it vanishes."""
    path = Path(path)
    recover()
    created = [p for p in reversed(path.parents) if not p.exists()]
    _mkdir(path.parent)
    clean_leftovers(path.parent, path.name)  # what a killed run of this model left behind
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs honour the umask
    except OSError as exc:
        raise _refused(path, exc) from None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # leave no empty folders behind either
            with contextlib.suppress(OSError):
                parent.rmdir()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise _refused(path, exc) from None
        raise


def link(src: Path, dst: Path, folder: Path) -> None:
    """Make dst name src's bytes without copying them: a hard link, or across file systems a symlink.

    The download stage references a model's weights (in a source folder or the Hugging Face cache)
    this way, so a checkpoint is on disk once; data/models is not DVC-cached either (dvc.yaml). dst must
    be a new entry directly inside folder, judged after resolving every symlink on the way, and no folder
    is created: a name that came from a file can never place a link anywhere else.
    """
    src = Path(src).resolve()
    root = Path(folder).resolve()
    try:
        parent = Path(dst).parent.resolve(strict=True)
    except (OSError, RuntimeError):
        parent = None
    if parent != root or Path(dst).name in ("", ".", "..") or os.path.lexists(dst):
        raise PipelineError(f"{dst}: not a new file directly in {root}; nothing is linked outside the model folder")
    try:
        os.link(src, dst)
    except OSError:
        try:
            os.symlink(src, dst)
        except OSError as exc:
            raise _refused(Path(dst), exc) from None
