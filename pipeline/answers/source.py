"""What a source names: the model entry a config file, a checkpoint folder, a GGUF file, a Hub id or a model of
conf/model/ reads as; the names it is shown and counted under; and the folder its files are linked into.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line, one_line

# A Hub repository id: an optional owner and a name (huggingface_hub's own rule is stricter; it checks it too)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


# A branch, tag or commit: git's characters, no '..' and no leading '/' (it becomes a path in the Hub cache)
REVISION = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.\-/]{0,199}")


def entry_for(source: str, revision: str | None = None, allow_pickle: bool = False) -> dict[str, Any]:
    """The model entry (conf/model/*.yaml fields) reading SOURCE: a config file, a folder, a GGUF file or a Hub id.

    allow_pickle (--allow-pickle) lets a folder or Hub repository of .bin/.pt files be loaded with
    torch.load(weights_only=True), as allow_pickle: true does in a model file.
    """
    entry = _entry_for(source, revision)
    if allow_pickle:
        if entry["source"] == "config":
            raise PipelineError(f"{source}: --allow-pickle applies to a checkpoint folder or a Hub id")
        entry["allow_pickle"] = True
    return entry


def _entry_for(source: str, revision: str | None) -> dict[str, Any]:
    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError) as exc:  # a name too long for the file system, ~user with no such user
        raise PipelineError(f"{source}: not a usable path ({first_line(exc)})") from None
    if revision is not None and not REVISION.fullmatch(revision):
        raise PipelineError(f"--revision {revision}: not a branch, tag or commit name")
    if exists:
        if revision:
            raise PipelineError(f"{source}: --revision applies to a Hub id, not to a local file or folder")
        path = path.resolve()
        if path.is_file() and path.suffix == ".json":
            return {"source": "config", "config_path": str(path)}
        from pipeline import formats

        if path.is_file() and formats.config_carrying(path) is None:
            raise PipelineError(f"{source}: not a config.json, a .gguf file or a checkpoint folder")
        entry: dict[str, Any] = {"source": "path", "path": str(path)}
        try:
            if path.is_dir() and formats.config_carrying(path) is None:
                if not (path / "config.json").is_file():
                    raise PipelineError(f"{source}: a checkpoint folder needs its config.json")
                if not formats.weights_beside_config(path, allow_pickle=True)[0]:
                    if ggufs := formats.carried_beside(path):  # never counted from its config silently
                        raise PipelineError(
                            f"{source}: holds config.json and {', '.join(ggufs)} but no safetensors, so what to count "
                            f"is ambiguous; name the .gguf file ({path / ggufs[0]}) or the config.json to count one"
                        )
                    entry["config_only"] = True  # no weights: counted from its config alone, and said so
        except OSError as exc:  # a folder that cannot be listed (no permission), a file system error
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        return entry
    conf = conf_entry(source) if revision is None else None
    if conf is not None:  # a model of the project's own conf/model/ (hmp count gpt2): counted as that entry is
        return conf[1]
    looks_local = source.startswith((".", "/", "~")) or source.endswith((".json", ".gguf", ".safetensors"))
    if looks_local or not HUB_ID.fullmatch(source) or source.count("/") > 1:
        raise PipelineError(f"{source}: no such file or folder, and not a Hub id (owner/name)")
    return {"source": "hub", "hub_id": source, "revision": revision or "main"}


# Where `hmp count NAME` looks for conf/model/NAME.yaml: the project in the working folder, then the project
# this package was installed from (make setup installs it in place)
CONF_MODELS = (Path("conf") / "model", Path(__file__).resolve().parents[2] / "conf" / "model")


def conf_entry(source: str) -> tuple[Path, dict[str, Any]] | None:
    """(the file, its entry) of a model the project's conf/model/ names, for a bare name (gpt2); else None. Relative
    paths in the entry are the project's, so they are made absolute against that project's folder."""
    import yaml

    if not re.fullmatch(r"[A-Za-z0-9][\w-]*", source):
        return None
    for folder in CONF_MODELS:
        path = folder / f"{source}.yaml"
        if path.is_file():
            entry = yaml.safe_load(path.read_text()) or {}
            if not isinstance(entry, dict):
                raise PipelineError(f"{path}: not a model entry (a mapping of fields)")
            root = path.resolve().parents[2]
            for key in ("path", "config_path"):
                if isinstance(entry.get(key), str) and not Path(entry[key]).expanduser().is_absolute():
                    entry[key] = str(root / entry[key])
            return path, entry
    return None


def checked_name(name: str, what: str) -> str:
    """A model name as the pipeline's (a DVC stage name and a folder name): else one line naming the option."""
    from pipeline.core import params

    if not params.NAME_RE.fullmatch(name) or len(name) > params.MAX_NAME:
        raise PipelineError(
            f"{what} {one_line(repr(name))}: a model name is 1 to {params.MAX_NAME} letters, digits, '-' and '_'"
        )
    return name


def shown_name(source: str) -> str:
    """The model's name as the user knows it: a Hub id as written, else the file's or folder's own name
    (meta-llama__Llama-3.1-8B of meta-llama__Llama-3.1-8B.json; the folder's name for a config.json)."""
    path = Path(source.rstrip("/"))
    if not path.exists() and HUB_ID.fullmatch(source) and source.count("/") == 1:
        return source
    if path.name == "config.json":
        return path.resolve().parent.name or "model"
    return (path.stem if path.suffix in (".gguf", ".json") else path.name) or "model"


def default_name(source: str) -> str:
    """A model name from its source: the last path part or Hub name, in the pipeline's name alphabet."""
    path = Path(source.rstrip("/"))
    if path.name == "config.json":
        stem = path.resolve().parent.name
    else:
        stem = path.stem if path.suffix in (".gguf", ".json") else path.name
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-") or "model"
    return name[:64]


@contextlib.contextmanager
def linked(spec: Any, entry: dict[str, Any], source: str) -> Iterator[tuple[Path, dict]]:
    """(a temporary model folder, its provenance record): the source's files linked in as the download stage
    links them (never copied; no sha256 of each byte), removed afterwards. An error inside names the user's
    files, not the temporary folder they were linked into."""
    from pipeline import sources

    with tempfile.TemporaryDirectory(prefix="hmp-") as tmp:
        folder = Path(tmp) / spec.name
        folder.mkdir()
        try:
            record = sources.materialise(spec, folder, hashes=False)
            (folder / "provenance.json").write_text(json.dumps(record))
            yield folder, record
        except OSError as exc:  # a source folder or file the system will not let us read
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        except PipelineError as exc:
            raise _as_the_users(exc, folder, entry) from None


def _as_the_users(exc: PipelineError, folder: Path, entry: dict[str, Any]) -> PipelineError:
    """exc naming the user's files where it names their links in the temporary folder."""
    message = exc.message
    if entry.get("config_path"):  # the folder's config.json is the user's file, by its own name
        message = message.replace(str(folder / "config.json"), str(entry["config_path"]))
    origin = Path(entry.get("path") or entry.get("config_path") or folder)
    origin = origin if origin.is_dir() else origin.parent
    return exc.reworded(message.replace(str(folder), str(origin)))


# Counted models this process keeps (a server asked count, fit and flops of one config builds it once): by what a
# count depends on, the model's entry and its folder's files (pipeline.core.memo.folder_state: the bytes of
# config.json and the other small files). Only models without weight files: a checkpoint's count holds its open
# headers, read again each time. A count of a built meta model is a few MB and some 100,000 Python objects.
KEPT_MODELS = 4
_kept: collections.OrderedDict[str, Any] = collections.OrderedDict()
_kept_lock = threading.Lock()


def counted(spec: Any, folder: Path) -> Any:
    """pipeline.model.count.count_folder(spec, folder), kept for the next question about the same files; the
    answers read it and never change it."""
    from pipeline.core import memo
    from pipeline.model.count import count_folder

    key = memo.digest(spec, memo.folder_state(folder))
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    found = count_folder(spec, folder)
    if not found.loaded.fmt:
        with _kept_lock:
            _kept[key] = found
            while len(_kept) > KEPT_MODELS:
                _kept.popitem(last=False)
    return found
