"""Checkpoints the tests build themselves: tiny real ones, a sparse GPT-2-small one, and a pre-filled Hub cache."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from tests.conftest import TINY

# The Hub's GPT-2 safetensors layout: keys without the transformer. prefix, no lm_head, and a
# causal-mask buffer h.N.attn.bias of shape [1, 1, n_positions, n_positions] in every layer.
GPT2_SMALL = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}


def gpt2_hub_entries(
    vocab: int, positions: int, d: int, layers: int, masks: bool = True
) -> list[tuple[str, str, list]]:
    """(key, dtype, shape) of every tensor in a Hub-layout GPT-2 checkpoint."""
    out = [("wte.weight", "F32", [vocab, d]), ("wpe.weight", "F32", [positions, d])]
    for i in range(layers):
        h = f"h.{i}"
        out += [
            (f"{h}.ln_1.weight", "F32", [d]),
            (f"{h}.ln_1.bias", "F32", [d]),
            (f"{h}.attn.c_attn.weight", "F32", [d, 3 * d]),
            (f"{h}.attn.c_attn.bias", "F32", [3 * d]),
            (f"{h}.attn.c_proj.weight", "F32", [d, d]),
            (f"{h}.attn.c_proj.bias", "F32", [d]),
            (f"{h}.ln_2.weight", "F32", [d]),
            (f"{h}.ln_2.bias", "F32", [d]),
            (f"{h}.mlp.c_fc.weight", "F32", [d, 4 * d]),
            (f"{h}.mlp.c_fc.bias", "F32", [4 * d]),
            (f"{h}.mlp.c_proj.weight", "F32", [4 * d, d]),
            (f"{h}.mlp.c_proj.bias", "F32", [d]),
        ]
        if masks:
            out.append((f"{h}.attn.bias", "F32", [1, 1, positions, positions]))
    out += [("ln_f.weight", "F32", [d]), ("ln_f.bias", "F32", [d])]
    return out


def write_sparse_safetensors(path: Path, entries: list[tuple[str, str, list]]) -> int:
    """A valid safetensors file whose data is a hole (reads as zeros, costs no disk or memory). Returns its size."""
    nbytes = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset = {}, 0
    for key, dtype, shape in entries:
        size = nbytes[dtype]
        for s in shape:
            size *= s
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return 8 + len(blob) + offset


def gpt2_config(**arch) -> dict:
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], **arch}


def tiny_checkpoint(
    folder: Path,
    tied: bool = True,
    hub_layout: bool = True,
    masks: bool = True,
    masked_bias: bool = False,
    store_tied_twice: bool = False,
    seed: int = 0,
    dtype: str = "float32",
    shards: int = 1,
) -> Path:
    """A real tiny GPT-2 checkpoint with random values (as trained weights would differ, init differs per seed)."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    arch = {k: v for k, v in TINY.items() if k != "model_type"}
    arch["tie_word_embeddings"] = tied
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**arch)).to(getattr(torch, dtype))
    state = {}
    for name, tensor in model.state_dict().items():
        key = name.removeprefix("transformer.") if hub_layout else name
        state[key] = tensor.detach().clone().contiguous()
    if tied and not store_tied_twice:
        state.pop("lm_head.weight", None)
    if masks:
        p = TINY["n_positions"]
        for i in range(TINY["n_layer"]):
            mask = torch.tril(torch.ones(p, p, dtype=getattr(torch, dtype))).view(1, 1, p, p)
            state[f"h.{i}.attn.bias" if hub_layout else f"transformer.h.{i}.attn.bias"] = mask
            if masked_bias:
                state[f"h.{i}.attn.masked_bias" if hub_layout else f"transformer.h.{i}.attn.masked_bias"] = (
                    torch.tensor(-1e4, dtype=getattr(torch, dtype))
                )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(gpt2_config(**arch), indent=2))
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        keys = list(state)
        weight_map = {}
        for i in range(shards):
            part = keys[i::shards]
            name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def prefill_hub_cache(cache: Path, repo_id: str, commit: str, source: Path, ref: str | None = "main") -> Path:
    """The documented huggingface_hub cache layout: blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        link = snap / file.name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(f"../../blobs/{digest}", link)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no trailing newline: huggingface_hub reads it verbatim
    return snap
