"""The inventory: roles, components, layers, ties and the partition property, on tiny GPT-2s."""

from __future__ import annotations

import pytest
import torch

from pipeline.model import inventory
from tests.conftest import tiny_gpt2


def test_one_row_per_unique_tensor_and_total_matches_parameters(tiny_model):
    inv = inventory.inventory(tiny_model, "tiny")
    assert len(inv) == len(list(tiny_model.parameters()))
    assert inv["numel"].sum() == sum(p.numel() for p in tiny_model.parameters())
    assert inv["name"].is_unique


def test_meta_build_counts_like_a_real_build():
    meta = inventory.inventory(tiny_gpt2("meta"), "t")
    real = inventory.inventory(tiny_gpt2("cpu"), "t")
    assert meta.equals(real)


@pytest.mark.parametrize("tied", [True, False])
def test_roles_and_components_partition_the_parameters(tied):
    model = tiny_gpt2(tie_word_embeddings=tied)
    inv = inventory.inventory(model, "t")
    all_names = {n for n, _ in model.named_parameters()}
    for column, allowed in (("role", inventory.ROLES), ("component", inventory.COMPONENTS)):
        groups = {value: set(part["name"]) for value, part in inv.groupby(column)}
        assert set(groups) <= set(allowed)
        # disjoint ...
        seen: set[str] = set()
        for names in groups.values():
            assert not (seen & names)
            seen |= names
        # ... and covering every parameter
        assert seen == all_names
        assert sum(inv.groupby(column)["numel"].sum()) == sum(p.numel() for p in model.parameters())


def test_gpt2_roles_come_from_module_types(tiny_model):
    inv = inventory.inventory(tiny_model, "t").set_index("name")
    d, v, p = 32, 100, 16
    assert inv.loc["transformer.wte.weight", ["role", "component", "module_class"]].tolist() == [
        "embedding",
        "token_embedding",
        "Embedding",
    ]
    assert inv.loc["transformer.wpe.weight", "component"] == "position_embedding"
    assert inv.loc["transformer.h.1.attn.c_attn.weight", ["role", "component", "module_class", "shape"]].tolist() == [
        "matrix",
        "attention",
        "Conv1D",
        f"{d}x{3 * d}",
    ]
    assert inv.loc["transformer.h.0.attn.c_proj.bias", ["role", "component"]].tolist() == ["bias", "attention"]
    assert inv.loc["transformer.h.0.mlp.c_fc.weight", ["role", "component"]].tolist() == ["matrix", "mlp"]
    assert inv.loc["transformer.h.0.ln_1.weight", ["role", "component"]].tolist() == ["norm_gain", "layer_norm"]
    assert inv.loc["transformer.ln_f.bias", ["role", "component"]].tolist() == ["norm_bias", "layer_norm"]
    assert inv.loc["transformer.wte.weight", "numel"] == v * d
    assert inv.loc["transformer.wpe.weight", "numel"] == p * d


def test_layer_index_comes_from_the_block_list(tiny_model):
    inv = inventory.inventory(tiny_model, "t").set_index("name")
    assert inv.loc["transformer.h.0.mlp.c_proj.weight", "layer"] == 0
    assert inv.loc["transformer.h.1.ln_2.bias", "layer"] == 1
    assert inv["layer"].isna().sum() == 4  # wte, wpe, ln_f gain and shift
    assert set(inv["layer"].dropna()) == {0, 1}


def test_tied_tensor_is_one_row_with_its_alias(tiny_model):
    inv = inventory.inventory(tiny_model, "t")
    assert "lm_head.weight" not in set(inv["name"])
    row = inv[inv["name"] == "transformer.wte.weight"].iloc[0]
    assert row["aliases"] == "lm_head.weight"
    assert row["is_input_embedding"] and row["is_output_embedding"]
    assert (inv["aliases"] != "").sum() == 1


def test_untied_head_is_its_own_row(tiny_untied):
    inv = inventory.inventory(tiny_untied, "t").set_index("name")
    assert inv.loc["lm_head.weight", ["role", "component", "module_class"]].tolist() == [
        "embedding",
        "output_head",
        "Linear",
    ]
    assert not inv.loc["lm_head.weight", "is_input_embedding"]
    assert inv.loc["lm_head.weight", "is_output_embedding"]
    assert inv.loc["transformer.wte.weight", "aliases"] == ""


def test_summary_of_tied_and_untied():
    d, v, p = 32, 100, 16
    tied = inventory.summarize(inventory.inventory(tiny_gpt2(), "t"))
    untied = inventory.summarize(inventory.inventory(tiny_gpt2(tie_word_embeddings=False), "t"))
    assert tied["structural_tied"] and not untied["structural_tied"]
    assert tied["head_params"] == untied["head_params"] == v * d
    assert untied["total"] == tied["total"] + v * d == tied["total_untied"] == untied["total_untied"]
    assert tied["embedding"] == v * d + p * d
    assert untied["embedding"] == 2 * v * d + p * d
    assert tied["non_embedding"] == untied["non_embedding"] == tied["total"] - v * d - p * d


def test_bias_named_counts_names_ending_in_bias(tiny_model):
    s = inventory.summarize(inventory.inventory(tiny_model, "t"))
    expected = sum(p.numel() for n, p in tiny_model.named_parameters() if n.endswith(".bias"))
    assert s["bias_named"] == expected
    assert s["bias_named_share"] == pytest.approx(expected / s["total"])


def test_embedding_names_by_module_identity(tiny_model, tiny_untied):
    assert inventory.embedding_names(tiny_model) == ("transformer.wte.weight", "lm_head.weight")
    assert inventory.embedding_names(tiny_untied) == ("transformer.wte.weight", "lm_head.weight")


class _Odd(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.alpha = torch.nn.Parameter(torch.ones(1))
        self.offset_bias = torch.nn.Parameter(torch.zeros(3))
        self.grid = torch.nn.Parameter(torch.ones(2, 3))


def test_a_module_type_no_rule_knows_gets_roles_from_its_tensors(tiny_model):
    # a *bias is a bias, one value a scalar, ndim >= 2 a matrix, else a per-channel scale; the row keeps the
    # module's class and path, and the count still equals sum(p.numel())
    tiny_model.transformer.h[0].odd = _Odd()
    inv = inventory.inventory(tiny_model, "t").set_index("name")
    odd = inv.loc[[f"transformer.h.0.odd.{a}" for a in ("scale", "alpha", "offset_bias", "grid")]]
    assert odd["role"].tolist() == ["scale", "scalar", "bias", "matrix"]
    assert set(odd["module_class"]) == {"_Odd"} and set(odd["component"]) == {"misc"}
    assert set(odd["layer"]) == {0}
    assert inv["numel"].sum() == sum(p.numel() for p in tiny_model.parameters())


def test_every_component_has_a_figure_label():
    from pipeline.report.plotting import COMPONENT_LABELS

    assert list(COMPONENT_LABELS) == list(inventory.COMPONENTS)
