"""The list a census reads: Hub ids (with revisions) or local folders, as text or as CSV.

Text: one source per line, `owner/name`, `owner/name@REVISION` or a local folder (or a .gguf file);
blank lines and `#` comments are skipped. CSV (a first line naming the column `source`): the columns
`source`, and optionally `revision` and `hub_total` (the Hub API's parameter count, to set beside ours).
A line that cannot be a source is still a row of the census (its error says why): the census never
stops for one line. Only a list that cannot be read at all (missing, not text, no source column) stops it.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UNAVAILABLE, PipelineError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# a path inside a repository (a GGUF file of a repo holding several): plain names joined by '/', no '..'
REPO_FILE = re.compile(r"(?!.*\.\.)[\w.\-]+(/[\w.\-]+)*(?P<suffix>\.\w+)")  # a file of a config-carrying format
REVISION = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.\-/]{0,199}")
MAX_LIST_BYTES = 64 << 20  # two and a half million repositories of 25 characters; more is not a list
MAX_SOURCE = 4096  # characters of one source (a path or an id)
MAX_CLAIM = 10**20  # a self-reported total beyond this is not read as a number at all (1.8e308 is still shown)


@dataclass(frozen=True)
class Source:
    """One listed repository or folder: where it is, and what the list says of it."""

    line: int  # where it is in the list (1-based), for messages
    source: str  # as listed
    revision: str  # as listed ('' for a local folder, 'main' when the list names none)
    kind: str  # hub | path | bad
    hub_id: str = ""
    file: str = ""  # a .gguf file inside the repository, when the source names one
    hub_total: str = ""  # the Hub API's figure as the list gives it (text: kept exactly, judged later)
    problem: str = ""  # why this line is not a source (kind bad)
    problem_kind: str = "invalid"  # the problem's PipelineError kind: 'unavailable' when what it names is not there

    @property
    def key(self) -> str:
        """What identifies this row across a restarted census: its place and what it names."""
        return f"{self.line}\t{self.source}\t{self.revision}"


def read(path: str | Path) -> list[Source]:
    """Every source of the list file, in its order."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # a pipe works too (/dev/stdin); a device is cut at MAX_LIST_BYTES
            blob = fh.read(MAX_LIST_BYTES + 1)
    except IsADirectoryError:
        raise PipelineError(f"census list {path}: is a folder; name the list file") from None
    except OSError as exc:
        raise PipelineError(f"census list {path}: cannot be read ({exc.strerror or exc})") from None
    if len(blob) > MAX_LIST_BYTES:
        raise PipelineError(f"census list {path}: more than {MAX_LIST_BYTES:,} bytes; split it")
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"census list {path}: not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        raise PipelineError(f"census list {path}: holds NUL bytes; not a text or CSV file")
    lines = [line.rstrip("\r") for line in text.split("\n")]  # only \n (and \r\n) end a line
    first = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    if "source" in [c.strip().lower() for c in next(csv.reader([first]), [])]:
        return _from_csv(lines, path)
    out = []
    for i, line in enumerate(lines, 1):
        text = line.split(" #", 1)[0].strip()  # a comment after the source
        if text and not text.startswith("#"):
            out.append(source(i, *_split_revision(text)))
    return out


def _exists(text: str) -> bool:
    """Whether text names a local file or folder (a name the system cannot even look up does not)."""
    try:
        return Path(text).expanduser().exists()
    except (OSError, RuntimeError, ValueError):  # too long, ~nosuchuser, ...
        return False


def _split_revision(text: str) -> tuple[str, str]:
    if "@" in text and not _exists(text):
        name, _, revision = text.rpartition("@")
        return name, revision
    return text, ""


def _from_csv(lines: list[str], path: Path) -> list[Source]:
    out = []
    header: list[str] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line]), [])  # one line, one row: a quote left open cannot swallow the next lines
        if line.count('"') % 2:
            raise PipelineError(f"census list {path}: line {number}: a quote is opened and not closed")
        if header is None:
            header = [c.strip().lower() for c in row]
            unknown = [c for c in header if c not in ("source", "revision", "hub_total")]
            if unknown:
                raise PipelineError(
                    f"census list {path}: unknown column {unknown[0]!r} (columns: source, revision, hub_total)"
                )
            if len(set(header)) != len(header):
                raise PipelineError(f"census list {path}: a column is named twice ({', '.join(header)})")
            continue
        if len(row) != len(header):
            out.append(_bad(number, line, f"{len(row)} fields, the header names {len(header)}"))
            continue
        cells = dict(zip(header, (c.strip() for c in row), strict=True))
        out.append(source(number, cells["source"], cells.get("revision", ""), cells.get("hub_total", "")))
    return out


def _bad(line: int, text: str, problem: str, kind: str = "invalid") -> Source:
    return Source(line, text, "", "bad", problem=problem, problem_kind=kind)


def source(line: int, text: str, revision: str = "", hub_total: str = "") -> Source:
    """One list line as a source: a local folder or file that exists, else a Hub id with an optional file in it."""
    if not text:
        return _bad(line, text, "empty source")
    if hub_total and not re.fullmatch(r"\d+(\.\d*)?([eE]\+?\d+)?", hub_total):
        return _bad(line, text, f"hub_total {hub_total!r} is not a count")
    if len(text) > MAX_SOURCE:
        return _bad(line, text[:MAX_SOURCE] + "…", f"longer than {MAX_SOURCE} characters; not a source")
    exists = _exists(text)
    if text.startswith((".", "/", "~")) or exists:
        if revision:
            return _bad(line, text, "a revision applies to a Hub id, not to a local folder", UNAVAILABLE)
        if not exists:
            return _bad(line, text, "no such file or folder", UNAVAILABLE)
        return Source(line, text, "", "path", hub_total=hub_total)
    parts = text.split("/")
    hub_id, file = "/".join(parts[:2]), "/".join(parts[2:])
    if not HUB_ID.fullmatch(hub_id) or (file and not _carrying_file(file)):
        return _bad(line, text, "not a Hub id (owner/name, or owner/name/FILE.gguf) nor a local folder")
    revision = revision or "main"
    if not REVISION.fullmatch(revision):
        return _bad(line, text, f"revision {revision!r} is not a branch, tag or commit name")
    return Source(line, text, revision, "hub", hub_id, file, hub_total)


def claim(text: str) -> int | float | str | None:
    """A self-reported count as a number (None when absent); floats stay floats: 1.8e308 is not an integer."""
    if text in ("", None):
        return None
    if text.isdigit() and len(text) < 21:
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return text  # not a number: kept as written, and flagged where it is set beside the count
    return int(value) if math.isfinite(value) and value < MAX_CLAIM and value == int(value) else value


def _carrying_file(name: str) -> bool:
    """A file name inside a repository of a registered format whose files carry their config (a .gguf file)."""
    from pipeline.formats import base

    m = REPO_FILE.fullmatch(name)
    return bool(m) and any(f.carries_config and m["suffix"] in f.suffixes for f in base.REGISTERED.values())
