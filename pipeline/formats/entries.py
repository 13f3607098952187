"""What every checkpoint format turns its files into: entries (name, logical shape, stored dtype, byte range), and
the rules every name and file read from a model folder keeps (a plain file name inside the folder; a regular
file, never a device, a FIFO or a folder).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from math import prod
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.errors import PipelineError

# Bits per stored value of every dtype the safetensors format defines.
DTYPE_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U8": 8, "BOOL": 8,
    "U16": 16, "U32": 32, "U64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "C64": 64, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
}  # fmt: skip


DTYPE_BYTES = {dtype: bits // 8 for dtype, bits in DTYPE_BITS.items() if bits % 8 == 0}


@dataclass(frozen=True)
class Entry:
    """One tensor of a checkpoint, as its header describes it."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    begin: int  # byte offset from the start of the file
    end: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file(path: Path) -> Path:
    """path itself, if it is (or links to) a regular file; otherwise a PipelineError saying what it is."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except FileNotFoundError:
        if path.is_symlink():
            raise PipelineError(f"{path}: a symlink to nothing ({path.readlink()})") from None
        raise PipelineError(f"{path} is missing") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        target = f" (a symlink to {path.resolve()})" if path.is_symlink() else ""
        raise PipelineError(f"{path}: {kind}{target}, not a regular file; only regular files are read")
    return path


def plain_name(name: Any, source: Path) -> str:
    """A file name read from source (an index's shard name): it must name a file inside source's folder."""
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{source}: a file name must be a non-empty string, got {name!r}")
    pure = PurePosixPath(name)
    if pure.name != name or name in (".", "..") or "\\" in name or "\x00" in name:
        raise PipelineError(
            f"{source}: file name {name!r} points outside {source.parent}; only plain file names are allowed"
        )
    return name
