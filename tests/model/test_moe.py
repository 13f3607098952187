"""Mixtures of experts: roles and components by module type, total against active, per-expert checkpoints."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import yaml

from pipeline import formats
from pipeline.core import compose, params, sizes
from pipeline.core.errors import PipelineError
from pipeline.model import conventions, formulas, inventory, moe
from pipeline.model.count import count_folder
from pipeline.stages import download
from pipeline.values import distributions
from tests.conftest import ROOT, TINY_LLAMA, compose_model, tiny_gpt2, tiny_params

TINY = TINY_LLAMA  # the attention and sizes every tiny mixture below shares
# One tiny model per family, each with what makes it different (E = 4 experts, k = 2 per token).
FAMILIES = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {  # a shared expert with its gate, and layer 1 dense (mlp_only_layers)
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 40,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [1],
    },
    "deepseek_v3": {  # multi-head latent attention, a shared expert, layer 0 dense (first_k_dense_replace)
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 24,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "q_lora_rank": 16,
        "kv_lora_rank": 8,
        "qk_rope_head_dim": 4,
        "qk_nope_head_dim": 4,
        "v_head_dim": 8,
        "n_group": 2,
        "topk_group": 1,
    },
    "gpt_oss": {  # expert biases, a router bias, attention sinks
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "head_dim": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2, "eos_token_id": 1, "pad_token_id": 0},
}


def _build(model_type: str, **extra):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY, **FAMILIES.get(model_type, {}), **extra})
    with torch.device("meta"):
        return config, AutoModelForCausalLM.from_config(config)


def _counted(model_type: str, **extra):
    config, model = _build(model_type, **extra)
    inv = inventory.inventory(model, model_type)
    n_experts, top_k = moe.settings(config, moe.structure(model), model_type)
    return model, inv, n_experts, top_k, inventory.summarize(inv, top_k)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_every_family_partitions_and_counts_active(model_type):
    model, inv, n_experts, top_k, summary = _counted(model_type)
    total = sum(p.numel() for p in model.parameters())
    assert summary["total"] == total
    # components and roles each partition the parameters: every tensor once, nothing left over
    assert inv["component"].isin(inventory.COMPONENTS).all() and inv["role"].isin(inventory.ROLES).all()
    assert inv.groupby("component")["numel"].sum().sum() == total == inv.groupby("role")["numel"].sum().sum()
    assert (n_experts, top_k) == (4, 2)
    experts = inv[inv["component"] == "experts"]
    assert not experts.empty and (experts["experts"] == 4).all()
    assert inv.loc[inv["component"] != "experts", "experts"].isna().all()
    assert (inv["component"] == "router").any()
    # active: everything but the routed experts, plus k/E of them
    routed = int(experts["numel"].sum())
    assert summary["routed_expert_params"] == routed
    assert summary["active"] == total - routed + routed * 2 // 4
    assert summary["active"] < total


def test_shared_experts_and_dense_layers_are_told_apart():
    _, inv, *_ = _counted("qwen2_moe")
    shared = inv[inv["component"] == "shared_experts"]
    assert set(shared["layer"]) == {0}  # layer 1 is dense (mlp_only_layers)
    assert shared["name"].str.contains("shared_expert_gate").any()  # the sigmoid gate of the shared expert
    assert set(inv.loc[inv["component"] == "mlp", "layer"]) == {1}
    _, inv, *_ = _counted("deepseek_v3")
    assert set(inv.loc[inv["component"] == "mlp", "layer"]) == {0}  # first_k_dense_replace
    assert set(inv.loc[inv["component"] == "shared_experts", "layer"]) == {1}


def test_gpt_oss_expert_biases_router_bias_and_sinks():
    _, inv, *_ = _counted("gpt_oss")
    experts = inv[inv["component"] == "experts"].set_index("name")
    assert experts.filter(like="gate_up_proj_bias", axis=0)["role"].eq("bias").all()
    assert inv.loc[inv["name"].str.endswith("router.bias"), "role"].eq("bias").all()
    sinks = inv[inv["name"].str.endswith("self_attn.sinks")]
    assert len(sinks) == 2 and (sinks["role"] == "attention_sink").all() and (sinks["component"] == "attention").all()


def test_a_dense_model_is_active_in_full():
    model = tiny_gpt2()
    inv = inventory.inventory(model, "t")
    assert moe.settings(model.config, moe.structure(model), "t") == (None, None)
    summary = inventory.summarize(inv, None)
    assert summary["active"] == summary["total"] and summary["routed_expert_params"] is None
    rows = {r["convention"]: r["params"] for r in conventions.conventions(inv, summary)}
    assert rows["active_per_token"] == rows["unique"]


def test_an_expert_count_or_top_k_missing_from_the_config_is_one_line():
    _, model = _build("mixtral")
    found = moe.structure(model)
    with pytest.raises(PipelineError, match=r"model 'm': .*no expert count \(one of num_local_experts"):
        moe.settings(SimpleNamespace(num_experts_per_tok=2), found, "m")
    with pytest.raises(PipelineError, match=r"model 'm': .*not how many each token uses \(one of num_experts_per_tok"):
        moe.settings(SimpleNamespace(num_local_experts=4), found, "m")


def test_mixtral_closed_form():
    """formulas.mixtral_params, written from the paper's block, against the count of the tiny model."""
    _, _, _, _, summary = _counted("mixtral")
    shape = {"vocab": 64, "d": 32, "layers": 2, "heads": 4, "kv_heads": 2, "expert_width": 48, "experts": 4}
    assert summary["total"] == formulas.mixtral_params(**shape)
    assert summary["active"] == formulas.mixtral_params(**shape, per_token=2)


# The published figures of each card (sources in conf/model/<name>.yaml): totals to the card's rounding,
# and the active figure under the convention each card uses.
CARDS = {
    "mixtral-8x7b": "active_per_token",  # Mixtral model card: 46.7B total, 12.9B active
    "qwen1_5-moe-a2_7b": "active_per_token",  # Qwen1.5-MoE card: 14.3B total, 2.7B activated
    "olmoe-1b-7b": "active_per_token",  # OLMoE paper: 6.9B total, 1.3B active
    "deepseek-v3": "active_excluding_input_embedding",  # DeepSeek-V3 card: 671B total, 37B activated
    "gpt-oss-20b": "active_excluding_input_embedding",  # gpt-oss model card table: 20.91B total, 3.61B active
}


@pytest.mark.parametrize("name", list(CARDS))
def test_shipped_moe_models_match_their_cards(name, workdir, monkeypatch):
    data = tiny_params({name: compose_model(name)})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", name])
    download.main()
    spec = params.load().models[name]
    counted = count_folder(spec, workdir / "data/models" / name)
    inv, row = counted.inv, counted.row
    convs = {r["convention"]: r["params"] for r in conventions.conventions(inv, row)}
    assert sizes.rounds_to(row["total"], spec.stated_size), (row["total"], spec.stated_size)
    assert sizes.rounds_to(convs[CARDS[name]], spec.stated_active), (convs[CARDS[name]], spec.stated_active)


def test_mixtral_8x7b_closed_form():
    arch = compose_model("mixtral-8x7b")["architecture"]
    _, model = _build("mixtral", **{k: v for k, v in arch.items() if k != "model_type"})
    inv = inventory.inventory(model, "mixtral")
    summary = inventory.summarize(inv, arch["num_experts_per_tok"])
    shape = {
        "vocab": arch["vocab_size"],
        "d": arch["hidden_size"],
        "layers": arch["num_hidden_layers"],
        "heads": arch["num_attention_heads"],
        "kv_heads": arch["num_key_value_heads"],
        "expert_width": arch["intermediate_size"],
        "experts": arch["num_local_experts"],
    }
    assert summary["total"] == formulas.mixtral_params(**shape)  # 46,702,792,704
    assert summary["active"] == formulas.mixtral_params(**shape, per_token=arch["num_experts_per_tok"])


# --- checkpoints in the published per-expert layout ---------------------------------------------


def _mixtral_state(per_expert: bool, drop: str | None = None) -> dict:
    """A tiny Mixtral's tensors with real random values, in the published layout (one tensor per expert,
    block_sparse_moe.*, w1/w2/w3) or transformers' own fused layout."""
    import torch

    torch.manual_seed(0)
    _, model = _build("mixtral")
    state = {}
    for name, p in model.state_dict().items():
        if ".mlp.experts." in name and per_expert:
            layer = name.split(".mlp.")[0]
            n, two_i, d = p.shape if name.endswith("gate_up_proj") else (p.shape[0], 0, 0)
            for j in range(n):
                base = f"{layer}.block_sparse_moe.experts.{j}"
                if name.endswith("gate_up_proj"):
                    state[f"{base}.w1.weight"] = torch.randn(two_i // 2, d)
                    state[f"{base}.w3.weight"] = torch.randn(two_i // 2, d)
                else:
                    state[f"{base}.w2.weight"] = torch.randn(p.shape[1], p.shape[2])
        elif ".mlp.gate." in name and per_expert:
            state[name.replace(".mlp.", ".block_sparse_moe.")] = torch.randn(*p.shape)
        else:
            state[name] = torch.randn(*p.shape)
    if drop:
        del state[drop]
    return state


def _mixtral_folder(folder, state: dict):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {"model_type": "mixtral", **TINY, **FAMILIES["mixtral"], "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _count_folder(workdir, monkeypatch, folder):
    data = tiny_params({"m": {"source": "path", "path": str(folder)}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", "m"])
    download.main()
    counted = count_folder(params.load().models["m"], workdir / "data/models/m")
    return counted.inv, counted.row


@pytest.mark.parametrize("per_expert", [True, False], ids=["published-per-expert", "fused"])
def test_mixtral_checkpoint_counts_exactly_in_either_layout(per_expert, workdir, monkeypatch):
    _, model = _build("mixtral")
    expected = sum(p.numel() for p in model.parameters())
    folder = _mixtral_folder(workdir / "ck", _mixtral_state(per_expert))
    inv, row = _count_folder(workdir, monkeypatch, folder)
    assert row["total"] == expected and row["checkpoint_tensors"] == expected  # nothing unexpected, nothing extra
    assert row["checkpoint_buffers"] == 0 and row["checkpoint_extra"] == 0
    keys = inv.set_index("name")["checkpoint_key"]
    if per_expert:
        assert keys["model.layers.0.mlp.experts.gate_up_proj"] == (
            "model.layers.0.block_sparse_moe.experts.*.w1.weight (4);"
            "model.layers.0.block_sparse_moe.experts.*.w3.weight (4)"
        )
        assert keys["model.layers.1.mlp.gate.weight"] == "model.layers.1.block_sparse_moe.gate.weight"


def test_a_per_expert_checkpoint_missing_an_expert_is_named(workdir, monkeypatch):
    folder = _mixtral_folder(
        workdir / "ck", _mixtral_state(True, drop="model.layers.1.block_sparse_moe.experts.2.w2.weight")
    )
    with pytest.raises(
        PipelineError, match=r"model 'm': .*experts\.\*\.w2\.weight numbers its experts 3 where 2 is miss"
    ):
        _count_folder(workdir, monkeypatch, folder)


def test_experts_stored_both_per_expert_and_stacked_are_refused(workdir, monkeypatch):
    """One stacked parameter from two sources (per-expert tensors and the stacked one): counted once, it hid one."""
    import torch

    state = _mixtral_state(True)
    fused = _mixtral_state(False)
    state["model.layers.0.mlp.experts.down_proj"] = torch.randn(*fused["model.layers.0.mlp.experts.down_proj"].shape)
    folder = _mixtral_folder(workdir / "ck", state)
    with pytest.raises(
        PipelineError,
        match=r"stored twice: model\.layers\.0\.mlp\.experts\.down_proj and "
        r"model\.layers\.0\.block_sparse_moe\.experts\.\*\.w2\.weight \(4\) both hold model\.layers\.0\.mlp\.experts",
    ):
        _count_folder(workdir, monkeypatch, folder)


def test_deepseek_multi_token_prediction_layer_is_listed_apart(workdir, monkeypatch):
    """DeepSeek-V3's file stores layer num_hidden_layers (its MTP module): listed as extra, never counted."""
    import torch
    from safetensors.torch import save_file

    config, model = _build("deepseek_v3", num_nextn_predict_layers=1, first_k_dense_replace=1)
    state = {n: torch.randn(*p.shape) for n, p in model.state_dict().items()}
    for n, p in model.state_dict().items():  # the MTP layer: a copy of the last block as layer 2, plus its own norms
        if n.startswith("model.layers.1."):
            state[n.replace("model.layers.1.", "model.layers.2.")] = torch.randn(*p.shape)
    state["model.layers.2.enorm.weight"] = torch.randn(32)
    folder = workdir / "ck"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    inv, row = _count_folder(workdir, monkeypatch, folder)
    expected = sum(p.numel() for p in model.parameters())
    extra = inv[inv["kind"] == "extra"]
    assert row["total"] == expected
    stored_apart = row["checkpoint_tensors"] - expected - row["checkpoint_buffers"]  # router score-bias buffers
    assert row["checkpoint_extra"] == int(extra["numel"].sum()) == stored_apart > 0
    assert (extra["component"] == "multi_token_prediction").all()
    assert inventory.parameters(inv)["numel"].sum() == expected


def test_dense_vs_moe_sweep_composes():
    data = compose.compose(["sweep=dense-vs-moe"], conf_dir=ROOT / "conf")
    cfg = params.from_dict(data)
    assert {"mixtral-8x7b", "qwen1_5-moe-a2_7b", "olmoe-1b-7b", "deepseek-v3", "gpt-oss-20b"} <= set(cfg.models)
    assert sum(1 for s in cfg.models.values() if s.stated_active is None) >= 2  # the dense models beside them


def test_value_pass_reads_every_expert_of_a_per_expert_checkpoint(workdir, monkeypatch):
    """The bias stage's value statistics cover every parameter, merged experts read from all their tensors."""
    from pipeline.values import distributions

    folder = _mixtral_folder(workdir / "ck", _mixtral_state(True))
    inv, row = _count_folder(workdir, monkeypatch, folder)
    from pipeline import formats

    entries, _ = formats.load_entries(workdir / "data/models/m")
    stats, _ = distributions.distributions(workdir / "data/models/m", entries, inventory.parameters(inv), "m", 10)
    assert int(stats.loc[stats["by"] == "all", "count"].iloc[0]) == row["total"]
    experts = stats[(stats["by"] == "component") & (stats["group"] == "experts")]
    assert int(experts["count"].iloc[0]) == row["routed_expert_params"]


def test_gpt_oss_sinks_have_a_value_group(workdir, monkeypatch):
    import torch
    from safetensors.torch import save_file

    config, model = _build("gpt_oss")
    state = {n: torch.randn(*p.shape) for n, p in model.state_dict().items()}
    folder = workdir / "ck"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    inv, row = _count_folder(workdir, monkeypatch, folder)
    entries, _ = formats.load_entries(workdir / "data/models/m")
    stats, _ = distributions.distributions(workdir / "data/models/m", entries, inventory.parameters(inv), "m", 10)
    sinks = stats[(stats["by"] == "group") & (stats["group"] == "attention_sinks")]
    assert int(sinks["count"].iloc[0]) == 2 * 4  # 2 layers, one sink per head


@pytest.mark.parametrize("index", ["9", "03"])
def test_an_expert_numbered_out_of_place_is_named(index, workdir, monkeypatch):
    """Expert 3 stored as experts.9 (or experts.03): the count of tensors is right, the numbering is not."""
    state = _mixtral_state(True)
    for key in [k for k in state if ".experts.3." in k and k.startswith("model.layers.0.")]:
        state[key.replace(".experts.3.", f".experts.{index}.")] = state.pop(key)
    folder = _mixtral_folder(workdir / "ck", state)
    with pytest.raises(
        PipelineError, match=rf"experts\.\*\.w\d\.weight numbers its experts {index} where 3 is missing"
    ):
        _count_folder(workdir, monkeypatch, folder)


def test_transformerlens_counts_every_expert():
    """attn_mlp_matrices (TransformerLens's n_params) multiplies the MLP by the experts and adds the router."""
    arch = compose_model("mixtral-8x7b")["architecture"]
    _, model = _build("mixtral", **{k: v for k, v in arch.items() if k != "model_type"})
    inv = inventory.inventory(model, "mixtral")
    rows = {r["convention"]: r["params"] for r in conventions.conventions(inv, inventory.summarize(inv, 2))}
    d, v, layers = arch["hidden_size"], arch["vocab_size"], arch["num_hidden_layers"]
    # the closed form without embeddings, head and norms: 2·V·d and (2L + 1)·d
    expected = formulas.mixtral_params(
        vocab=v, d=d, layers=layers, heads=arch["num_attention_heads"], kv_heads=arch["num_key_value_heads"],
        expert_width=arch["intermediate_size"], experts=arch["num_local_experts"],
    ) - 2 * v * d - (2 * layers + 1) * d  # fmt: skip
    assert rows["attn_mlp_matrices"] == expected == 46_440_382_464
