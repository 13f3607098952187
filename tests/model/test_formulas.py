"""The independent oracle: closed forms and published totals against the inventory."""

from __future__ import annotations

import pytest

from pipeline.model import build, formulas, inventory
from tests.conftest import compose_model, tiny_gpt2

# Published totals of the released GPT-2 checkpoints: sum(p.numel() for p in model.parameters()) of
# transformers' GPT2LMHeadModel.from_pretrained("openai-community/gpt2[-medium|-large|-xl]"), as the
# course material reports them; the GPT-2 paper's Table 2 rounded them wrongly to 117M/345M/762M/1542M.
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    # The course's "Model 5" (GPT-2 small with an untied head; what minGPT's GPT-2 module holds).
    "gpt2-untied": 163_037_184,
}
# The course: 102,144 of GPT-2 small's parameters are named *.bias (0.0821 %).
GPT2_BIAS_NAMED = 102_144
# The untied head of GPT-2 small: 50,257 × 768.
GPT2_HEAD = 38_597_376


def _shipped(name: str) -> dict:
    return compose_model(name)["architecture"]


def _count(arch: dict) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.for_model(**arch)
    model = build.build_meta(config, "m")
    return inventory.summarize(inventory.inventory(model, "m"))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shipped_gpt2_models_match_published_totals_and_the_closed_form(name):
    arch = _shipped(name)
    counted = _count(arch)["total"]
    assert counted == PUBLISHED[name]
    assert formulas.gpt2_params_from_config(arch) == PUBLISHED[name]


def test_gpt2_small_untied_comparison_and_biases():
    tied, untied = _count(_shipped("gpt2")), _count(_shipped("gpt2-untied"))
    assert tied["bias_named"] == GPT2_BIAS_NAMED
    assert round(100 * tied["bias_named_share"], 4) == 0.0821
    assert untied["total"] - GPT2_HEAD == tied["total"]
    assert tied["total_untied"] == untied["total"]
    assert tied["head_params"] == GPT2_HEAD


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_layer=1, n_embd=8, n_head=2, vocab_size=11, n_positions=5),
        dict(n_layer=3, n_embd=48, n_head=6, vocab_size=257, n_positions=64),
        dict(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16, n_inner=40),
        dict(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16, tie_word_embeddings=False),
    ],
)
def test_closed_form_matches_the_inventory_on_tiny_shapes(shape):
    model = tiny_gpt2(**shape)
    inv = inventory.inventory(model, "t")
    arch = {"model_type": "gpt2", **shape}
    assert inv["numel"].sum() == formulas.gpt2_params_from_config(arch)


def test_closed_form_of_gpt2_small_by_hand():
    # V·d + P·d + L·(12d² + 13d) + 2d with V=50257, P=1024, d=768, L=12
    assert 50257 * 768 + 1024 * 768 + 12 * (12 * 768**2 + 13 * 768) + 2 * 768 == 124_439_808
    assert formulas.gpt2_params(50257, 1024, 768, 12) == 124_439_808
