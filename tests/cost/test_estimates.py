"""The cost table against hand-derived numbers (each formula in a comment), accelerate, and the published file."""

from __future__ import annotations

import sys

import pytest
import yaml

from pipeline.core import compose, params, results
from pipeline.core.errors import PipelineError
from pipeline.cost import estimates
from pipeline.model import conventions
from pipeline.model.count import count_folder
from pipeline.stages import download
from tests.conftest import ROOT, compose_model, tiny_params

SETTINGS = {"context": 0, "batch": 1, "adam_bytes_per_param": 16, "tokens_per_param": 20}


def _cost(workdir, monkeypatch, name: str, **settings) -> dict:
    """{quantity: value} for a shipped model, counted from its config the way the count stage does."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params({name: compose_model(name)}), sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", name])
    download.main()
    spec = params.load().models[name]
    counted = count_folder(spec, workdir / "data/models" / name)
    inv, row, model, config = counted.inv, counted.row, counted.model, counted.config
    conv = {c["convention"]: c["params"] for c in conventions.conventions(inv, row)}
    table = estimates.table(name, model, config, row, conv, {**SETTINGS, **settings}, spec.auto_class == "causal_lm")
    return dict(zip(table["quantity"], table["value"], strict=True))


def test_gpt2_small_by_hand(workdir, monkeypatch):
    c = _cost(workdir, monkeypatch, "gpt2")
    n_total, n_non_emb = 124_439_808, 85_056_000  # the course's total; Kaplan's non-embedding count
    v, d, layers, heads, ctx = 50257, 768, 12, 12, 1024
    assert c["weights_bytes_float32"] == 4 * n_total == 497_759_232  # accelerate estimate-memory's float32 total
    assert c["weights_bytes_bfloat16"] == 2 * n_total
    assert c["weights_bytes_int8"] == n_total
    assert c["weights_bytes_int4"] == n_total // 2
    assert c["largest_layer_bytes_float32"] == 4 * v * d == 154_389_504  # wte, accelerate's largest layer
    assert c["train_adam_mixed_bytes"] == 16 * n_total  # ZeRO: 16 bytes per parameter
    assert c["kv_cache_bytes_per_token_bfloat16"] == 2 * layers * heads * (d // heads) * 2 == 36_864  # K and V
    assert c["kv_cache_bytes_at_context"] == 36_864 * ctx  # the model's own context, batch 1
    assert c["forward_flops_per_token"] == 2 * n_non_emb + 2 * layers * ctx * d  # Kaplan Table 1
    assert c["train_tokens_chinchilla"] == 20 * n_non_emb
    assert c["train_flops_chinchilla"] == 6 * n_non_emb * 20 * n_non_emb
    assert c["weights_bytes_on_disk"] is None  # built from its config: no checkpoint


def test_grouped_query_attention_by_hand(workdir, monkeypatch):
    """TinyLlama: 32 query heads share 4 KV heads, so its cache is 8× smaller than multi-head attention's."""
    c = _cost(workdir, monkeypatch, "tinyllama-1_1b", context=4096, batch=2)
    layers, kv_heads, head = 22, 4, 2048 // 32
    assert c["kv_cache_bytes_per_token_bfloat16"] == 2 * layers * kv_heads * head * 2 == 22_528
    assert c["kv_cache_bytes_at_context"] == 22_528 * 4096 * 2  # context and batch from the settings
    n = 1_100_048_384 - 2 * 32000 * 2048  # total minus the input embedding and the untied head
    assert c["forward_flops_per_token"] == 2 * n + 2 * layers * 4096 * 32 * head


def test_latent_attention_and_sliding_windows(workdir, monkeypatch):
    ds = _cost(workdir, monkeypatch, "deepseek-v3", context=1000)
    assert ds["kv_cache_bytes_per_token_bfloat16"] == (512 + 64) * 61 * 2  # latent + rotary key per layer, bf16
    oss = _cost(workdir, monkeypatch, "gpt-oss-20b", context=1000)
    per_layer = 2 * 8 * 64 * 2  # K and V, 8 KV heads of width 64, bfloat16
    assert oss["kv_cache_bytes_per_token_bfloat16"] == 24 * per_layer
    assert oss["kv_cache_bytes_at_context"] == 12 * per_layer * 128 + 12 * per_layer * 1000  # 12 windows of 128


def test_an_encoder_has_no_kv_cache(workdir, monkeypatch):
    c = _cost(workdir, monkeypatch, "bert-base-uncased")
    assert c["kv_cache_bytes_per_token_bfloat16"] == 0 and c["kv_cache_bytes_at_context"] == 0


@pytest.mark.parametrize("name", ["gpt2", "bert-base-uncased", "tinyllama-1_1b"])
def test_memory_figures_equal_accelerates(name):
    """accelerate's calculate_maximum_sizes on the same meta model: largest layer equal; the total differs by
    exactly the buffers (accelerate counts position ids and rotary frequencies, which are not parameters)."""
    import torch
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoConfig

    from pipeline.model import build, inventory

    arch = dict(compose_model(name)["architecture"])
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    auto = compose_model(name)["auto_class"]
    model = build.build_meta(config, name, auto)
    total_bytes, (largest_bytes, largest_names) = calculate_maximum_sizes(model)
    ours, names = estimates.largest_layer(model)
    assert ours == largest_bytes and names == largest_names  # float32 meta model: 4 bytes a value
    params_ = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert (
        total_bytes - buffers == 4 * params_ == 4 * int(inventory.summarize(inventory.inventory(model, name))["total"])
    )
    assert torch.float32 == next(model.parameters()).dtype


def _published_cfg(tmp_path, text: str):
    path = tmp_path / "published.csv"
    path.write_text(text)
    data = compose.compose(conf_dir=ROOT / "conf")
    data["paths"]["published"] = str(path.relative_to(tmp_path))
    return params.from_dict(data)


HEADER = "model,stated_size,benchmark,metric,value,source\n"
ROW = 'gpt2,117M,LAMBADA,perplexity,35.13,"Radford et al. 2019, Table 3"\n'


def test_the_shipped_published_file_reads():
    cfg = params.from_dict(compose.compose(conf_dir=ROOT / "conf"))
    table = results.published(cfg)
    assert set(table["model"]) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
    assert (table["source"].str.contains("Table 3")).all() and (table["value"] > 0).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEADER.replace(",source", "") + "gpt2,117M,LAMBADA,perplexity,35.13\n", "columns must be"),
        (HEADER + ROW.replace("35.13", "lots"), "line 2: value 'lots' is not a number"),
        (HEADER + ROW.replace("35.13", "-1"), "line 2: value -1 must be above 0"),
        (HEADER + ROW.replace('"Radford et al. 2019, Table 3"', "blog"), "line 2: source 'blog' names no table"),
        (HEADER + ROW + ",117M,LAMBADA,perplexity,1,Table 3\n", "line 3: model is empty"),
    ],
)
def test_a_malformed_published_row_is_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    cfg = _published_cfg(tmp_path, text)
    with pytest.raises(PipelineError, match=message) as err:
        results.published(cfg)
    assert "\n" not in str(err.value)


def test_power_law_recovers_a_known_exponent():
    import math

    n = [1e6, 1e7, 1e8, 1e9]
    ppl = [math.exp(5.0 * x**-0.076) for x in n]  # loss = 5 · N^-0.076, exactly
    alpha, c = estimates.power_law(n, ppl)
    assert alpha == pytest.approx(0.076) and c == pytest.approx(5.0)
