"""`hmp fit`: the plan's keys, a verdict that follows the memory given, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli.fit import fit_source
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


def test_llama_3_8b_on_one_80gb_gpu():
    r = fit_source(LLAMA3, BASE)
    assert KEYS <= set(r)
    total = 8_030_261_248  # Meta-Llama-3-8B: sum(p.numel()) of LlamaForCausalLM (untied 128,256 × 4096 head)
    assert r["total_params"] == total and r["weights_bytes"] == 2 * total
    assert r["kv_cache_bytes_per_token"] == 32 * 2 * 8 * 128 * 2  # 32 layers, 8 KV heads of 128, K and V, bf16
    assert r["kv_cache_bytes"] == 8192 * r["kv_cache_bytes_per_token"]
    assert r["fits"] and r["bytes_per_gpu"] == 2 * total + r["kv_cache_bytes"]
    # the largest batch at 8k: what the memory left holds, whole sequences of 8192 tokens
    assert r["max_batch"] == (80 * 10**9 - 2 * total) // r["kv_cache_bytes"]


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
    assert full["activation_bytes"] == 2 * 8192 * 1 * 4096 * 32  # Korthikanti: 2sbh per layer, checkpointed


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
