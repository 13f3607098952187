"""`hmp fit`: the plan's keys, a verdict that follows the memory given, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.answers import fit
from pipeline.core.errors import PipelineError

CONFIGS = Path(__file__).parents[1] / "support" / "published_configs"
LLAMA3 = str(CONFIGS / "meta-llama--Meta-Llama-3-8B.json")
KEYS = {
    "weights_bytes", "weights_bytes_per_gpu", "kv_cache_bytes_per_token", "kv_cache_bytes",
    "kv_cache_bytes_full_length", "state_bytes_per_sequence", "lora_params", "activation_bytes",
    "max_context", "max_batch", "fits",
}  # fmt: skip
BASE = {
    "context": 8192, "batch": 1, "dtype": "bfloat16", "kv_dtype": "bfloat16", "gpu_memory": "80GB", "gpus": 1,
    "tp": 1, "train": None, "lora_rank": 16, "lora_targets": ["q_proj", "v_proj"], "checkpointing": False,
}  # fmt: skip


def fit_source(source: str, options: dict) -> dict:
    """The plan as hmp fit --json prints it, for these options."""
    return fit.plan(source, fit.FitOptions.of(options)).as_json()


def test_llama_3_8b_on_one_80gb_gpu():
    r = fit_source(LLAMA3, BASE)
    assert KEYS <= set(r)
    total = 8_030_261_248  # Meta-Llama-3-8B: sum(p.numel()) of LlamaForCausalLM (untied 128,256 × 4096 head)
    assert r["total_params"] == total and r["weights_bytes"] == 2 * total
    assert r["kv_cache_bytes_per_token"] == 32 * 2 * 8 * 128 * 2  # 32 layers, 8 KV heads of 128, K and V, bf16
    assert r["kv_cache_bytes"] == 8192 * r["kv_cache_bytes_per_token"]
    # the lines add up: weights, cache and the prefill's activations at its peak, then the runtime's overhead
    assert r["peak_bytes"] == 2 * total + r["kv_cache_bytes"] + r["activation_bytes"]
    assert r["fits"] and r["bytes_per_gpu"] == r["peak_bytes"] + r["overhead_bytes"]
    # the largest batch at 8k: what the memory left holds, whole sequences of 8192 tokens with their activations
    left = 80 * 10**9 - 2 * total - r["overhead_bytes"]
    assert r["max_batch"] == left // (r["kv_cache_bytes"] + r["activation_bytes"])


def test_the_verdict_follows_the_memory_and_tensor_parallelism_splits_it():
    small = fit_source(LLAMA3, {**BASE, "gpu_memory": "16GB"})
    assert not small["fits"]
    split = fit_source(LLAMA3, {**BASE, "gpu_memory": "16GB", "gpus": 2, "tp": 2})
    assert split["fits"] and split["weights_bytes_per_gpu"] < small["weights_bytes"] / 2 + 10**6


def test_lora_and_full_fine_tuning():
    lora = fit_source(LLAMA3, {**BASE, "train": "lora", "lora_rank": 8})
    # q_proj 4096 -> 4096 and v_proj 4096 -> 1024 in 32 layers, rank 8 (Hu et al. 2021)
    assert lora["lora_params"] == 32 * 8 * ((4096 + 4096) + (4096 + 1024))
    full = fit_source(LLAMA3, {**BASE, "train": "full", "checkpointing": True})
    assert full["optimizer_and_gradient_bytes"] == 14 * full["total_params"]  # 16 B/param minus the bf16 weights
    # measured on fake tensors (tests/cost/test_training.py holds such steps to MemTracker's peak): at least the
    # checkpointed layers' inputs (Korthikanti et al. 2022: 2sbh per layer, bf16) and the loss's float32 logits
    assert full["activations_from"].startswith("measured")
    assert full["activation_bytes"] >= 2 * 8192 * 1 * 4096 * 32 + 8192 * 128256 * 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"context": 0}, "--context 0: a context is at least 1 token"),
        ({"context": 10**7}, "is beyond the 8,192 positions"),
        ({"tp": 3, "gpus": 3}, "--tp 3 does not divide its 32 attention heads"),
        ({"train": "lora", "lora_targets": ["nope"]}, "--lora-targets: nope names no linear layer"),
        ({"gpu_memory": "lots"}, "--gpu-memory 'lots': not a memory size"),
    ],
)
def test_bad_input_is_one_line(change, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")) as err:
        fit_source(LLAMA3, {**BASE, **change})
    assert "\n" not in str(err.value)


def test_the_json_is_plain_data():
    json.dumps(fit_source(LLAMA3, BASE))


def test_expert_parallelism_splits_the_routed_experts(tmp_path):
    mixtral = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_hidden_layers": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(mixtral))
    one = fit_source(str(path), {**BASE, "context": 1024})
    split = fit_source(str(path), {**BASE, "context": 1024, "gpus": 8, "ep": 8})
    # 8 experts of 3 × 4096 × 14336 per layer, bf16: each of 8 ranks holds one expert per layer
    experts = 2 * 8 * 3 * 4096 * 14336 * 2
    assert one["weights_bytes_per_gpu"] - split["weights_bytes_per_gpu"] == experts - experts // 8
    with pytest.raises(PipelineError, match="--ep 3 must divide its routed experts"):
        fit_source(str(path), {**BASE, "gpus": 3, "ep": 3})


# --- issue 27: nonsense refused, each model's own limit, lines that add up ---------------------------------------

MODELS = Path(__file__).parents[2] / "conf" / "model"


def _config_of(name: str, tmp_path: Path, **change) -> str:
    """conf/model/NAME.yaml's architecture block as a config.json (the released file's fields), changed."""
    import yaml

    arch = yaml.safe_load((MODELS / f"{name}.yaml").read_text())["architecture"]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**arch, **change}))
    return str(path)


def _tiny(tmp_path: Path, **config) -> str:
    path = tmp_path / f"{config['model_type']}.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ep": 0}, "--ep 0: an expert-parallel degree is at least 1"),
        ({"ep": -2}, "--ep -2: an expert-parallel degree is at least 1"),
        ({"train": "lora", "lora_targets": []}, "--lora-targets names no layer"),
        ({"gpu_memory": "24"}, "--gpu-memory '24': a number without a unit; write 24GB"),
        ({"gpu_memory": "0GB"}, "a memory size must be more than 0 bytes"),
    ],
)
def test_more_bad_input_is_one_line(change, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")) as err:
        fit_source(LLAMA3, {**BASE, **change})
    assert "\n" not in str(err.value)


def test_a_negative_window_is_refused_not_planned_as_negative_bytes(tmp_path):
    bad = _tiny(tmp_path, model_type="mistral", num_hidden_layers=2, sliding_window=-5)
    with pytest.raises(PipelineError, match=r"sliding_window=-5: a window of attention is a whole number of tokens"):
        fit_source(bad, {**BASE, "context": 128})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24GB", 24 * 10**9), ("24G", 24 * 10**9), ("24gb", 24 * 10**9), ("24GiB", 24 * 2**30), ("24Gi", 24 * 2**30),
     ("1.5TB", 15 * 10**11), ("512MiB", 512 * 2**20), ("1000000B", 10**6)],
)  # fmt: skip
def test_memory_sizes_read_as_people_write_them(text, expected):
    from pipeline.cost import plan

    assert plan.parse_memory(text) == expected


def test_the_default_context_is_the_models_own(tmp_path):
    gpt2 = str(CONFIGS / "openai-community--gpt2.json")
    r = fit_source(gpt2, {**BASE, "context": None})
    assert r["context"] == r["max_positions"] == 1024  # GPT-2's 1,024-row position table (wpe)


def test_each_model_is_limited_by_what_it_has(tmp_path):
    # Whisper's decoder holds a 448-row position table (max_target_positions), whatever its encoder takes
    whisper = _tiny(
        tmp_path, model_type="whisper", architectures=["WhisperForConditionalGeneration"], d_model=64,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_target_positions=448, max_source_positions=1500,
    )  # fmt: skip
    assert fit_source(whisper, {**BASE, "context": None})["context"] == 448
    with pytest.raises(PipelineError, match=r"--context 8,192 is beyond the 448 positions"):
        fit_source(whisper, BASE)
    # T5's relative position buckets have no table: its published n_positions (512) is no limit
    t5 = str(CONFIGS / "google-t5--t5-small.json")
    r = fit_source(t5, {**BASE, "context": 2048})
    assert r["context"] == 2048 and r["max_positions"] is None


def test_every_printed_line_is_what_the_total_adds(tmp_path):
    from pipeline.report.fitplan import fit_text

    mamba = _config_of("mamba-130m", tmp_path)
    r = fit_source(mamba, {**BASE, "context": None, "batch": 4})
    # 24 layers: conv (1,536 channels × 4 inputs, the kernel's width, bf16) and the 1,536 × 16 state in float32
    # (transformers' cache holds both so: tests/cost/test_engine_types.py), for each of 4 sequences
    state = 24 * (1536 * 4 * 2 + 1536 * 16 * 4)
    assert r["state_bytes_per_sequence"] == state and r["kv_cache_bytes"] == 0
    assert r["peak_bytes"] == r["weights_bytes"] + 4 * state + r["activation_bytes"]
    text = fit_text(r)
    assert "× 4 sequence(s)" in text and "split by heads" not in text  # tensor parallel 1: nothing is split
    # latent attention's formula says what it caches
    mla = _tiny(
        tmp_path, model_type="deepseek_v3", num_hidden_layers=2, first_k_dense_replace=2, hidden_size=64,
        intermediate_size=64, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=32,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, vocab_size=100,
    )  # fmt: skip
    r = fit_source(mla, {**BASE, "context": 128})
    assert r["kv_cache_bytes_per_token"] == 2 * (16 + 8) * 2  # 2 layers of latent 16 + rope key 8, bf16
    assert "latent + rotary key" in fit_text(r) and "2 × KV heads" not in fit_text(r)


def test_an_moe_block_is_not_a_sequence_mixer(tmp_path):
    oss = _tiny(
        tmp_path, model_type="gpt_oss", num_hidden_layers=2, num_local_experts=4, hidden_size=64,
        intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100,
        sliding_window=32, layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    r = fit_source(oss, {**BASE, "context": 128})
    assert r["state_bytes_per_sequence"] == 0  # GptOssMLP routes experts; it keeps no state
    # K and V of 2 KV heads of 16 per layer, bf16: the sliding layer holds 32 tokens, the full one 128
    assert r["kv_cache_bytes"] == 2 * 2 * 16 * 2 * (32 + 128)


def test_chunked_attention_layers_keep_at_most_their_chunk(tmp_path):
    llama4 = _tiny(
        tmp_path, model_type="llama4_text", architectures=["Llama4ForCausalLM"], num_hidden_layers=4,
        hidden_size=64, intermediate_size=64, intermediate_size_mlp=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=100, num_local_experts=2, attention_chunk_size=32,
        no_rope_layers=[1, 1, 1, 0],
    )  # fmt: skip
    r = fit_source(llama4, {**BASE, "context": 128})
    per_layer = 2 * 2 * 16 * 2  # K and V of 2 KV heads of 16, bf16
    # transformers' layer_types: chunked_attention where RoPE is used (no_rope_layers 1), full attention elsewhere
    assert r["kv_cache_bytes"] == per_layer * (3 * 32 + 128)


def test_lora_on_gpt2s_conv1d_layers_is_pefts_count():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, GPT2LMHeadModel

    r = fit_source(str(CONFIGS / "openai-community--gpt2.json"),
                   {**BASE, "context": 1024, "train": "lora", "lora_targets": ["c_attn", "c_fc"]})  # fmt: skip
    # rank 16 on c_attn (768 -> 2,304) and c_fc (768 -> 3,072) in 12 layers (Hu et al. 2021: r·(in + out))
    assert r["lora_params"] == 12 * 16 * ((768 + 2304) + (768 + 3072)) and r["lora_layers"] == 24
    with torch.device("meta"):
        model = GPT2LMHeadModel(AutoConfig.from_pretrained(str(CONFIGS / "openai-community--gpt2.json")))
        peft_model = get_peft_model(model, LoraConfig(r=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True))
    assert r["lora_params"] == peft_model.get_nb_trainable_parameters()[0]
