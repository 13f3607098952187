"""Every counting convention for GPT-2 small against the value each tool prints, with its source."""

from __future__ import annotations

import json
import sys

import pandas as pd
import yaml

from pipeline.model import build, conventions, inventory
from pipeline.stages import count, download
from tests.conftest import compose_model, tiny_params
from tests.support.checkpoints import GPT2_SMALL, gpt2_config, gpt2_hub_entries, write_sparse_safetensors

GPT2_SMALL_CONVENTIONS = {
    "unique": 124_439_808,  # sum(p.numel()) of GPT2LMHeadModel; the course's total
    "untied_head": 163_037_184,  # the course's Model 5; minGPT's GPT-2 module
    "non_embedding_kaplan": 85_056_000,  # Kaplan et al. 2020: no token, position or head embeddings
    "non_embedding_pythia": 85_842_432,  # the Pythia suite's definition: position embeddings stay
    "nanogpt_default": 123_653_376,  # nanoGPT model.py get_num_params() prints "123.65M"
    "attn_mlp_matrices": 84_934_656,  # TransformerLens n_params: 12 · 12 · 768² ("85M")
    "checkpoint_tensors": 137_022_720,  # the Hub's model page "137M": + 12 causal masks of 1024²
    "stated": 117_000_000,  # the GPT-2 paper, Table 2
    "torchinfo": 163_037_184,  # torchinfo summary(GPT2LMHeadModel) "Total params": the tied head counted twice
    "active_per_token": 124_439_808,  # a dense model: every parameter is used by every token (= unique)
    "active_excluding_input_embedding": 124_439_808,  # GPT-2's input embedding is also its (tied) output head
    # the parts of a composite model or an encoder-decoder: GPT-2 is one tower, so none applies
    **dict.fromkeys(conventions.PART_TOOLS),
}


def test_every_convention_has_a_definition():
    assert list(conventions.DEFINITIONS) == list(GPT2_SMALL_CONVENTIONS)
    assert all(len(d.splitlines()) == 1 and d for d in conventions.DEFINITIONS.values())


def test_gpt2_small_under_every_convention_from_a_hub_layout_checkpoint(workdir, monkeypatch):
    folder = workdir / "gpt2-hub"
    write_sparse_safetensors(
        folder / "model.safetensors", gpt2_hub_entries(vocab=50257, positions=1024, d=768, layers=12)
    )
    (folder / "config.json").write_text(json.dumps(gpt2_config(**GPT2_SMALL)))
    data = tiny_params({"gpt2": {"source": "path", "path": str(folder), "stated_size": "117M"}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", "gpt2"])
    download.main()
    count.main()
    table = pd.read_csv(workdir / "results/conventions.csv")
    got = {c: (None if pd.isna(p) else p) for c, p in zip(table["convention"], table["params"], strict=True)}
    assert got == GPT2_SMALL_CONVENTIONS
    assert set(table["definition"]) == set(conventions.DEFINITIONS.values())


def test_conventions_without_a_checkpoint_leave_it_empty():
    from transformers import AutoConfig

    entry = compose_model("pythia-70m")
    arch = dict(entry["architecture"])
    model = build.build_meta(AutoConfig.for_model(arch.pop("model_type"), **arch), "p")
    inv = inventory.inventory(model, "pythia-70m")
    row = {**inventory.summarize(inv), "checkpoint_tensors": None, "stated_params": None}
    got = {r["convention"]: r["params"] for r in conventions.conventions(inv, row)}
    assert got["checkpoint_tensors"] is None and got["stated"] is None
    # Pythia README: pythia-70m has 18,915,328 non-embedding parameters (no learned positions, untied head)
    assert got["non_embedding_pythia"] == got["non_embedding_kaplan"] == 18_915_328
    assert got["nanogpt_default"] == got["unique"] == got["untied_head"] == 70_426_624
