"""Quantized checkpoints count the architecture's exact total, never the packed storage."""

from __future__ import annotations

import json
import math
import re
import sys

import pytest
import torch
import yaml

from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.model.count import count_folder
from pipeline.stages import bias, count, download
from tests.conftest import tiny_params
from tests.support.quantized import (
    CONFIGS,
    OPTIONAL,
    float_llama,
    linear_shapes,
    llama_total,
    module_tensors,
    quantized_llama,
)


def _count(workdir, monkeypatch, folder, name="q"):
    data = tiny_params({name: {"source": "path", "path": str(folder)}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", name])
    download.main()
    counted = count_folder(params.load().models[name], workdir / "data/models" / name)
    return counted.inv, counted.row


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
    from pipeline.formats import quant

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


@pytest.mark.parametrize("drop", [None, "model.layers.1.mlp.experts.down_proj_scales"])
def test_mxfp4_experts_of_gpt_oss(drop, workdir, monkeypatch):
    """gpt-oss stores its experts as mxfp4 blocks [E, rows, groups, 16] and scales [E, rows, groups]; blocks
    without their scales are refused."""
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
    if drop:
        del state[drop]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if drop:
        with pytest.raises(PipelineError, match=r"module 'model\.layers\.1\.mlp\.experts' has no 'down_proj_scales'"):
            _count(workdir, monkeypatch, folder)
        return
    inv, row = _count(workdir, monkeypatch, folder)
    assert row["total"] == expected and row["quant_method"] == "mxfp4"
    experts = inv[(inv["kind"] == "parameter") & (inv["component"] == "experts")].set_index("name")
    assert experts.loc["model.layers.0.mlp.experts.gate_up_proj", "stored_dtype"] == "U8:mxfp4"
    assert (inv.loc[inv["kind"] == "quant_metadata", "name"].str.endswith("_scales")).sum() == 4


def test_the_report_explains_each_quantized_checkpoint(workdir, monkeypatch):
    from tests.conftest import run_pipeline
    from tests.formats.test_gguf_file import write_gguf

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


# --- config fields the rules divide by: accepted exactly where the formats' own libraries accept them -------


def _ours(q: dict) -> str | None:
    """None if this project accepts the quantization_config, else its one-line refusal."""
    from pipeline.formats import quant

    try:
        quant.check_config(q)
    except PipelineError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    return None


def _theirs(make, **kwargs) -> bool:
    """Whether a library's own config class accepts these fields."""
    try:
        make(**kwargs)
    except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return False
    return True


def test_gptq_bits_and_group_size_as_transformers_accepts_them():
    """transformers' GPTQConfig is the oracle for whole numbers: 2, 3, 4 or 8 bits; group_size -1 or positive."""
    from transformers import GPTQConfig

    disagree = []
    for bits in (-1, 0, 1, 2, 3, 4, 5, 8, 16):
        for group_size in (-2, -1, 0, 1, 16, 128):
            theirs = _theirs(GPTQConfig, bits=bits, group_size=group_size)
            ours = _ours({"quant_method": "gptq", "bits": bits, "group_size": group_size})
            if (ours is None) != theirs:
                disagree.append((bits, group_size, ours))
            if ours is not None:  # the refusal names the field and the value
                assert f"bits={bits} " in ours or f"group_size={group_size} " in ours, ours
    assert disagree == []
    assert _ours({"quant_method": "awq", "w_bit": 4, "q_group_size": -1}) is None  # autoawq's older names


def test_compressed_tensors_group_sizes_as_its_quantization_args_accept_them():
    """compressed-tensors' QuantizationArgs is the oracle: for each strategy, which group sizes are valid."""
    from compressed_tensors.quantization import QuantizationArgs

    disagree = []
    for strategy in (None, "group", "tensor_group", "channel", "tensor"):
        for group_size in (None, -2, -1, 0, 1, 16):
            weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": strategy, "group_size": group_size}
            theirs = _theirs(QuantizationArgs, **weights)
            ours = _ours({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": weights}}})
            if (ours is None) != theirs:
                disagree.append((strategy, group_size, ours))
            if ours is not None:
                assert "config_groups.g.weights" in ours and "group_size" in ours, ours
    assert disagree == []


def test_fp8_block_sizes_as_transformers_accepts_them():
    """transformers' FineGrainedFP8Config is the oracle for lists of whole numbers (two, both positive)."""
    from transformers import FineGrainedFP8Config

    for block in ([128, 128], [1, 1], [0, 16], [16, 0], [-1, 16], [16], [16, 16, 16], None):
        theirs = _theirs(FineGrainedFP8Config, weight_block_size=block)
        ours = _ours({"quant_method": "fp8", "weight_block_size": block})
        assert (ours is None) == theirs, (block, ours)
        assert ours is None or f"weight_block_size={block!r} must be a list of two positive" in ours


@pytest.mark.parametrize(
    ("q", "fragment"),
    [
        ({"quant_method": "gptq", "bits": 4, "group_size": True}, "group_size=True must be a positive whole number"),
        ({"quant_method": "gptq", "bits": 4, "group_size": "128"}, "group_size='128' must be a positive whole"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 1.5}, "group_size=1.5 must be a positive whole number"),
        ({"quant_method": "gptq", "bits": True, "group_size": 16}, "bits=True is not a whole number"),
        ({"quant_method": "awq", "w_bit": "4", "q_group_size": 16}, "w_bit='4' is not a whole number"),
        ({"quant_method": "awq", "bits": 4, "q_group_size": 0}, "q_group_size=0 must be a positive whole number"),
        ({"quant_method": "fp8", "weight_block_size": 128}, "weight_block_size=128 must be a list of two"),
        ({"quant_method": "fp8", "weight_block_size": [128.0, 128]}, "weight_block_size=[128.0, 128] must be"),
        ({"quant_method": "fp8", "weight_block_size": [True, 128]}, "weight_block_size=[True, 128] must be"),
        ({"quant_method": "fp8", "weight_block_size": "128x128"}, "weight_block_size='128x128' must be"),
        ({"quant_method": "compressed-tensors", "config_groups": [1]}, "config_groups=[1] must be an object"),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 0}}}},
            "config_groups.g.weights.num_bits=0 must be a positive whole number",
        ),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": True}}}},
            "config_groups.g.weights.num_bits=True must be a positive whole number",
        ),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": [4]}}},
            "config_groups.g.weights=[4] must be an object",
        ),
    ],
)
def test_a_bool_text_or_fraction_is_no_bit_width_or_size(q, fragment):
    """Stricter than the libraries, which take true for 1 or 128.0 for 128: a config that says so is a mistake."""
    refused = _ours(q)
    assert refused is not None and fragment in refused, refused


# --- the tensors each format stores beside a packed weight ----------------------------------------------------


def _required_by_compressed_tensors(layout: str) -> set[str]:
    """compressed-tensors' own list: its compressor's compression_param_names, less the weight itself."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    q = CONFIGS[layout]
    compressor = BaseCompressor.get_value_from_registry(q["format"])
    scheme = QuantizationScheme(
        targets=["Linear"], weights=QuantizationArgs(**q["config_groups"]["group_0"]["weights"])
    )
    return set(compressor.compression_param_names(scheme)) - {"weight", "weight_packed"}


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_each_tensor_a_format_stores_is_required_unless_exporters_leave_it_out(layout, workdir, monkeypatch):
    """Drop one tensor of one module: refused naming the module and the tensor, or (where real exporters omit
    it: GPTQ's g_idx without act-order) still the exact count."""
    module = "model.layers.1.mlp.down_proj"
    suffixes = module_tensors(layout)
    if layout.startswith("compressed"):
        assert set(suffixes) == _required_by_compressed_tensors(layout)  # the fixture is the real format
    for i, suffix in enumerate(suffixes):
        folder = quantized_llama(workdir / f"ck{i}", layout, **{f"{module}.{suffix}": None})
        if suffix in OPTIONAL.get(layout, ()):
            _, row = _count(workdir, monkeypatch, folder)
            assert row["total"] == llama_total(), suffix
            continue
        with pytest.raises(PipelineError) as err:
            _count(workdir, monkeypatch, folder)
        message = str(err.value)
        assert f"but module {module!r} has no {suffix!r} beside it" in message, message
        assert "\n" not in message


def test_gptq_with_act_order_needs_its_g_idx(workdir, monkeypatch):
    """desc_act: the inputs are permuted, and only g_idx says how (it is not i // group_size)."""
    folder = quantized_llama(workdir / "ck", "gptq", **{"model.layers.0.mlp.up_proj.g_idx": None})
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["desc_act"] = True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PipelineError, match=r"module 'model\.layers\.0\.mlp\.up_proj' has no 'g_idx' beside it"):
        _count(workdir, monkeypatch, folder)


# --- a float checkpoint under a quantized model's config -------------------------------------------------------


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_a_quantization_config_on_a_float_checkpoint_is_refused(layout, workdir, monkeypatch):
    """Every tensor float32: nothing the config describes is there (it was counted as GPTQ at 32.7 bits a value)."""
    plain = float_llama(workdir / "plain", None)
    _, row = _count(workdir, monkeypatch, plain, name="plain")  # the same tensors without the config: exact
    assert row["total"] == llama_total() and row["quant_method"] == ""
    folder = float_llama(workdir / "ck", CONFIGS[layout])
    method = re.escape(CONFIGS[layout]["quant_method"])
    with pytest.raises(PipelineError, match=rf"model 'q': its quantization_config says {method}, but no tensor is "):
        _count(workdir, monkeypatch, folder)


def test_compressed_tensors_dense_format_keeps_float_weights(workdir, monkeypatch):
    """compressed-tensors' dense format stores the weights unquantized: a float checkpoint is what it describes."""
    dense = {**CONFIGS["compressed-fp8"], "format": "dense"}
    _, row = _count(workdir, monkeypatch, float_llama(workdir / "ck", dense))
    assert row["total"] == llama_total() and row["quant_method"] == "compressed-tensors"


# --- quantization metadata belongs to a module with a quantized weight ----------------------------------------


@pytest.mark.parametrize(
    ("layout", "stray"),
    [
        ("gptq", "model.layers.99.self_attn.q_proj.scales"),  # a layer the model does not have
        ("gptq", "foo.scales"),  # a module of no model
        ("awq", "lm_head.qzeros"),  # a module that exists, with a float weight
        ("fp8", "model.norm.weight_scale_inv"),
        ("compressed-pack", "model.embed_tokens.weight_scale"),
    ],
)
def test_metadata_of_a_module_without_a_quantized_weight_is_an_unexpected_key(layout, stray, workdir, monkeypatch):
    import torch

    folder = quantized_llama(workdir / "ck", layout, **{stray: torch.rand(3, 5)})
    with pytest.raises(PipelineError, match=rf"model 'q': .*unexpected keys: {re.escape(stray)}$"):
        _count(workdir, monkeypatch, folder)


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ({"shape": [32, 64], "blocksize": 0}, "quant state blocksize=0 must be a positive whole number"),
        ({"shape": [32, 64], "blocksize": True}, "quant state blocksize=True must be a positive whole number"),
        ({"shape": "32x64", "blocksize": 64}, "quant state shape='32x64' is not a list of whole numbers"),
        ({"shape": [32, -64], "blocksize": 64}, "quant state shape=[32, -64] is not a list of whole numbers"),
        ([32, 64], "not a bitsandbytes quant state (JSON with a shape)"),
    ],
)
def test_a_bitsandbytes_quant_state_that_cannot_be_used_is_one_line(state, fragment, workdir, monkeypatch):
    """The 4-bit state is JSON in the file's data: its block size divides, its shape multiplies."""
    import torch

    key = "model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"
    blob = json.dumps(state).encode()
    folder = quantized_llama(workdir / "ck", "bnb-nf4", **{key: torch.tensor(list(blob), dtype=torch.uint8)})
    with pytest.raises(PipelineError) as err:
        _count(workdir, monkeypatch, folder)
    assert f"tensor {key!r}: {fragment}" in str(err.value) and "\n" not in str(err.value)
