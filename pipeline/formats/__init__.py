"""One door to a model folder's weights, whatever their format: safetensors (plain or quantized), GGUF, range reads.

load() turns the files into entries the rest of the pipeline reads the same way: name, logical
shape, stored dtype and byte range. A packed weight appears under the name of the parameter it
encodes with its logical shape (pipeline/formats/quant/); quantization metadata is set apart. GGUF keeps
its own tensor names; pipeline.model.reconcile maps them onto the architecture.

One module per format: entries (what they all give, and the rules for names and files read from a folder),
safetensors_file (headers, shards, indexes), gguf_header and gguf_file (llama.cpp's files), remote (range
reads of a Hub checkpoint), quant/ (one module per quantization method). May import pipeline.core only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import PipelineError, read_json_object
from pipeline.formats import gguf_file, quant, remote, safetensors_file
from pipeline.formats.entries import Entry

MAX_STATE_BYTES = 1 << 20  # a bitsandbytes quant state is a few hundred bytes of JSON; more is not one


@dataclass
class Loaded:
    """A model folder's weights, headers only."""

    regrouped: quant.Regrouped  # logical entries, quantization metadata, the naive header sum
    fmt: str  # safetensors | remote | gguf | '' (no weights)
    gguf_arch: str = ""  # general.architecture of a GGUF model


def has_gguf(folder: Path) -> bool:
    return any(folder.glob("*.gguf"))


def load(folder: Path, name: str) -> Loaded:
    """The weights of a downloaded model folder, packed weights regrouped into the parameters they encode."""
    if has_gguf(folder):
        paths = gguf_file.shards(folder)
        stored = gguf_file.entries(paths)
        total = sum(e.numel for e in stored)
        method = "gguf" if any(e.dtype not in ("F32", "F16", "BF16", "F64") for e in stored) else ""
        return Loaded(quant.Regrouped(stored, [], total, method), "gguf", gguf_file.architecture(paths))
    entries, fmt = load_entries(folder)
    if not entries:
        return Loaded(quant.Regrouped([], [], 0), fmt)
    config = read_json_object(folder / "config.json", model=name)

    def read(e: Entry) -> bytes:
        if e.end - e.begin > MAX_STATE_BYTES:
            raise PipelineError(f"tensor {e.key!r}: {e.end - e.begin:,} bytes is too large for a quant state")
        with open(folder / e.file, "rb") as fh:
            fh.seek(e.begin)
            return fh.read(e.end - e.begin)

    return Loaded(quant.regroup(entries, config, name, read if fmt == "safetensors" else None), fmt)


def load_entries(folder: Path) -> tuple[list[Entry], str]:
    """The tensors of a downloaded model folder's checkpoint (one the download stage wrote), headers only, and
    its format ('' when it has none; 'remote' when fetch: range stored only the headers)."""
    if safetensors_file.present(folder / safetensors_file.REMOTE_HEADERS):  # filled by range reads
        return remote.remote_entries(folder), "remote"
    files, fmt = safetensors_file.weight_files(folder)
    if fmt == "safetensors":
        return safetensors_file.read_checkpoint(folder, files), fmt
    return [], fmt
