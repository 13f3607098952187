"""The census's journal: finished rows kept as they finish, so a killed census goes on where it stopped; what a
row counted (its identity), to take it again only for the same source; and the places a census may write.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from pipeline.census.listing import Source
from pipeline.census.rows import COLUMNS, INTEGERS
from pipeline.core import atomic
from pipeline.core.errors import PipelineError

log = logging.getLogger("census")

SUFFIX = ".partial"  # OUT.csv's journal is the folder OUT.csv.partial/


class Journal:
    """Finished rows, batch by batch, in OUT.partial/: each batch one file, written whole or not at all.

    Each row is journalled with the identity of what it counted (identity_of) and a MAC under a key kept in the
    journal's folder (created 0600 with it): a row written or edited by hand, or damaged, fails its MAC and is
    counted again; a row whose source changed since fails its identity when the source is read again. The
    folder is never a link, and nothing in it is followed: only regular files named rows-*.jsonl are read or
    removed.
    """

    def __init__(self, out: Path, every: int):
        self.dir = out.with_name(out.name + SUFFIX)
        self.every = every
        self.pending: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.batches = 0
        self._key: bytes | None = None

    def _files(self) -> list[Path]:
        """The journal's batch files: regular files only (a link or a folder named rows-*.jsonl is left alone)."""
        return [p for p in sorted(self.dir.glob("rows-*.jsonl")) if stat.S_ISREG(os.lstat(p).st_mode)]

    def _secret(self, create: bool) -> bytes | None:
        if self._key is None:
            path = self.dir / "key"
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    self._key = path.read_bytes()
            except FileNotFoundError:
                if create:
                    self.dir.mkdir(exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(os.urandom(32))
                    self._key = path.read_bytes()
        return self._key

    def _mac(self, key: str, row: dict[str, Any], identity: Any) -> str:
        secret = self._secret(create=True)
        text = json.dumps([key, row, identity], sort_keys=True).encode()
        return hmac.new(secret, text, hashlib.sha256).hexdigest()

    def load(self, keys: set[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """The rows journalled by an earlier run for sources still listed, each with what it counted: (row, identity).
        A damaged batch file is dropped, and a row whose MAC does not hold is counted again."""
        done: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        if self.dir.is_symlink() or (self.dir.exists() and not self.dir.is_dir()):
            raise PipelineError(f"{self.dir}: the census journal's place holds a file or a link; move it away")
        if not self.dir.is_dir():
            return done
        secret, forged = self._secret(create=False), 0
        for path in self._files():
            try:
                number = int(path.stem.split("-", 1)[1])
                batch = [json.loads(line) for line in path.read_text().splitlines()]
            except (OSError, ValueError, IndexError):
                log.warning("census: %s cannot be read; its rows are counted again", path)
                continue
            for item in batch:
                if not (isinstance(item, dict) and item.get("key") in keys and sound(item.get("row"))):
                    continue
                identity = item.get("identity")
                mac = hmac.new(secret, json.dumps([item["key"], item["row"], identity], sort_keys=True).encode(),
                               hashlib.sha256).hexdigest() if secret else ""  # fmt: skip
                if not secret or not hmac.compare_digest(mac, str(item.get("mac", ""))):
                    forged += 1
                    continue
                done[item["key"]] = (item["row"], identity if isinstance(identity, dict) else None)
            self.batches = max(self.batches, number + 1)
        if forged:
            log.warning(
                "census: %d journalled rows were not written by this census (edited or damaged): counted again", forged
            )
        return done

    def add(self, key: str, row: dict[str, Any], identity: Any = None) -> None:
        self.pending.append({"key": key, "row": row, "identity": identity, "mac": self._mac(key, row, identity)})
        if len(self.pending) >= self.every or time.monotonic() - self.last > 5:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            text = "".join(json.dumps(item, sort_keys=True) + "\n" for item in self.pending)
            atomic.write_text(self.dir / f"rows-{self.batches:06d}.jsonl", text)
            self.batches += 1
            self.pending = []
        self.last = time.monotonic()

    def remove(self) -> None:
        if self.dir.is_symlink() or not self.dir.is_dir():
            return
        for path in [*self._files(), self.dir / "key"]:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    path.unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()


def sound(row: Any) -> bool:
    """A journalled row as this census writes them: its integers integers, its text text (else it is redone)."""
    if not isinstance(row, dict) or not isinstance(row.get("source"), str) or not set(row) <= set(COLUMNS):
        return False  # a row of another version's columns is counted again
    for column, value in row.items():
        if value is None:
            continue
        if column in INTEGERS and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if column not in INTEGERS and not isinstance(value, str | int | float) or isinstance(value, bool):
            return False
    return True


def check_output(out: Path) -> None:
    """OUT must be a regular file or a new path: the final rename would replace whatever is there (a device, as
    root; a link), and OUT.partial must be a folder of the census's own, never a link to somewhere else."""
    for path, what in ((out, "-o"), (out.with_name(out.name + SUFFIX), "the census journal")):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PipelineError(f"{what} {path}: cannot be looked at ({exc.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise PipelineError(f"{what} {path}: is a symbolic link; name the file itself (a link is never followed)")
        wanted = stat.S_ISDIR if path != out else stat.S_ISREG
        if not wanted(st.st_mode):
            kind = "a regular file or a new path" if path == out else "a folder the census made"
            raise PipelineError(f"{what} {path}: is not {kind}; nothing was written")


def immutable(src: Source, identity: dict[str, Any] | None) -> bool:
    """A journalled row of this source stands as it is: a Hub repository listed at the very commit it read (a commit
    never changes); anything else, a branch or a local folder, is read again and compared (identity_of)."""
    pinned = src.kind == "hub" and SHA.fullmatch(src.revision or "") is not None
    return pinned and identity is not None and identity.get("revision") == src.revision


SHA = re.compile(r"[0-9a-f]{40}")


def identity_of(fetched: Any) -> dict[str, Any]:
    """What a row counted, as it was read: the commit (Hub) and a digest of config.json, every header and quant
    state, and each file's size. Two reads of the same files give the same identity; any edit, another."""
    digest = hashlib.sha256()
    digest.update(fetched.fmt.encode() + b"\0" + fetched.config + b"\0")
    parts = {
        "prefixes": {k: [hashlib.sha256(b).hexdigest(), size] for k, (b, size) in sorted(fetched.prefixes.items())},
        "pieces": {
            f: {str(o): hashlib.sha256(b).hexdigest() for o, b in sorted(v.items())}
            for f, v in sorted(fetched.pieces.items())
        },
        "index_total": repr(fetched.index_total),
    }
    digest.update(json.dumps(parts, sort_keys=True, default=repr).encode())
    return {"revision": fetched.revision, "content": digest.hexdigest()}
