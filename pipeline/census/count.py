"""Counting one fetched repository: its architecture built once per distinct config (and kept), its headers
reconciled with it, its row of the census.

The cache key is the config's content without the fields that name where it came from
(`_name_or_path`, `transformers_version`): fine-tunes of one base share a build. The run routes every
repository of one key to one worker, so each distinct architecture is built once in the whole census.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pipeline.census import explain
from pipeline.census.fetch import Fetched
from pipeline.census.listing import claim
from pipeline.core.errors import PipelineError, first_line

PROVENANCE_KEYS = ("_name_or_path", "transformers_version")  # where a config came from, not what it builds
MAX_BUILT = 256  # architectures kept per worker (a meta-device build is a few MB at most)
NAME = "census"  # the model name in the library's messages, cut from a row's error

_built: OrderedDict[str, Any] = OrderedDict()
_counting = threading.Lock()  # one count at a time in a worker process (see count)
_counted: OrderedDict[str, tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()  # layout -> (row, facts)
MAX_COUNTED = 4096
builds = 0  # architectures built in this process (the tests check each is built once)


def architecture_key(config: bytes, fmt: str) -> str:
    """The build a config needs, as a short hash of its content (a GGUF's config comes from its metadata)."""
    try:
        raw = json.loads(config)
    except ValueError:
        raw = None
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k not in PROVENANCE_KEYS}
        blob = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    else:
        blob = config
    return hashlib.sha256(fmt.encode() + b"\0" + blob).hexdigest()[:16]


def _build(key: str, folder: Path) -> Any:
    """The architecture of key: built from folder/config.json the first time, kept for the next repository."""
    from pipeline.model.count import build_architecture

    global builds
    if key in _built:
        _built.move_to_end(key)
        return _built[key]
    built = build_architecture(folder, NAME)
    builds += 1
    _built[key] = built
    while len(_built) > MAX_BUILT:
        _built.popitem(last=False)
    return built


def count(f: Fetched) -> dict[str, Any]:
    """The census row of one fetched repository (raises PipelineError with the reason it cannot be counted).

    One count at a time per worker process: counting is CPU work under the GIL (threads would not run it
    faster), and transformers' lazy imports are not safe to race from several threads.
    """
    layout = layout_key(f)
    with _counting:
        if layout in _counted:  # the same config and the same headers: the same count, reconciled once
            _counted.move_to_end(layout)
            row, facts = _counted[layout]
        else:
            row, facts = _count(f)
            _counted[layout] = row, facts
            while len(_counted) > MAX_COUNTED:
                _counted.popitem(last=False)
    return _with_claims(f, dict(row), facts)


def layout_key(f: Fetched) -> str:
    """What a count depends on: the config and every header (and quant state) byte for byte, in one hash."""
    h = hashlib.sha256(f.fmt.encode() + b"\0" + f.config)
    for name, (prefix, size) in sorted(f.prefixes.items()):
        h.update(f"{name}\0{size}\0{len(prefix)}\0".encode() + prefix)
        for offset, data in sorted(f.pieces.get(name, {}).items()):
            h.update(f"{offset}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def _count(f: Fetched) -> tuple[dict[str, Any], dict[str, Any]]:
    from pipeline import formats
    from pipeline.formats import gguf_header
    from pipeline.model.count import weigh

    with tempfile.TemporaryDirectory(prefix="hmp-census-") as tmp:
        folder = Path(tmp)
        try:
            config = f.config
            if f.prefixes:  # each file as the repository's: its header, zeros for the data (sparse: no disk), the
                # few bytes that were read beyond it (quant states) at their places; its format reads it back
                fmt = formats.base.named(f.fmt)
                for name, (prefix, size) in f.prefixes.items():
                    with open(folder / Path(name).name, "wb") as fh:
                        fh.write(prefix)
                        fh.truncate(size)
                        for offset, data in f.pieces.get(name, {}).items():
                            fh.seek(offset)
                            fh.write(data)
                if fmt.carries_config:
                    paths = [folder / Path(name).name for name in f.prefixes]
                    config = json.dumps(fmt.config(paths), indent=2, sort_keys=True).encode()
            (folder / "config.json").write_bytes(config)
            key = architecture_key(config, f.fmt)
            built = _build(key, folder)
            loaded = formats.load(folder, NAME)
            weighed = weigh(built, loaded, NAME, inventory_rows=False)
        except PipelineError as exc:  # name the repository's files, not the temporary folder they were put in
            raise exc.reworded(exc.message.replace(f"{folder}/", "").replace(str(folder), "")) from None
        finally:
            gguf_header.forget()  # before the files go: their inodes may be reused
    return _row(f, key, built, loaded, weighed)


def _summary(built: Any) -> dict[str, Any]:
    """The architecture's counts (the same for every checkpoint of it), computed once per build."""
    from pipeline.model import inventory

    if built.summary is None:
        built.summary = inventory.summarize(built.inv, built.top_k)
    return built.summary


def _row(f: Fetched, key: str, built: Any, loaded: Any, weighed: Any) -> dict[str, Any]:

    summary = _summary(built)
    rec = weighed.rec
    sizes = [size for _, size in f.prefixes.values()]
    checkpoint_bytes = sum(sizes) if sizes else None
    total = summary["total"]
    moe = built.n_experts is not None
    row: dict[str, Any] = {
        "total": total,
        "active": summary["active"] if moe else total,
        "model_type": built.config.model_type,
        "model_class": built.cls.__name__,
        "architecture": key,
        "format": f.fmt or "config only",
        "quant_method": loaded.regrouped.method,
        "bits_per_param": round(checkpoint_bytes * 8 / total, 4) if checkpoint_bytes and total else None,
        "n_experts": built.n_experts,
        "experts_per_token": built.top_k,
        "checkpoint_bytes": checkpoint_bytes,
        "checkpoint_tensors": weighed.checkpoint_tensors,
        "checkpoint_buffers": weighed.checkpoint_buffers,
        "tied_copies": rec.tied_copies if rec else None,
        "checkpoint_extra": weighed.checkpoint_extra,
    }
    facts = {
        **row,
        "unused": sum(e.numel for e in rec.unused) if rec else 0,
        "packing": (weighed.checkpoint_tensors - rec.entry_values) if rec else 0,
        "embedding": summary["embedding"],
        "untied_head": summary["head_params"] if not summary["structural_tied"] else 0,
    }
    return row, facts


def _with_claims(f: Fetched, row: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The row with this repository's own claims beside the count, and their flags."""
    flags = []
    for column, said in (("index", f.index_total), ("hub", f.source.hub_total or f.api_total)):
        value = claim(str(said)) if said not in (None, "") else None
        diff, words, flag = explain.explain(value, facts)
        row[f"{column}_total"] = "" if said in (None, "") else str(said)
        row[f"{column}_vs_exact"] = diff
        row[f"{column}_explained"] = words
        if flag:
            flags.append(f"{column}_{flag}")
    row["flags"] = ";".join(flags)
    return row


def reason(exc: BaseException) -> str:
    """A row's error: one line, without the library's model name (the row names its source)."""
    if isinstance(exc, PipelineError):
        text = exc.message if exc.model == NAME else str(exc)
        return text.splitlines()[0].strip() if text.strip() else type(exc).__name__
    return first_line(exc).strip()
