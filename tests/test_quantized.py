"""Quantized checkpoints count the architecture's exact total, never the packed storage."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import yaml

from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.model.count import count_model
from pipeline.stages import bias, count, download
from tests.conftest import tiny_params
from tests.quantized import CONFIGS, linear_shapes, llama_total, quantized_llama


def _count(workdir, monkeypatch, folder, name="q"):
    data = tiny_params({name: {"source": "path", "path": str(folder)}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", name])
    download.main()
    return count_model(params.load().models[name], workdir / "data/models" / name)


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_every_layout_counts_the_exact_total(layout, workdir, monkeypatch):
    folder = quantized_llama(workdir / "ck", layout)
    inv, row = _count(workdir, monkeypatch, folder)
    assert row["total"] == llama_total()  # formulas.llama_params: the architecture, not the file
    assert row["quant_method"] == CONFIGS[layout]["quant_method"]
    meta = inv[inv["kind"] == "quant_metadata"]
    params_ = inv[inv["kind"] == "parameter"]
    assert params_["numel"].sum() == llama_total()
    # the naive header sum is what the file's tensors add up to, packed words and metadata included
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:  # the safetensors package's own reader
        naive = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert row["checkpoint_tensors"] == naive
    size = (folder / "model.safetensors").stat().st_size
    assert row["bits_per_param"] == pytest.approx(size * 8 / llama_total())
    q_proj = params_.set_index("name").loc["model.layers.0.self_attn.q_proj.weight"]
    if layout not in ("compressed-fp8", "bnb-int8", "fp8"):  # packed layouts: fewer bits than the float dtype
        assert q_proj["bits_per_param"] < 8 and ":" in q_proj["stored_dtype"]
        assert not meta.empty
    else:
        assert q_proj["bits_per_param"] == 8


def test_a_packed_shape_that_disagrees_with_the_config_is_named(workdir, monkeypatch):
    bad = {"model.layers.1.mlp.down_proj.qweight": torch.zeros(64 * 4 // 32, 16, dtype=torch.int32)}  # out 16, not 32
    folder = quantized_llama(workdir / "ck", "gptq", **bad)
    with pytest.raises(PipelineError) as err:
        _count(workdir, monkeypatch, folder)
    assert "model 'q'" in str(err.value) and "model.layers.1.mlp.down_proj" in str(err.value)


def test_group_size_is_checked(workdir, monkeypatch):
    bad = {"model.layers.0.self_attn.q_proj.scales": torch.rand(4, 32).half()}  # 4 groups of 8, config says 16
    folder = quantized_llama(workdir / "ck", "gptq", **bad)
    with pytest.raises(PipelineError, match=r"model 'q': .*q_proj\.scales.*\[4, 32\].*groups of 16"):
        _count(workdir, monkeypatch, folder)


def test_a_made_up_layout_is_one_line(workdir, monkeypatch):
    renamed = {}
    for module, (out, inp) in linear_shapes().items():  # the packed words under a name no rule knows
        renamed[f"{module}.qweight"] = None
        renamed[f"{module}.qweight2"] = torch.zeros(inp * 4 // 32, out, dtype=torch.int32)
    folder = quantized_llama(workdir / "ck", "gptq", **renamed)
    with pytest.raises(PipelineError, match=r"model 'q': .*unexpected keys: model\.layers\.0\.\S*qweight2"):
        _count(workdir, monkeypatch, folder)


def test_an_unknown_quant_method_is_one_line(workdir, monkeypatch):
    folder = quantized_llama(workdir / "ck", "gptq")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "hqq2"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PipelineError, match=r"model 'q': quant_method 'hqq2' has no layout rule"):
        _count(workdir, monkeypatch, folder)


def test_quantization_config_nested_under_text_config():
    from pipeline import quant

    q = CONFIGS["awq"]
    assert quant.quantization_config({"text_config": {"quantization_config": q}}) == q  # multimodal configs
    assert quant.quantization_config({"quantization_config": q}) == q
    assert quant.quantization_config({"model_type": "llama"}) is None
    with pytest.raises(PipelineError, match="quantization_config has no quant_method"):
        quant.quantization_config({"quantization_config": {"bits": 4}})


def test_the_value_pass_skips_packed_codes_with_a_reason(workdir, monkeypatch):
    folder = quantized_llama(workdir / "ck", "gptq")
    _count(workdir, monkeypatch, folder)
    count.main()
    bias.main()
    import pandas as pd

    stats = pd.read_csv(workdir / "results/distributions.csv")
    q = stats[stats["model"] == "q"]
    skipped = q[q["by"] == "skipped"]
    quantized = sum(out * inp for out, inp in linear_shapes().values())
    assert skipped["group"].tolist() == ["I32:gptq"] and int(skipped["count"].iloc[0]) == quantized
    assert int(q.loc[q["by"] == "all", "count"].iloc[0]) == llama_total() - quantized  # embeddings, head, norms read


def test_mxfp4_experts_of_gpt_oss(workdir, monkeypatch):
    """gpt-oss stores its experts as mxfp4 blocks [E, rows, groups, 16] and scales [E, rows, groups]."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = {
        "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
        "num_experts_per_tok": 2, "layer_types": ["sliding_attention", "full_attention"],
        "eos_token_id": 1, "pad_token_id": 0, "max_position_embeddings": 16,
    }  # fmt: skip
    config = AutoConfig.for_model("gpt_oss", **arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = sum(p.numel() for p in model.parameters())
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, cols, rows = p.shape  # the parameter is [E, in, out]; the file stores [E, out, in/32, 16]
            state[f"{name}_blocks"] = torch.randint(0, 256, (e, rows, cols // 32, 16), dtype=torch.uint8)
            state[f"{name}_scales"] = torch.randint(100, 140, (e, rows, cols // 32), dtype=torch.uint8)
        else:
            state[name] = torch.randn(*p.shape)
    folder = workdir / "ck"
    folder.mkdir()
    config_json = {**config.to_dict(), "quantization_config": {"quant_method": "mxfp4"}}
    (folder / "config.json").write_text(json.dumps(config_json))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    inv, row = _count(workdir, monkeypatch, folder)
    assert row["total"] == expected and row["quant_method"] == "mxfp4"
    experts = inv[(inv["kind"] == "parameter") & (inv["component"] == "experts")].set_index("name")
    assert experts.loc["model.layers.0.mlp.experts.gate_up_proj", "stored_dtype"] == "U8:mxfp4"
    assert (inv.loc[inv["kind"] == "quant_metadata", "name"].str.endswith("_scales")).sum() == 4


def test_the_report_explains_each_quantized_checkpoint(workdir, monkeypatch):
    from tests.conftest import run_pipeline
    from tests.test_gguf import write_gguf

    models = {
        "q-gptq": {"source": "path", "path": str(quantized_llama(workdir / "gptq", "gptq"))},
        "q-bnb": {"source": "path", "path": str(quantized_llama(workdir / "bnb", "bnb-nf4"))},
        "q-gguf": {"source": "path", "path": str(write_gguf(workdir / "gguf" / "tiny.gguf", "Q4_0"))},
    }
    text = (run_pipeline(workdir, monkeypatch, models) / "report.md").read_text()
    assert "## Quantized checkpoints" in text and "figures/quantized.png" in text
    assert (workdir / "reports/figures/quantized.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one sentence per model, each with why the naive sum is (or is not) the count
    n = sum(out * inp for out, inp in linear_shapes().values())  # every quantized Linear's weight
    assert f"`q-gptq` (gptq): {n:,} weights are packed into {n // 8:,} I32 values (8 weights each)" in text  # 4 bits
    assert f"`q-bnb` (bitsandbytes): {n:,} weights are packed into {n // 2:,} U8 values (2 weights each)" in text
    assert "`q-gguf` (GGUF): its header gives each tensor's logical shape" in text


@pytest.mark.parametrize("layout", ["fp8", "compressed-fp8"])
def test_fp8_values_are_dequantized_with_their_scales(layout, workdir, monkeypatch):
    """fp8 weights are read as fp8 × scale (torch's float8 types): every parameter gets a value, none skipped."""
    import pandas as pd
    from safetensors import safe_open

    from pipeline.stages import ties

    folder = quantized_llama(workdir / "ck", layout)
    _count(workdir, monkeypatch, folder)
    for stage in (count, ties, bias):
        stage.main()
    stats = pd.read_csv(workdir / "results/distributions.csv")
    assert (stats["by"] != "skipped").all()
    assert int(stats.loc[stats["by"] == "all", "count"].iloc[0]) == llama_total()
    # an oracle for one weight: dequantize it whole with torch and compare the mean
    with safe_open(folder / "model.safetensors", "pt") as f:
        w = f.get_tensor("model.layers.0.mlp.down_proj.weight").float()
        s = f.get_tensor(
            "model.layers.0.mlp.down_proj." + ("weight_scale_inv" if layout == "fp8" else "weight_scale")
        ).float()
    if layout == "fp8":  # blocks of 16 × 16 each times one scale
        full = s.repeat_interleave(16, 0).repeat_interleave(16, 1)[: w.shape[0], : w.shape[1]]
    else:  # one scale per output channel
        full = s.expand_as(w)
    from pipeline import formats
    from pipeline.values import reader

    loaded = formats.load(workdir / "data/models/q", "q")
    reader = reader.Reader(
        workdir / "data/models/q", loaded.regrouped.entries + loaded.regrouped.metadata, 64, loaded.regrouped.scales
    )
    got = torch.cat(list(reader.chunks("model.layers.0.mlp.down_proj.weight")))
    assert torch.allclose(got, (w * full).reshape(-1))
