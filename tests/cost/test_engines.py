"""hmp fit --engine vllm and --engine llama.cpp: each engine's allocation rules held to hand derivations from the
engines' source (cited in pipeline/cost/engines.py), on published configs; the verdict, the budget and the largest
batch agree with each other; bad options are one line each."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.answers import fit
from pipeline.core.errors import PipelineError
from pipeline.report.fitplan import fit_text

SUPPORT = Path(__file__).parents[1] / "support"
LLAMA3 = str(SUPPORT / "published_configs" / "meta-llama--Meta-Llama-3-8B.json")
GEMMA3 = str(SUPPORT / "config_corpus" / "google--gemma-3-1b-it.json")
GPT_OSS_20B = str(SUPPORT / "config_corpus" / "openai--gpt-oss-20b.json")
GPT_OSS_120B = str(SUPPORT / "config_corpus" / "openai--gpt-oss-120b.json")
LLAMA3_PER_TOKEN = 32 * 2 * 8 * 128  # values per token: 32 layers, K and V, 8 KV heads of 128 (its config.json)
GB80 = 80 * 10**9


def plan(source: str, **options) -> dict:
    return fit.plan(source, fit.FitOptions.of(options)).as_json()


def test_vllm_pages_budget_and_largest_batch_agree_on_llama_3_8b():
    r = plan(LLAMA3, engine="vllm", context=8180, batch=3)
    d = r["engine_detail"]
    # vllm serve on a GPU of 80 GB (74.5 GiB >= 70 GiB): 8,192 batched tokens, 1,024 sequences
    assert (d["max_num_batched_tokens"], d["max_num_seqs"], d["block_size"]) == (8192, 1024, 16)
    # FullAttentionSpec: ceil(8180 / 16) = 512 pages of 16 tokens per sequence, bf16 (the model's dtype)
    per_sequence = math.ceil(8180 / 16) * 16 * LLAMA3_PER_TOKEN * 2
    assert d["kv_cache_bytes_per_sequence"] == per_sequence and r["kv_cache_bytes"] == 3 * per_sequence
    # the sampler: 1,024 rows of 128,256 logits in bf16, a float32 copy and float32 probabilities
    assert d["sampler_bytes"] == 1024 * 128_256 * (2 + 4 + 4)
    budget = int(GB80 * 0.9)
    fixed = r["bytes_per_gpu"] - r["kv_cache_bytes"]
    parts = d["profile_activation_bytes"] + d["cuda_graph_bytes"] + d["sampler_bytes"] + r["overhead_bytes"]
    assert abs(fixed - (2 * r["total_params"] + parts)) <= 2  # each line rounded to whole bytes
    assert d["kv_cache_budget_bytes"] == budget - fixed
    assert d["max_concurrency"] == (budget - fixed) // per_sequence == r["max_batch"]
    assert r["fits"] == (r["bytes_per_gpu"] <= budget)
    # the profile run does not follow the context or the batch (chunked prefill): the same at 1 × 4,096
    other = plan(LLAMA3, engine="vllm", context=4096)["engine_detail"]
    assert other["profile_activation_bytes"] == d["profile_activation_bytes"]
    text = fit_text(r)
    assert "KV cache (pages)" in text and "vLLM budget" in text and "higher of the two steps" not in text


def test_vllm_defaults_on_a_smaller_gpu_and_options_given():
    d = plan(LLAMA3, engine="vllm", context=4096, gpu_memory="48GB")["engine_detail"]
    assert (d["max_num_batched_tokens"], d["max_num_seqs"]) == (2048, 256)  # below 70 GiB: vllm serve's smaller
    given = plan(LLAMA3, engine="vllm", context=4096, max_num_batched_tokens=4096, max_num_seqs=8,
                 gpu_memory_utilization=0.5)  # fmt: skip
    g = given["engine_detail"]
    assert (g["max_num_batched_tokens"], g["max_num_seqs"]) == (4096, 8)
    assert g["sampler_bytes"] == 8 * 128_256 * 10
    assert g["kv_cache_budget_bytes"] + given["bytes_per_gpu"] - given["kv_cache_bytes"] == int(GB80 * 0.5)


def test_vllm_sliding_window_pages_on_gemma_3():
    r = plan(GEMMA3, engine="vllm", context=32768)
    # Gemma3Config: layer i slides unless (i + 1) % 6 == 0 -> 22 sliding layers of 512, 4 full; 1 KV head of 256
    page = 16 * 2 * 1 * 256 * 2
    full = 4 * math.ceil(32768 / 16) * page
    sliding = 22 * (math.ceil(min(512 - 1 + 8192, 32768) / 16) + 1) * page  # SlidingWindowSpec
    assert r["kv_cache_bytes"] == full + sliding


def test_vllm_attention_is_a_fused_kernel_so_the_profile_grows_linearly():
    """gpt-oss's sinks keep transformers on eager attention (T × T scores); vLLM runs FlashAttention with sinks."""
    half = plan(GPT_OSS_20B, engine="vllm", context=4096, max_num_batched_tokens=4096)["engine_detail"]
    whole = plan(GPT_OSS_20B, engine="vllm", context=4096, max_num_batched_tokens=8192)["engine_detail"]
    assert 1.9 < whole["profile_activation_bytes"] / half["profile_activation_bytes"] < 2.1


def test_gpt_oss_120b_fits_one_80gb_gpu_at_8k_under_vllm():
    r = plan(GPT_OSS_120B, engine="vllm", context=8192)
    assert r["weights_from"] == "quantization_config" and r["weights_bytes"] == 65_248_815_744  # mxfp4 experts
    assert r["fits"] and r["max_batch"] >= 1


def test_llama_cpp_cells_cache_types_and_offload_on_llama_3_8b():
    r = plan(LLAMA3, engine="llama.cpp", context=1000, batch=3)
    d = r["engine_detail"]
    # llama-context.cpp: n_ctx = GGML_PAD(3 × 1000, 256) = 3,072; per slot 3,072 / 3 = 1,024, padded: 1,024
    assert (d["n_ctx"], d["cells_per_slot"], d["slots"]) == (3072, 1024, 3)
    assert r["kv_cache_bytes"] == 3 * 1024 * LLAMA3_PER_TOKEN * 2  # f16
    q8 = plan(LLAMA3, engine="llama.cpp", context=1000, batch=3, cache_type="q8_0")
    assert q8["kv_cache_bytes"] == 3 * 1024 * LLAMA3_PER_TOKEN * 34 // 32  # ggml q8_0: 34 bytes per 32 values
    # no GGUF given: as convert_hf_to_gguf.py writes it by default, matrices in f16, the 32 × 2 + 1 norms in f32
    norms = (32 * 2 + 1) * 4096
    total, embedding = 2 * (r["total_params"] - norms) + 4 * norms, 2 * 128_256 * 4096
    assert r["weights_from"] == "convert_hf_to_gguf" and r["weights_bytes"] == total
    # every layer offloaded: the input embedding stays on the host, all else on the GPU (the head included)
    assert d["weights_on_gpus_bytes"] == total - embedding and d["host_bytes"] == embedding
    layer = 2 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 4 * 2 * 4096  # attention, MLP, two norms
    none = plan(LLAMA3, engine="llama.cpp", context=1000, n_gpu_layers=0)["engine_detail"]
    assert none["weights_on_gpus_bytes"] == 0 and none["kv_cache_on_gpus_bytes"] == 0
    ten = plan(LLAMA3, engine="llama.cpp", context=1000, n_gpu_layers=10)["engine_detail"]
    assert ten["weights_on_gpus_bytes"] == 10 * layer  # -ngl 10 of 32: the head stays on the host
    assert ten["kv_cache_on_gpus_bytes"] == 10 * 1024 * LLAMA3_PER_TOKEN // 32 * 2
    assert ten["host_bytes"] == total - 10 * layer + 22 * 1024 * LLAMA3_PER_TOKEN // 32 * 2
    assert ten["compute_buffer_bytes"] == 512 * 4 * (128_256 + 2 * 4096)  # float32 logits beside 2 hidden states


def test_llama_cpp_sliding_layers_keep_window_plus_ubatch_cells():
    r = plan(GEMMA3, engine="llama.cpp", context=32768)
    per_layer = 2 * 1 * 256 * 2  # K and V, 1 KV head of 256, f16
    swa = 1024  # GGML_PAD(min(32,768, 512 + 512), 256)
    assert r["kv_cache_bytes"] == 4 * 32768 * per_layer + 22 * swa * per_layer


def test_llama_cpp_on_a_tied_gguf_loads_the_embedding_twice(tmp_path):
    from tests.formats.test_gguf_file import write_gguf
    from tests.support.quantized import LLAMA

    path = write_gguf(tmp_path / "tied.gguf", "Q8_0", drop="output.weight")
    r = plan(str(path), engine="llama.cpp", context=16)
    d = r["engine_detail"]
    assert r["weights_from"] == "checkpoint"
    token_embd = LLAMA["vocab_size"] * LLAMA["hidden_size"] * 34 / 32  # Q8_0, as stored
    # the input embedding on the host, the same tensor again on the GPU as the output layer
    assert d["host_bytes"] == pytest.approx(token_embd, abs=1)
    assert d["weights_on_gpus_bytes"] + d["host_bytes"] == pytest.approx(r["weights_bytes"] + token_embd, abs=1)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"engine": "tgi"}, "--engine 'tgi': one of transformers, vllm, llama.cpp"),
        ({"engine": "vllm", "train": "lora"}, "--engine vllm serves a model"),
        ({"engine": "llama.cpp", "tp": 2, "gpus": 2}, "--engine llama.cpp splits the layers"),
        ({"engine": "llama.cpp", "cache_type": "q3_k"}, "--cache-type 'q3_k': one of llama.cpp's"),
        ({"engine": "llama.cpp", "n_gpu_layers": -1}, "--n-gpu-layers -1"),
        ({"engine": "vllm", "gpu_memory_utilization": 1.5}, "--gpu-memory-utilization 1.5"),
        ({"engine": "vllm", "gpu_memory_utilization": 0}, "--gpu-memory-utilization 0"),
        ({"engine": "vllm", "max_num_batched_tokens": -4}, "--max-num-batched-tokens -4"),
    ],
)
def test_bad_engine_options_are_one_line(options, message):
    with pytest.raises(PipelineError) as e:
        plan(LLAMA3, context=1024, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_sweeps_curve_is_each_engines_plan_at_each_context():
    """results/fit.csv: per engine, one GPU's bytes at 128, 256, ... and the model's own context, equal to hmp fit's
    plan there (measured once per engine at the longest context: the plan at that context measures the same)."""
    from pipeline.answers import needs

    gpt2 = str(SUPPORT / "published_configs" / "openai-community--gpt2.json")
    m = fit._counted(gpt2, fit.FitOptions())
    curve = needs.memory_curve("gpt2", m.inv, m.row, m.model, m.config, {"batch": 2, "gpu_memory": "24GB"})
    assert list(curve.columns) == needs.CURVE_COLUMNS
    assert sorted(set(curve["engine"])) == ["llama.cpp", "transformers", "vllm"]
    for engine, part in curve.groupby("engine"):
        assert list(part["context"]) == [128, 256, 512, 1024]  # powers of two up to its 1,024 positions
        r = plan(gpt2, engine=engine, context=1024, batch=2, gpu_memory="24GB")
        top = part[part["context"] == 1024].iloc[0]
        assert top["bytes_per_gpu"] == r["bytes_per_gpu"] and top["kv_cache_bytes"] == r["kv_cache_bytes"]
        assert top["max_context"] == r["max_context"] and bool(top["fits"]) == r["fits"]
        assert list(part["bytes_per_gpu"]) == sorted(part["bytes_per_gpu"])  # more context never takes less


def test_each_engine_holds_a_float32_checkpoint_as_it_loads_it(tmp_path):
    """transformers keeps the checkpoint's float32; vLLM's --dtype auto runs it in float16; llama.cpp runs the f16
    GGUF convert_hf_to_gguf.py writes by default (1-D tensors in f32)."""
    from tests.support.quantized import float_llama, llama_total

    folder = float_llama(tmp_path / "llama", None)
    total = llama_total()
    one_d = int(fit._counted(str(folder), fit.FitOptions()).inv.query("kind == 'parameter'")
                .pipe(lambda p: p.loc[p["shape"].astype(str).str.count("x") == 0, "numel"].sum()))  # fmt: skip
    assert plan(str(folder), context=16)["weights_bytes"] == 4 * total
    assert plan(str(folder), context=16, engine="vllm")["weights_bytes"] == 2 * total
    assert plan(str(folder), context=16, engine="llama.cpp")["weights_bytes"] == 2 * total + 2 * one_d
    assert plan(str(folder), context=16, engine="vllm", dtype="float32")["weights_bytes"] == 4 * total
