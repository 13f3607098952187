"""One door to a model folder's weights, whatever their format: safetensors (plain or quantized), GGUF, range reads.

load() turns the files into entries the rest of the pipeline reads the same way: name, logical
shape, stored dtype and byte range. A packed weight appears under the name of the parameter it
encodes with its logical shape (pipeline/formats/quant/); quantization metadata is set apart. GGUF keeps
its own tensor names; pipeline.model.reconcile maps them onto the architecture.

One module per format, each a Format (base.py) registered here: safetensors_file (headers, shards, indexes) and
gguf_file (llama.cpp's files, read by gguf_header); detection tries them in this order. Beside them: entries
(what every format gives, and the rules for names and files read from a folder), remote (range reads of a Hub
checkpoint), quant/ (one module per quantization method). A new format is one module and one register() line.
May import pipeline.core only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError, read_json_object
from pipeline.formats import base, gguf_file, quant, remote, safetensors_file
from pipeline.formats.base import Format, register
from pipeline.formats.entries import Entry

register(safetensors_file.FORMAT)
register(gguf_file.FORMAT)

MAX_STATE_BYTES = 1 << 20  # a bitsandbytes quant state is a few hundred bytes of JSON; more is not one


@dataclass
class Loaded:
    """A model folder's weights, headers only."""

    regrouped: quant.Regrouped  # logical entries, quantization metadata, the naive header sum
    fmt: str  # a registered format's name | remote | '' (no weights)
    format: Format | None = None  # the registered format read (None: no weights, or range reads)
    architecture: str = ""  # the family its tensor names follow, for a name scheme other than transformers'


def listed(folder: Path) -> list[str]:
    """The names of the regular files directly in folder (a model folder is never walked down)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def load(folder: Path, name: str) -> Loaded:
    """The weights of a downloaded model folder, packed weights regrouped into the parameters they encode."""
    if safetensors_file.present(folder / safetensors_file.REMOTE_HEADERS):  # filled by range reads
        entries = remote.remote_entries(folder)
        return Loaded(_regrouped(folder, name, entries, None), "remote")
    found = _detected(folder)
    if found is None:
        return Loaded(quant.Regrouped([], [], 0), "")
    fmt, files, entries = found
    if fmt.packed_types:  # block types the format itself names: kept as stored, said as its method
        total = sum(e.numel for e in entries)
        method = fmt.name if any(e.dtype not in ("F32", "F16", "BF16", "F64") for e in entries) else ""
        regrouped = quant.Regrouped(entries, [], total, method)
    else:
        regrouped = _regrouped(folder, name, entries, fmt)
    return Loaded(regrouped, fmt.name, fmt, fmt.architecture([folder / f for f in files]))


def _detected(folder: Path) -> tuple[Format, list[str], list[Entry]] | None:
    """(the first registered format with weight files in a downloaded model folder, its files, their entries)."""
    found = base.in_names(listed(folder), folder)
    if found is None:
        return None
    fmt, files = found
    return fmt, files, fmt.entries(folder, files)


def _regrouped(folder: Path, name: str, entries: list[Entry], fmt: Format | None) -> quant.Regrouped:
    """Packed weights regrouped into the parameters they encode, by the config's quantization_config."""
    if not entries:
        return quant.Regrouped([], [], 0)
    config = read_json_object(folder / "config.json", model=name)

    def read(e: Entry) -> bytes:
        if e.end - e.begin > MAX_STATE_BYTES:
            raise PipelineError(f"tensor {e.key!r}: {e.end - e.begin:,} bytes is too large for a quant state")
        with open(folder / e.file, "rb") as fh:
            fh.seek(e.begin)
            return fh.read(e.end - e.begin)

    return quant.regroup(entries, config, name, read if fmt is not None else None)


def weights_beside_config(folder: Path, allow_pickle: bool = False) -> tuple[list[str], str]:
    """The weight files of a folder with its own config.json, and their format's name: the first registered
    format that carries no config and has files there, else pickle files when allowed; ([], '') if none."""
    safetensors_file.refuse_range_record(folder)
    found = base.in_names(listed(folder), folder, carrying=False)
    if found is not None:
        return found[1], found[0].name
    return safetensors_file.weight_files(folder, allow_pickle)  # pickle files, or none


def config_carrying(path: Path) -> tuple[Format, list[Path]] | None:
    """(the format, every file of the model) of a source whose files carry the config: a file of such a format
    (the first of a split set), or a folder holding one and no config.json of its own; else None."""
    if not path.is_dir():  # a file, or what is named like one (a FIFO called x.gguf is refused by its format)
        fmt = base.for_file(path)
        return (fmt, fmt.shard_set(path)) if fmt is not None and fmt.carries_config else None
    if (path / "config.json").exists():
        return None
    names = listed(path)
    for fmt in base.REGISTERED.values():
        if fmt.carries_config and any(Path(n).suffix in fmt.suffixes for n in names):
            return fmt, fmt.shard_set(path)
    return None


def carried_beside(folder: Path) -> list[str]:
    """Files of config-carrying formats in a folder that has its own config.json (counted only when named)."""
    carrying = {s for fmt in base.REGISTERED.values() if fmt.carries_config for s in fmt.suffixes}
    return [n for n in listed(folder) if Path(n).suffix in carrying]


def load_entries(folder: Path) -> tuple[list[Entry], str]:
    """The tensors of a downloaded model folder's checkpoint (one the download stage wrote), headers only, and
    its format ('' when it has none; 'remote' when fetch: range stored only the headers)."""
    if safetensors_file.present(folder / safetensors_file.REMOTE_HEADERS):  # filled by range reads
        return remote.remote_entries(folder), "remote"
    found = _detected(folder)
    return ([], "") if found is None else (found[2], found[0].name)
