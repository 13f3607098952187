"""GGUF files (llama.cpp): tensors and architecture from the file's own metadata, read with the gguf package.

A GGUF file holds its config as key-value metadata and every tensor's name, logical shape (in
ggml's order, fastest dimension first), quantization type and byte offset, then the data. A model
may be split into `name-00001-of-0000N.gguf` shards: counting from the first alone gives a fraction
of the model, so naming the first finds and checks every shard, and a missing one is an error.

The architecture comes from transformers' GGUF support (load_gguf_checkpoint without tensors) and
GGUF names map onto the model's parameter names through transformers' own map
(get_gguf_hf_weights_map, built on gguf's tensor-name tables). Counting reads metadata only.
"""

from __future__ import annotations

import json
import re
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checkpoint import Entry, Reconciled, plain_name, regular_file
from pipeline.cli import PipelineError, first_line

if TYPE_CHECKING:
    import torch

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shards(path: Path) -> list[Path]:
    """Every file of a GGUF model, given its file (the first shard of a split set) or a folder holding it."""
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf"))
        firsts = [p for p in found if not SPLIT_RE.match(p.name) or SPLIT_RE.match(p.name)["no"] == "00001"]
        if len(firsts) != 1:
            what = "no .gguf file" if not firsts else f"{len(firsts)} GGUF models ({', '.join(p.name for p in firsts)})"
            raise PipelineError(f"{path}: holds {what}; name the file")
        path = firsts[0]
    regular_file(path)
    m = SPLIT_RE.match(path.name)
    if not m:
        return [path]
    if m["no"] != "00001":
        raise PipelineError(f"{path}: shard {int(m['no'])} of {int(m['count'])}; name the first shard (-00001-of-)")
    count = int(m["count"])
    names = [plain_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf", path) for i in range(1, count + 1)]
    out = []
    for i, name in enumerate(names):
        shard = path.parent / name
        if not (shard.exists() or shard.is_symlink()):
            raise PipelineError(f"{path}: shard {i + 1} of {count}, {name}, is missing from {path.parent}")
        out.append(regular_file(shard))
    return out


def _reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the gguf reader raises many types on a file that is not GGUF
        raise PipelineError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {first_line(exc)})") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def entries(paths: list[Path]) -> list[Entry]:
    """Every tensor of a (split) GGUF model: GGUF name, logical shape in PyTorch's order, quant type, bytes."""
    out: list[Entry] = []
    seen: dict[str, str] = {}
    count = len(paths)
    for i, path in enumerate(paths):
        reader = _reader(path)
        no, total = _field(reader, "split.no"), _field(reader, "split.count")
        if count > 1 and (no != i or total != count):
            raise PipelineError(f"{path}: its metadata says shard {no} of {total}, its name shard {i} of {count}")
        size = path.stat().st_size
        for t in reader.tensors:
            if t.name in seen:
                raise PipelineError(f"{path}: tensor {t.name!r} is also in {seen[t.name]}")
            seen[t.name] = path.name
            begin = int(t.data_offset)
            end = begin + int(t.n_bytes)
            if end > size:
                raise PipelineError(f"{path}: tensor {t.name!r} ends at byte {end}, past the end of the file ({size})")
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # ggml lists the fastest dimension first
            out.append(Entry(t.name, t.tensor_type.name, shape, path.name, begin, end))
    return out


def config(path: Path) -> dict[str, Any]:
    """The model's config.json fields, from the first shard's metadata (transformers' GGUF support)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    except Exception as exc:  # transformers' boundary: an architecture it cannot read raises many types
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise PipelineError(f"{path}: no architecture transformers can read ({why})") from None
    # plain JSON values (the metadata reader gives numpy scalars), so config.json is stable and loadable
    cfg = json.loads(
        json.dumps(parsed.get("config") or {}, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
    if not cfg.get("model_type"):
        raise PipelineError(f"{path}: its metadata names no architecture (general.architecture)")
    return cfg


def architecture(path: Path) -> str:
    """general.architecture: the GGUF name of the model's family (picks transformers' tensor processor)."""
    return str(_field(_reader(path), "general.architecture") or "")


def reconcile(model: torch.nn.Module, stored: list[Entry], arch: str, name: str) -> Reconciled:
    """Map GGUF tensors onto the model's parameters by transformers' own name map; shapes and counts must agree.

    A parameter may come from one GGUF tensor (its shape must match) or several (stacked or fused experts:
    their values must add up to it). GGUF tensors that map to no parameter, and parameters no tensor
    fills, stop the count with their names.
    """
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    try:
        names = get_gguf_hf_weights_map(model, processor)
    except Exception as exc:  # transformers' boundary (an architecture gguf's tables do not know)
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise PipelineError(f"model '{name}': GGUF names cannot be mapped ({why})") from None
    by_id: dict[int, str] = {}
    canonical, shapes = {}, {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        canonical[pname] = by_id.setdefault(id(p), pname)
        shapes[pname] = tuple(p.shape)
    sources: dict[str, list[Entry]] = {}
    unexpected = []
    for e in stored:
        target = names.get(e.key)
        if target is None or target not in canonical:
            unexpected.append(e.key)
            continue
        sources.setdefault(canonical[target], []).append(e)
    problems = []
    for param, group in sources.items():
        if len(group) == 1 and group[0].shape != shapes[param]:
            problems.append(f"{group[0].key} {list(group[0].shape)} vs {param} {list(shapes[param])}")
        elif sum(e.numel for e in group) != prod(shapes[param]):
            held = sum(e.numel for e in group)
            problems.append(f"{', '.join(e.key for e in group)} hold {held:,} values, {param} {prod(shapes[param]):,}")
    missing = [p for p in dict.fromkeys(canonical.values()) if p not in sources]
    if problems or missing or unexpected:
        parts = [
            f"shape mismatch: {'; '.join(problems[:4])}" if problems else "",
            f"missing: {', '.join(missing[:6])}" if missing else "",
            f"GGUF tensors with no parameter: {', '.join(unexpected[:6])}" if unexpected else "",
        ]
        raise PipelineError(
            f"model '{name}': GGUF does not match the architecture: {' | '.join(p for p in parts if p)}"
        )
    return Reconciled(
        key_of={p: ";".join(e.key for e in group) for p, group in sources.items()},
        buffers=[],
        checkpoint_tensors=sum(e.numel for e in stored),
        sources=sources,
    )
