"""Synthetic checkpoints with the real GPT-2 shapes and random values, written tensor by tensor (bounded memory).

Reused between runs: the folder is kept under the project, in .bench/ (git- and DVC-ignored; HMP_BENCH_CACHE moves
it), rebuilt only when missing, and removed by `make clean`.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.checkpoints import gpt2_config, gpt2_hub_entries  # noqa: E402

SHAPES = {
    "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "gpt2-xl": {"n_embd": 1600, "n_layer": 48, "n_head": 25},
    # the benchmarks' --quick mode: GPT-2's layout (masks, tied head, every tensor kind) under 1 MB; token ids
    # inside its vocabulary (GPT-2's 50256 would lie outside)
    "tiny": {
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 2,
        "vocab_size": 1000,
        "n_positions": 128,
        "bos_token_id": 999,
        "eos_token_id": 999,
    },
}
VOCAB, POSITIONS = 50257, 1024  # GPT-2's, for the shapes that do not set their own
ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("HMP_BENCH_CACHE", ROOT / ".bench"))


def gpt2_checkpoint(name: str = "gpt2-xl", dtype: str = "F32") -> Path:
    """A Hub-layout GPT-2 checkpoint (keys without prefix, no lm_head, causal masks) with random values."""
    import torch

    shape = SHAPES[name]
    folder = CACHE / f"{name}-{dtype.lower()}"
    done = folder / ".complete-v2"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    arch = {"vocab_size": VOCAB, "n_positions": POSITIONS, **shape}
    entries = gpt2_hub_entries(arch["vocab_size"], arch["n_positions"], shape["n_embd"], shape["n_layer"])
    torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    size = torch.tensor([], dtype=torch_dtype).element_size()
    header, offset = {}, 0
    for key, _, dims in entries:
        n = 1
        for d in dims:
            n *= d
        header[key] = {"dtype": dtype, "shape": dims, "data_offsets": [offset, offset + n * size]}
        offset += n * size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(0)
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for key, _, dims in entries:
            if re.fullmatch(r"h\.\d+\.attn\.bias", key):  # the causal mask, as the Hub's file stores it
                t = torch.tril(torch.ones(dims[-1], dims[-1])).to(torch_dtype)
            else:
                t = (torch.randn(dims, generator=gen) * 0.02).to(torch_dtype)
            fh.write(t.numpy().tobytes() if torch_dtype == torch.float32 else t.view(torch.int16).numpy().tobytes())
    (folder / "config.json").write_text(json.dumps(gpt2_config(**arch)))
    done.write_text("ok\n")
    return folder
