"""Where a model's files come from: its config (no network), a local folder, or the Hub at a pinned revision.

Hub access goes through huggingface_hub's snapshot_download into the normal Hugging Face cache, and
fetches only config.json and the safetensors files (plus their index). Pickle checkpoints are refused
unless the model config sets allow_pickle; then they are loaded with torch.load(weights_only=True)
and converted to safetensors, so every later stage reads one safe format.

May import pipeline.core, pipeline.formats and pipeline.model (fetch: range needs the architecture to know which
byte ranges are the embeddings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline import formats
from pipeline.core import atomic
from pipeline.core.errors import PipelineError
from pipeline.core.params import ModelSpec
from pipeline.formats import safetensors_file
from pipeline.sources.checks import check_architecture
from pipeline.sources.hub import fetch_hub, fetch_ranges
from pipeline.sources.pickle_file import pickle_to_safetensors

log = logging.getLogger("download")


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_json(architecture: dict) -> bytes:
    """config.json bytes for an architecture block, stable from run to run."""
    return (json.dumps(architecture, indent=2, sort_keys=True) + "\n").encode()


def _carried_beside_config(spec: ModelSpec, folder: Path, files: list[str]) -> list[str]:
    """The files of config-carrying formats (.gguf) in a folder that has its own config.json: never counted silently.

    With other weights (safetensors, or pickle with allow_pickle) those are counted and the GGUF files are
    named as not counted; with config_only the config alone is counted, said the same way. With neither,
    which to count is ambiguous: refused, saying how to pick.
    """
    ggufs = formats.carried_beside(folder)
    if not ggufs:
        return []
    if not files and not spec.config_only:
        raise PipelineError(
            f"{folder} holds config.json and {', '.join(ggufs)} but no safetensors, so what "
            f"to count is ambiguous; name the .gguf file itself ({folder / ggufs[0]}) to count it, or set "
            "config_only: true to count config.json alone",
            model=spec.name,
        )
    counted = ", ".join(files) if files else "config.json alone (config_only)"
    log.warning("%s: %s not counted: %s is (name the .gguf file to count it)", spec.name, ", ".join(ggufs), counted)
    return ggufs


def materialise(spec: ModelSpec, out: Path, hashes: bool = True) -> dict:
    """Fill folder out with config.json and the weights of spec; return the provenance record.

    hashes=False leaves out each file's sha256 (reading every byte): `hmp count` wants its answer in seconds.
    """
    revision = None
    converted_from: list[str] = []
    not_counted: list[str] = []
    fetched: dict = {}
    if spec.source == "hub" and spec.fetch == "range":
        fetched = fetch_ranges(spec, out)
        revision = fetched["revision"]
    elif spec.source == "config":  # architecture already holds config_path's fields, overridden by its own
        (out / "config.json").write_bytes(config_json(spec.architecture))
        folder, files, fmt = None, [], ""
    elif spec.source == "path" and (carried := formats.config_carrying(Path(spec.path))):
        # a .gguf file (the first shard of a split set) or a folder holding one: the config is its metadata
        fmt, paths = carried
        config = fmt.config(paths)  # from every shard's metadata and tensor table
        check_architecture(spec, paths[0], config)
        fmt.entries(paths[0].parent, [p.name for p in paths])  # every shard's table reads before a byte is copied
        for path in paths:
            atomic.link(path, out / path.name, out)
        (out / "config.json").write_bytes(config_json(config))
    else:
        if spec.source == "path":
            folder = Path(spec.path)
            if not folder.is_dir():
                raise PipelineError(f"path {folder} is not a folder", model=spec.name)
        else:
            folder, revision = fetch_hub(spec)
        check_architecture(spec, folder / "config.json")
        # Everything is checked in the source folder before a byte is copied: shard names stay inside
        # it, every file is a regular file, every header keeps the format's rules.
        files, fmt = formats.weights_beside_config(folder, allow_pickle=spec.allow_pickle)
        not_counted = _carried_beside_config(spec, folder, files)
        if not files and not spec.config_only:
            raise PipelineError(
                f"{folder} has config.json but no weights (*.safetensors)", model=spec.name, advice="config_only"
            )
        if (registered := formats.base.named(fmt)) is not None:
            registered.entries(folder, files)
        atomic.link(folder / "config.json", out / "config.json", out)
        if fmt == "pickle":
            pickle_to_safetensors(spec, folder, files, out)
            converted_from = files
        elif files:
            index = folder / safetensors_file.SAFETENSORS_INDEX
            if fmt == "safetensors" and index.is_file():
                atomic.link(index, out / safetensors_file.SAFETENSORS_INDEX, out)
            for name in files:
                atomic.link(folder / name, out / name, out)
    if not fetched and spec.source != "config":
        weights = [p for p in out.iterdir() if p.suffix in formats.base.suffixes()]
        size = sum(p.stat().st_size for p in weights)
        fetched = {"checkpoint_bytes": size, "bytes_fetched": size if spec.source == "hub" else None}
    return {
        "model": spec.name,
        "source": spec.source,
        "fetch": spec.fetch if spec.source == "hub" else None,
        "checkpoint_bytes": fetched.get("checkpoint_bytes"),
        "bytes_fetched": fetched.get("bytes_fetched"),
        "bytes_fetched_by_file": fetched.get("bytes_fetched_by_file"),
        "hub_id": spec.hub_id,
        "revision_requested": spec.revision if spec.source == "hub" else None,
        "revision": revision,
        "path": str(spec.path) if spec.source == "path" else None,
        "converted_from_pickle": converted_from,
        **({"not_counted": not_counted} if not_counted else {}),
        "files": [
            {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p) if hashes else None}
            for p in sorted(out.iterdir())
            if p.is_file()
        ],
    }
