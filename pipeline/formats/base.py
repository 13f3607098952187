"""One interface for every checkpoint format, and the registry of those the pipeline reads.

A format is one module that defines a Format subclass and registers an instance (pipeline/formats/__init__.py
registers the built-in ones; a test registers a toy one the same way). Everything else asks the registry:
the download stage and `hmp count` which files of a folder to link and check, formats.load what their
headers hold, the count how the names map onto transformers' (name_scheme), the census what to read of a
repository (header_prefix) and how to put a folder back together from it.

A format gives, for a folder or a repository's file names:
- detection: the weight files of this format among them, in order (files), or the set a single named file
  belongs to (shard_set);
- the entries: each tensor's name, logical shape, stored dtype and byte range, from the headers alone,
  checked by the format's rules (entries);
- the config it implies, when its files carry one (carries_config: GGUF's metadata), else the config.json
  beside them;
- its tensor names: 'transformers' (the checkpoint's keys are the model's state-dict names, through
  transformers' own key mapping) or a scheme pipeline.model.reconcile maps (gguf);
- for a census, the leading bytes of a file that hold its header (header_prefix): a file made of those
  bytes and zeros to its size reads back as the same entries.
May import pipeline.core only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pipeline.formats.entries import Entry


class RangeReader(Protocol):
    """One file read by byte ranges (remote.RangeFile over HTTP, census.fetch.LocalFile on disk): size is None
    until the first read has told it; upto=True clamps a read to the file's end."""

    url: str
    size: int | None

    def read(self, offset: int, length: int, progress: Any = None, upto: bool = False) -> bytes: ...


class Format:
    """A checkpoint format. Subclass it, set name and suffixes, implement entries (and files if its shards are
    named by an index or a pattern), and register an instance with pipeline.formats.register."""

    name: str = ""  # as provenance, the summary and the census say it
    suffixes: tuple[str, ...] = ()  # its weight files' suffixes
    carries_config: bool = False  # its files hold the model's config (no config.json beside them)
    name_scheme: str = "transformers"  # how its tensor names map onto the model's (pipeline.model.reconcile)
    packed_types: bool = False  # its dtypes name block-quantized types (a header sum counts packed words)

    def files(self, names: list[str], folder: Path | None = None) -> list[str]:
        """The weight files of this format among a folder's or a repository's file names, in order; [] if none.
        folder: where the names are, when it is a local folder (an index there may be read)."""
        return sorted(n for n in names if Path(n).suffix in self.suffixes and "/" not in n)

    def shard_set(self, path: Path) -> list[Path]:
        """Every file of the model a single named file of this format belongs to (a split set), checked."""
        return [path]

    def entries(self, folder: Path, files: list[str]) -> list[Entry]:
        """Every tensor the files hold, from their headers alone, checked by the format's rules."""
        raise NotImplementedError

    def config(self, paths: list[Path]) -> dict:
        """The config.json its files imply (carries_config formats only)."""
        raise NotImplementedError(f"{self.name} files carry no config")

    def architecture(self, paths: list[Path]) -> str:
        """The family name its tensor names follow (name_scheme other than transformers)."""
        return ""

    def header_prefix(self, rf: RangeReader, where: str) -> bytes:
        """The leading bytes of a file that hold its whole header, checked (a census reads only these; a file made
        of them and zeros to rf.size reads back as the same entries). where names the file in errors."""
        raise NotImplementedError(f"the census cannot read {self.name} files by range")

    def owns(self, path: Path) -> bool:
        """A single file of this format (named as a source on its own)."""
        return path.suffix in self.suffixes

    def __repr__(self) -> str:
        return f"<format {self.name}>"


REGISTERED: dict[str, Format] = {}  # by name, in the order detection tries them


def register(fmt: Format) -> Format:
    """Make fmt one of the formats the pipeline reads; detection tries formats in the order they are registered."""
    if not fmt.name or not fmt.suffixes:
        raise ValueError(f"{fmt!r}: a format needs a name and its files' suffixes")
    if fmt.name in REGISTERED and REGISTERED[fmt.name] is not fmt:
        raise ValueError(f"a format named {fmt.name!r} is registered already")
    REGISTERED[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    REGISTERED.pop(name, None)


def named(name: str) -> Format | None:
    return REGISTERED.get(name)


def in_names(
    names: list[str], folder: Path | None = None, carrying: bool | None = None
) -> tuple[Format, list[str]] | None:
    """(the first registered format with weight files among names, those files), or None; carrying: only formats
    that carry their config (True) or only those beside a config.json (False)."""
    for fmt in REGISTERED.values():
        if carrying is not None and fmt.carries_config != carrying:
            continue
        if files := fmt.files(names, folder):
            return fmt, files
    return None


def for_file(path: Path) -> Format | None:
    """The format of a single file named as a source (a .gguf file), or None."""
    return next((fmt for fmt in REGISTERED.values() if fmt.owns(path)), None)


def suffixes() -> set[str]:
    return {s for fmt in REGISTERED.values() for s in fmt.suffixes}
