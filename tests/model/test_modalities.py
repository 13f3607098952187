"""The shipped modalities sweep, counted through the pipeline, against closed forms written from each paper.

Oracles: pipeline/model/formulas.py (ViT, a Mamba block, a T5 block, a Whisper layer), each citing its paper,
and transformers' own sum(p.numel()) of the class each config names; the parts (towers, stacks) against the
same closed forms, and the cost table's caches against hand derivations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import sources
from pipeline.core import params
from pipeline.cost import estimates
from pipeline.model import build, conventions, formulas
from pipeline.model.count import count_folder

MODELS = Path(__file__).parents[2] / "conf" / "model"
SETTINGS = {"context": 0, "batch": 1, "tokens_per_param": 20, "adam_bytes_per_param": 16}


def _count(name: str, tmp_path: Path):
    entry = yaml.safe_load((MODELS / f"{name}.yaml").read_text())
    spec = params.model_spec(name, entry)
    out = tmp_path / name
    out.mkdir()
    (out / "provenance.json").write_text(json.dumps(sources.materialise(spec, out, hashes=False)))
    counted = count_folder(spec, out)
    inv, row, model, config = counted.inv, counted.row, counted.model, counted.config
    conv = {r["convention"]: r["params"] for r in conventions.conventions(inv, row)}
    causal = build.is_causal_class(type(model), config)
    cost = estimates.table(name, model, config, row, conv, SETTINGS, causal).set_index("quantity")["value"]
    return inv, row, conv, cost, model


def _by(inv, column):
    return inv.groupby(column)["numel"].sum().to_dict()


def test_vit_base_is_its_closed_form(tmp_path):
    inv, row, conv, cost, model = _count("vit-base-patch16-224-in21k", tmp_path)
    # ViT-Base/16 (the ViT paper, Table 1: 86M): d 768, 12 layers, MLP 3072, 224-pixel images in 16-pixel patches
    assert row["total"] == formulas.vit_params(768, 12, 3072, 224, 16) == 86_389_248
    assert row["model_class"] == "ViTModel" and row["class_from"] == "architectures"
    assert set(inv["tower"]) == {"vision"}
    comp = _by(inv, "component")
    assert comp["input_projection"] == 3 * 16 * 16 * 768 + 768  # the patch convolution
    assert comp["position_embedding"] == (14 * 14 + 1) * 768
    assert _by(inv, "role")["conv_kernel"] == 3 * 16 * 16 * 768
    # an encoder of images caches nothing; its context is its 197 tokens
    assert cost["kv_cache_bytes_per_token_bfloat16"] == 0 and cost["kv_cache_bytes_at_context"] == 0
    # Kaplan's N leaves out the position table and the class token (both embedding tables)
    assert cost["forward_flops_per_token"] == 2 * (row["total"] - 197 * 768 - 768) + 2 * 12 * 197 * 768


def test_mamba_is_its_closed_form_and_keeps_a_fixed_state(tmp_path):
    inv, row, conv, cost, model = _count("mamba-130m", tmp_path)
    d, inner, state, kernel, rank, layers, vocab = 768, 1536, 16, 4, 48, 24, 50280
    block = formulas.mamba_block_params(d, inner, state, kernel, rank)
    assert row["total"] == vocab * d + layers * block + d == 129_135_360  # tied head, final RMSNorm
    per_layer = inv[inv["layer"].notna()].groupby("layer")["numel"].sum()
    assert set(per_layer) == {block}
    roles = _by(inv, "role")
    assert roles["state_space"] == layers * (inner * state + inner)  # A_log and D
    assert roles["conv_kernel"] == layers * inner * kernel
    # no attention: no KV cache; per sequence and layer, as transformers' cache holds them: the conv's last
    # kernel-wide inputs in bf16 and the E × N recurrent state in float32 (tests/cost/test_engine_types.py)
    assert cost["kv_cache_bytes_per_token_bfloat16"] == 0
    assert cost["state_bytes_per_sequence_bfloat16"] == layers * (inner * kernel * 2 + inner * state * 4)
    assert conv["attn_mlp_matrices"] == 0


def test_jamba_caches_only_its_attention_layers(tmp_path):
    inv, row, conv, cost, model = _count("jamba-v0_1", tmp_path)
    # 4 of 32 layers attend (attn_layer_period 8, offset 4): 8 KV heads of 128 values each, K and V, bf16
    assert cost["kv_cache_bytes_per_token_bfloat16"] == 4 * 2 * 8 * 128 * 2
    # the other 28 keep a Mamba state: conv (2d channels × 4, bf16) and 2d × 16 (float32)
    assert cost["state_bytes_per_sequence_bfloat16"] == 28 * (8192 * 4 * 2 + 8192 * 16 * 4)
    assert row["n_experts"] == 16 and row["experts_per_token"] == 2
    assert {"attention", "state_space", "experts", "router"} <= set(inv["component"])


def test_t5_small_is_its_closed_form_stack_by_stack(tmp_path):
    inv, row, conv, cost, model = _count("t5-small", tmp_path)
    d, inner, ff, layers, vocab, buckets, heads = 512, 512, 2048, 6, 32128, 32, 8
    encoder = layers * formulas.t5_block_params(d, inner, ff) + buckets * heads + d
    decoder = layers * formulas.t5_block_params(d, inner, ff, decoder=True) + buckets * heads + d
    assert conv["encoder_stack"] == encoder and conv["decoder_stack"] == decoder
    assert conv["shared_between_stacks"] == vocab * d  # one embedding: both stacks and the (tied) head
    # 60,506,624: the T5 paper's "Small" (60M), and transformers' own count of t5-small
    assert row["total"] == encoder + decoder + vocab * d == 60_506_624
    assert _by(inv, "component")["cross_attention"] == layers * 4 * d * inner
    # per generated token: self-attention K and V of 6 layers; per input token: cross-attention, once
    assert cost["kv_cache_bytes_per_token_bfloat16"] == layers * 2 * inner * 2
    assert cost["cross_attention_kv_bytes_per_input_token_bfloat16"] == layers * 2 * inner * 2


def test_whisper_tiny_is_its_closed_form(tmp_path):
    inv, row, conv, cost, model = _count("whisper-tiny", tmp_path)
    d, ff, layers, vocab, mels = 384, 1536, 4, 51865, 80
    enc_layer, dec_layer = formulas.whisper_layer_params(d, ff), formulas.whisper_layer_params(d, ff, decoder=True)
    front = (mels * d * 3 + d) + (d * d * 3 + d)  # two kernel-3 convolutions
    encoder = front + 1500 * d + layers * enc_layer + 2 * d
    decoder = vocab * d + 448 * d + layers * dec_layer + 2 * d  # the tied head adds nothing
    assert conv["encoder_stack"] == encoder and conv["decoder_stack"] == decoder
    assert row["total"] == encoder + decoder == 37_760_640
    per = inv[inv["layer"].notna()].groupby(["block_list", "layer"])["numel"].sum()
    assert set(per.loc["model.encoder.layers"]) == {enc_layer} and set(per.loc["model.decoder.layers"]) == {dec_layer}
    # cross-attention is cached once for the 1,500 audio frames
    assert cost["kv_cache_bytes_at_context"] == layers * 2 * d * 2 * 448 + layers * 2 * d * 2 * 1500


def test_llava_parts_add_up_and_name_each_tower(tmp_path):
    inv, row, conv, cost, model = _count("llava-1_5-7b", tmp_path)
    assert row["model_class"] == "LlavaForConditionalGeneration"
    towers = _by(inv, "tower")
    assert set(towers) == {"text", "vision", "projector"}
    assert conv["language_model"] + conv["vision_tower"] + conv["projector"] == row["total"]
    # the projector: two linear layers, 1024 -> 4096 -> 4096, with biases
    assert conv["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    # Vicuna-7B (Llama 2 7B, vocabulary 32,064, untied head): the Llama closed form
    text = formulas.llama_params(32064, 4096, 32, 11008, 32)
    assert conv["language_model"] == text
    # the vision tower caches nothing: the KV cache is the language model's alone
    assert cost["kv_cache_bytes_per_token_bfloat16"] == 32 * 2 * 4096 * 2


@pytest.mark.parametrize("name", ["llava-1_5-7b", "mamba-130m", "jamba-v0_1", "t5-small", "whisper-tiny"])
def test_every_shipped_model_is_transformers_own_count(name, tmp_path):
    import torch
    import transformers

    inv, row, conv, cost, model = _count(name, tmp_path)
    cls = getattr(transformers, row["model_class"])
    with torch.device("meta"):
        oracle = sum(p.numel() for p in cls._from_config(model.config).parameters())
    assert row["total"] == oracle
