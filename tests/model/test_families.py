"""Architectures beyond GPT-2: published totals, closed forms, structural roles, and refusals."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from pipeline.core.errors import PipelineError
from pipeline.model import build, config_file, formulas, inventory, reconcile
from tests.conftest import compose_model

# Published totals, each from its source:
PUBLISHED = {
    # 6 blocks of GPT-2 small's shape; the DistilGPT2 model card says "82 million parameters".
    "distilgpt2": 81_912_576,
    # Pythia README (EleutherAI/pythia), model table, "Total params" / "Non-embedding params".
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    # OPT-125M: sum(p.numel()) of facebook/opt-125m, "125M" in Zhang et al. 2022, Table 1.
    "opt-125m": 125_239_296,
    # TinyLlama README: 1.1B; exact count of TinyLlama/TinyLlama-1.1B-Chat-v1.0.
    "tinyllama-1_1b": 1_100_048_384,
    # Llama 2 7B: 6,738,415,616, the exact count of meta-llama/Llama-2-7b-hf (Touvron et al. 2023: "7B").
    "llama-2-7b": 6_738_415_616,
    # BERT base uncased as BertModel (with pooler): 109,482,240 (Devlin et al. 2019: "110M").
    "bert-base-uncased": 109_482_240,
}
PYTHIA_NON_EMBEDDING = {"pythia-70m": 18_915_328, "pythia-160m": 85_056_000}  # Pythia README


def _build(arch: dict, auto_class: str = "causal_lm"):
    arch = dict(arch)
    model_type = arch.pop("model_type")
    return build.build_meta(AutoConfig.for_model(model_type, **arch), "m", auto_class)


def _inv(name: str, **over):
    entry = compose_model(name)
    model = _build({**entry["architecture"], **over}, entry["auto_class"])
    return model, inventory.inventory(model, name)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shipped_families_match_published_totals(name):
    _, inv = _inv(name)
    assert inv["numel"].sum() == PUBLISHED[name]


@pytest.mark.parametrize("name", list(PYTHIA_NON_EMBEDDING))
def test_pythia_non_embedding_matches_the_suite(name):
    _, inv = _inv(name)
    assert inventory.summarize(inv)["non_embedding"] == PYTHIA_NON_EMBEDDING[name]


def _llama_closed(a: dict) -> int:
    return formulas.llama_params_from_config(a)


def _neox_closed(a: dict) -> int:
    return formulas.gpt_neox_params(
        vocab=a["vocab_size"],
        d=a["hidden_size"],
        layers=a["num_hidden_layers"],
        inner=a["intermediate_size"],
        tied=a.get("tie_word_embeddings", False),
    )


TINY_LLAMA = dict(hidden_size=32, intermediate_size=88, num_hidden_layers=2, num_attention_heads=4, vocab_size=100)
TINY_NEOX = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=100)


@pytest.mark.parametrize(
    ("name", "over"),
    [
        ("tinyllama-1_1b", {}),
        ("llama-2-7b", {}),
        ("llama-2-7b", {**TINY_LLAMA, "num_key_value_heads": 4}),
        ("llama-2-7b", {**TINY_LLAMA, "num_key_value_heads": 2}),
        ("llama-2-7b", {**TINY_LLAMA, "num_key_value_heads": 1, "tie_word_embeddings": True}),
    ],
)
def test_gated_mlp_closed_form(name, over):
    arch = {**compose_model(name)["architecture"], **over}
    _, inv = _inv(name, **over)
    assert inv["numel"].sum() == _llama_closed(arch)


@pytest.mark.parametrize(("name", "over"), [("pythia-70m", {}), ("pythia-160m", {}), ("pythia-70m", TINY_NEOX)])
def test_gpt_neox_closed_form(name, over):
    arch = {**compose_model(name)["architecture"], **over}
    _, inv = _inv(name, **over)
    assert inv["numel"].sum() == _neox_closed(arch)


TINY = {
    "distilgpt2": dict(n_embd=32, n_head=4, vocab_size=100, n_positions=16),
    "pythia-70m": TINY_NEOX,
    "opt-125m": dict(
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=100,
        word_embed_proj_dim=32,
        max_position_embeddings=16,
    ),
    "tinyllama-1_1b": {**TINY_LLAMA, "num_key_value_heads": 2},
    "bert-base-uncased": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=100,
        max_position_embeddings=16,
    ),
}


@pytest.mark.parametrize("name", list(TINY))
def test_roles_and_components_partition_every_family(name):
    model, inv = _inv(name, **TINY[name])
    names = {n for n, _ in model.named_parameters()}
    for column, allowed in (("role", inventory.ROLES), ("component", inventory.COMPONENTS)):
        assert set(inv[column]) <= set(allowed)
        groups = [set(g["name"]) for _, g in inv.groupby(column)]
        assert sum(len(g) for g in groups) == len(set().union(*groups)) == len(names)
        assert set().union(*groups) == names
    assert inv["numel"].sum() == sum(p.numel() for p in model.parameters())


def test_llama_has_no_biases_and_rmsnorm_gains():
    model, inv = _inv("tinyllama-1_1b", **TINY[name := "tinyllama-1_1b"])
    assert not (inv["role"].isin(["bias", "norm_bias"])).any()
    gains = inv[inv["role"] == "norm_gain"]
    assert set(gains["module_class"]) == {"LlamaRMSNorm"} and set(gains["component"]) == {"layer_norm"}
    assert len(gains) == 2 * TINY[name]["num_hidden_layers"] + 1
    # rotary frequencies are buffers, not parameters
    assert any("inv_freq" in b for b, _ in model.named_buffers())
    assert not inv["name"].str.contains("inv_freq").any()
    head = inv.set_index("name").loc["lm_head.weight"]
    assert head["role"] == "embedding" and head["component"] == "output_head"
    s = inventory.summarize(inv)
    assert s["bias_named"] == 0 and not s["structural_tied"]


def test_pythia_parts():
    _, inv = _inv("pythia-70m", **TINY_NEOX)
    by = inv.set_index("name")
    assert by.loc["gpt_neox.layers.0.attention.query_key_value.weight", "component"] == "attention"
    assert by.loc["gpt_neox.layers.1.mlp.dense_4h_to_h.bias", "component"] == "mlp"
    assert by.loc["lm_head.weight", "component"] == "output_head"  # embed_out in Pythia's files (see below)
    assert "position_embedding" not in set(inv["component"])  # rotary: no table


def test_opt_positions_carry_an_offset_of_two():
    _, inv = _inv("opt-125m", **TINY["opt-125m"])
    pos = inv[inv["component"] == "position_embedding"].iloc[0]
    assert pos["shape"] == f"{16 + 2}x32"
    # fc1/fc2 sit directly in the decoder layer: the block's matrices outside attention are the MLP
    assert set(inv[inv["name"].str.contains(r"\.fc[12]\.")]["component"]) == {"mlp"}
    assert inventory.summarize(inv)["structural_tied"]


def test_bert_base_model_parts():
    _, inv = _inv("bert-base-uncased", **TINY["bert-base-uncased"])
    by = inv.set_index("name")
    assert by.loc["embeddings.token_type_embeddings.weight", "component"] == "segment_embedding"
    assert by.loc["embeddings.position_embeddings.weight", "component"] == "position_embedding"
    assert by.loc["pooler.dense.weight", ["role", "component"]].tolist() == ["matrix", "pooler"]
    assert by.loc["encoder.layer.0.attention.output.dense.weight", "component"] == "attention"
    assert by.loc["encoder.layer.0.output.dense.weight", "component"] == "mlp"
    assert by.loc["embeddings.LayerNorm.bias", ["role", "component"]].tolist() == ["norm_bias", "layer_norm"]
    assert not inv["is_output_embedding"].any()  # the base model has no head


def test_bert_masked_lm_head_is_tied_and_its_bias_has_a_role():
    entry = compose_model("bert-base-uncased")
    model = _build({**entry["architecture"], **TINY["bert-base-uncased"]}, "masked_lm")
    inv = inventory.inventory(model, "bert-mlm").set_index("name")
    assert inv.loc["cls.predictions.bias", ["role", "component", "module_class"]].tolist() == [
        "bias",
        "output_head",
        "Linear",
    ]
    assert inv.loc["cls.predictions.transform.dense.weight", "component"] == "output_head"
    assert inv.loc["bert.embeddings.word_embeddings.weight", "aliases"] == "cls.predictions.decoder.weight"


def test_models_needing_remote_code_are_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "my_arch", "auto_map": {"AutoModelForCausalLM": "modeling_my.MyModel"}})
    )
    with pytest.raises(PipelineError, match=r"needs the code shipped with the model .*trust_remote_code"):
        config_file.load_config(folder, "m")
    (folder / "config.json").write_text(json.dumps({"model_type": "my_arch"}))
    with pytest.raises(PipelineError, match=r"not built into transformers"):
        config_file.load_config(folder, "m")


def _save(folder, state: dict, config: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))


# transformers' own auto classes, named here so the oracle does not go through pipeline/model/inventory.py
ORACLE_AUTO = {"causal_lm": "AutoModelForCausalLM", "masked_lm": "AutoModelForMaskedLM", "base": "AutoModel"}


def _real(name: str, auto_class: str, **over):
    """A tiny real model (random values) of a shipped family, and its full config.json mapping."""
    import torch
    import transformers

    entry = compose_model(name)
    arch = {**entry["architecture"], **over}
    arch_no_type = {k: v for k, v in arch.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(arch["model_type"], **arch_no_type)
    torch.manual_seed(0)
    model = getattr(transformers, ORACLE_AUTO[auto_class]).from_config(config)
    return model, {**arch, "model_type": arch["model_type"]}


def test_pythia_checkpoint_keys_go_through_transformers_renames(tmp_path):
    from pipeline.formats import safetensors_file
    from pipeline.model import reconcile

    model, config = _real("pythia-70m", "causal_lm", **TINY_NEOX)
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in model.state_dict().items()}
    _save(tmp_path / "ck", state, config)
    meta = _build(config)
    entries = safetensors_file.read_checkpoint(tmp_path / "ck", ["model.safetensors"])
    rec = reconcile.reconcile(meta, entries, "pythia")
    assert rec.key_of["lm_head.weight"] == "embed_out.weight"
    assert not rec.buffers and not rec.unused


def test_bert_base_from_a_pretraining_checkpoint(tmp_path):
    """bert-base-uncased's file: bert.-prefixed keys, LayerNorm gamma/beta, and pretraining heads (cls.*)."""
    from pipeline.formats import safetensors_file

    model, config = _real("bert-base-uncased", "base", **TINY["bert-base-uncased"])
    import transformers

    full = transformers.BertForPreTraining(model.config)
    state = {}
    for k, v in full.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):  # tied: stored once
            state[k] = v
    _save(tmp_path / "ck", state, config)
    meta = _build(config, "base")
    entries = safetensors_file.read_checkpoint(tmp_path / "ck", ["model.safetensors"])
    rec = reconcile.reconcile(meta, entries, "bert", base_only=True)
    assert rec.key_of["embeddings.LayerNorm.weight"] == "bert.embeddings.LayerNorm.gamma"
    assert {e.key.split(".")[0] for e in rec.unused} == {"cls"}
    counted = rec.entry_values - sum(e.numel for e in rec.unused)
    assert counted == sum(p.numel() for p in meta.parameters())
    with pytest.raises(PipelineError, match=r"unexpected keys: cls\."):
        reconcile.reconcile(meta, entries, "bert", base_only=False)
