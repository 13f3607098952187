"""Memory plans by hand: each cache kind, LoRA adapters, activations, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.cost import cache, plan
from pipeline.model import build
from pipeline.model.count import count_folder
from tests.conftest import compose_model


def _built(name: str, tmp_path: Path):
    entry = compose_model(name)
    spec = params.model_spec(name, entry)
    out = tmp_path / name
    out.mkdir()
    (out / "provenance.json").write_text(json.dumps(sources.materialise(spec, out, hashes=False)))
    counted = count_folder(spec, out)
    model, config = counted.model, counted.config
    layers = cache.layers(model, config, build.is_causal_class(type(model), config))
    return model, config, layers


def test_dense_grouped_query_attention(tmp_path):
    _, _, layers = _built("tinyllama-1_1b", tmp_path)
    c = plan.kv_cache(layers, context=2048, batch=4, kv_bytes=2, source=2048)
    # TinyLlama: 22 layers, 4 KV heads of 64 (32 query heads share them), K and V, bfloat16
    per_token = 22 * 2 * 4 * 64 * 2
    assert c.per_token == per_token == 22_528
    assert c.at == c.full_length == 4 * 2048 * per_token
    assert c.state == 0


def test_sliding_windows_hold_at_most_their_window(tmp_path):
    _, config, layers = _built("gpt-oss-20b", tmp_path)
    c = plan.kv_cache(layers, context=8192, batch=32, kv_bytes=2, source=8192)
    # gpt-oss-20b: 24 layers alternating 128-token sliding windows and full attention, 8 KV heads of 64
    per_layer = 2 * 8 * 64 * 2
    assert c.at == 32 * (12 * per_layer * 128 + 12 * per_layer * 8192)  # what the windows need
    assert c.full_length == 32 * 24 * per_layer * 8192  # what an engine giving every layer full length allocates
    assert c.full_length == 12 * 2**30  # vLLM's 12.00 GiB for gpt-oss-20b at 8k × 32 (the issue)


def test_latent_attention_caches_its_latent(tmp_path):
    _, _, layers = _built("deepseek-v3", tmp_path)
    c = plan.kv_cache(layers, context=1000, batch=1, kv_bytes=2, source=1000)
    assert c.per_token == 61 * (512 + 64) * 2  # kv_lora_rank + qk_rope_head_dim per layer


def test_state_space_and_hybrid(tmp_path):
    _, _, mamba = _built("mamba-130m", tmp_path)
    c = plan.kv_cache(mamba, context=100_000, batch=2, kv_bytes=2, source=0)
    assert c.per_token == 0 and c.at == 0
    # per layer, whatever the context: the conv state of kernel-wide (4) inputs per channel in the cache dtype, as
    # transformers' LinearAttentionLayer holds it, and the E × N recurrent state in float32, as its scan keeps it
    assert c.state == 24 * (1536 * 4 * 2 + 1536 * 16 * 4)
    _, _, jamba = _built("jamba-v0_1", tmp_path)
    j = plan.kv_cache(jamba, context=4096, batch=1, kv_bytes=2, source=0)
    assert j.per_token == 4 * 2 * 8 * 128 * 2  # only its 4 attention layers cache


def test_encoder_decoder_caches_cross_attention_once_per_input(tmp_path):
    _, _, layers = _built("t5-small", tmp_path)
    c = plan.kv_cache(layers, context=100, batch=1, kv_bytes=2, source=512)
    assert c.per_token == 6 * 2 * 512 * 2
    assert c.cross == 6 * 2 * 512 * 2 * 512  # six decoder layers, K and V of the 512 encoder outputs
    assert c.at == 100 * c.per_token + c.cross


def test_lora_counts_rank_times_in_plus_out_on_the_adapted_layers(tmp_path):
    model, _, _ = _built("tinyllama-1_1b", tmp_path)
    params_, adapted = plan.lora_params(model, ["q_proj", "v_proj"], 8)
    # q_proj 2048 -> 2048, v_proj 2048 -> 256 (4 KV heads of 64), 22 layers, rank 8 (Hu et al. 2021)
    assert adapted == 44 and params_ == 22 * 8 * ((2048 + 2048) + (2048 + 256))
    with pytest.raises(PipelineError, match="--lora-targets: qkv names no linear layer of LlamaForCausalLM"):
        plan.lora_params(model, ["q_proj", "qkv"], 8)


def test_activations_follow_korthikanti():
    # Korthikanti et al. 2022, eq. 1: sbh(34 + 5as/h) per layer; GPT-3 175B's figure at s 2048, b 1
    s, b, h, a, layers = 2048, 1, 12288, 96, 96
    assert plan.activation_bytes(s, b, h, a, layers, False) == (34 * s * b * h + 5 * a * s * s * b) * layers
    assert plan.activation_bytes(s, b, h, a, layers, True) == 2 * s * b * h * layers


@pytest.mark.parametrize(
    ("text", "expected"), [("80GB", 80 * 10**9), ("24GiB", 24 * 2**30), ("1.5 TB", 15 * 10**11), ("1024B", 1024)]
)
def test_memory_sizes_parse(text, expected):
    assert plan.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["80 gigs", "", "-1GB", "0GB"])
def test_a_memory_size_that_does_not_parse_is_one_line(text):
    with pytest.raises(PipelineError, match="--gpu-memory"):
        plan.parse_memory(text)


def test_a_tensor_parallel_degree_must_divide_the_heads(tmp_path):
    _, config, _ = _built("tinyllama-1_1b", tmp_path)
    plan.tensor_parallel_check(config, 4, "t")
    with pytest.raises(PipelineError, match="--tp 8 does not divide its 4 key/value heads"):
        plan.tensor_parallel_check(config, 8, "t")


def _saved_bytes(layers: int, s: int, b: int, h: int, a: int) -> int:
    """Bytes autograd saves for backward in a forward pass of a bf16 GPT-2 with dropout, on CPU (parameters out)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=layers, n_embd=h, n_head=a, n_positions=s, vocab_size=128, activation_function="gelu",
        attn_implementation="eager", bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config).to(torch.bfloat16).train()
    weights = {p.data_ptr() for p in model.parameters()}
    seen, total = set(), [0]

    def pack(t):
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.data_ptr() not in weights and key not in seen:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randint(0, 128, (b, s)))
    return total[0]


def test_activations_match_what_autograd_saves():
    # one layer's share: a 2-layer model minus a 1-layer one (embeddings and head cancel)
    s, b, h, a = 64, 2, 64, 4
    measured = _saved_bytes(2, s, b, h, a) - _saved_bytes(1, s, b, h, a)
    # PyTorch keeps dropout masks in bf16 (2 bytes), where the paper counts 1; LayerNorm also keeps its mean and
    # 1/std, s·b values each, for its two norms
    assert measured == plan.activation_bytes(s, b, h, a, 1, False, mask_bytes=2) + 2 * 2 * s * b * 2


@pytest.mark.parametrize(
    ("targets", "rank"), [(["q_proj", "v_proj"], 8), (["q_proj", "k_proj", "o_proj", "down_proj"], 64)]
)
def test_lora_count_is_pefts_own_on_the_meta_device(targets, rank, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    model, _, _ = _built("tinyllama-1_1b", tmp_path)
    ours, _ = plan.lora_params(model, targets, rank)
    with torch.device("meta"):
        peft_model = get_peft_model(model, LoraConfig(r=rank, target_modules=targets))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert ours == trainable


def test_layers_that_share_an_earlier_cache_add_none():
    import torch
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    config = Gemma3nTextConfig(num_hidden_layers=10, num_kv_shared_layers=4, layer_types=None)
    with torch.device("meta"):
        model = Gemma3nForCausalLM(config)
    layers = cache.layers(model, model.config, True)
    width = 2 * config.num_key_value_heads * config.head_dim
    assert [layer.kv_per_token for layer in layers] == [width] * 6 + [0] * 4  # the last 4 reuse earlier caches
