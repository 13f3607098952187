"""hmp flops: the FLOPs per token of a forward, held to closed forms written here from each published config, and
to FlopCounterMode over the model's own forward (pipeline.cost.flops.measured) on every family it covers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.answers import fit
from pipeline.answers import flops as answer
from pipeline.core.errors import PipelineError
from pipeline.cost import flops

SUPPORT = Path(__file__).parents[1] / "support"
GPT2 = str(SUPPORT / "published_configs" / "openai-community--gpt2.json")
CORPUS = SUPPORT / "config_corpus"


def run(source: str, **options) -> dict:
    return answer.flops(source, answer.FlopsOptions.of(options))


def gpt2_forward(layers: int, width: int, context: int, vocab: int = 50_257) -> int:
    """Kaplan's 12·d² per layer (attention 4d², MLP 8d²) and the tied head, 2 FLOPs each; 4·T·d per layer of
    attention (scores and values over the whole context: FlopCounterMode's count)."""
    return 2 * (layers * 12 * width**2 + width * vocab) + layers * 4 * context * width


def test_gpt2_small_and_medium_exactly():
    assert run(GPT2, context=1024)["forward_flops_per_token"] == gpt2_forward(12, 768, 1024) == 284_812_800
    medium = tmp_config({"n_layer": 24, "n_embd": 1024, "n_head": 16})
    r = run(medium, context=1024)
    assert r["forward_flops_per_token"] == gpt2_forward(24, 1024, 1024) == 807_569_408  # the figure
    assert r["components"]["other_products"] == 0 and r["measured_at"] == 1024  # FlopCounterMode agrees
    assert r["training_flops_per_token"] == 3 * 807_569_408


def tmp_config(changes: dict) -> str:
    import tempfile

    config = {**json.loads(Path(GPT2).read_text()), **changes}
    path = Path(tempfile.mkdtemp()) / "gpt2-medium.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_llama_3_8b_at_8k_counts_the_attention():
    """The issue: 19,304,284,160 per token at 8,192; FlopCounterMode without the attention counted: 15,009,316,864."""
    r = run(str(SUPPORT / "published_configs" / "meta-llama--Meta-Llama-3-8B.json"), context=8192)
    matrices = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 4096 * 128_256
    attention = 32 * 4 * 8192 * 32 * 128  # 32 layers, 32 heads of 128, over 8,192 keys
    assert r["forward_flops_per_token"] == 2 * matrices + attention == 19_304_284_160
    assert 2 * matrices == 15_009_316_864
    by = {c["name"]: c for c in r["conventions"]}
    assert by["2N"]["flops_per_token"] == 2 * 8_030_261_248
    assert "leaves out the attention over 8,192 tokens: 4.29 GFLOPs" in by["2N"]["difference"]
    assert by["PaLM MFU"]["flops_per_token"] == 6 * 8_030_261_248 + 12 * 32 * 8192 * 4096


def closed_and_measured(name: str, context: int) -> tuple:
    m = fit.counted_model(str(CORPUS / f"{name}.json"))
    layers = flops.attention_layers(m.model, m.config)
    return flops.closed_form(m.inv, m.row, layers, context), flops.measured(m.model, context), m


def test_a_mixture_sends_each_token_through_exactly_k_experts():
    f, measured, m = closed_and_measured("Qwen--Qwen3-30B-A3B", 1024)
    # 48 layers, 8 of 128 experts per token, each a gated MLP of 2048 -> 768 (gate, up, down)
    assert f.experts == 2 * 48 * 8 * 3 * 2048 * 768
    assert f.router == 2 * 48 * 2048 * 128
    assert measured == 1024 * f.total  # FlopCounterMode over its own forward, every token routed to 8
    # its active matrices alone: 6,083,313,664 per token (the figure)
    assert f.total - f.attention_scores == 6_083_313_664


def test_latent_attention_and_shared_experts_on_deepseek_v2_lite():
    f, measured, _ = closed_and_measured("deepseek-ai--DeepSeek-V2-Lite", 1024)
    # 27 layers of multi-head latent attention, 16 heads, queries and keys 128 + 64 wide, values 128
    assert f.attention_scores == 27 * 2 * 1024 * 16 * (192 + 128)
    assert f.shared_experts == 2 * 26 * 3 * 2048 * 2816  # 2 shared experts of 1,408 in layers 1-26
    assert measured == 1024 * f.total  # the dense first layer and the mixtures, each kind counted from one block


def test_a_sliding_layer_attends_its_window():
    f, measured, _ = closed_and_measured("google--gemma-3-1b-it", 4096)
    # Gemma 3 1B: 26 layers, every sixth global; 4 heads of 256; the 22 sliding layers attend 512 keys
    assert f.attention_scores == 4 * 2 * 4096 * 4 * 512 + 22 * 2 * 512 * 4 * 512
    assert measured == 4096 * f.total


def test_a_vision_language_model_counts_its_text_tokens():
    r = run(str(CORPUS / "Qwen--Qwen2.5-VL-7B-Instruct.json"), context=1024)
    assert r["components"]["other_products"] == 0 and r["measured_at"] == 1024
    # Qwen2.5-7B's text stack: 28 layers, 28 heads and 4 KV heads of 128, MLP 18,944, vocabulary 152,064 (untied)
    text = 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944) + 3584 * 152_064
    assert r["forward_flops_per_token"] == 2 * text + 28 * 4 * 1024 * 3584


def test_the_mfu_of_a_measured_throughput():
    r = run(GPT2, context=1024, gpu="H100-SXM", throughput=100_000.0, gpus=2)
    by = r["mfu"]["mfu"]
    assert by["exact training"] == pytest.approx(3 * 284_812_800 * 100_000 / (2 * 989.5e12))
    assert set(by) == {
        "Chinchilla (Appendix F)",
        "6N (Kaplan, Chinchilla)",
        "6N non-embedding",
        "PaLM MFU",
        "exact training",
    }
    assert run(GPT2, context=1024, tokens=10**9)["training_run_flops"] == 3 * 284_812_800 * 10**9


@pytest.mark.parametrize(
    "options, message",
    [
        ({"context": 0}, "--context 0: a context is at least 1 token"),
        ({"context": 4096}, "--context 4,096 is beyond the 1,024 positions"),
        ({"batch": 0}, "--batch 0"),
        ({"batch": 2**22, "context": 1024}, "more than 2^31 tokens"),
        ({"gpu": "H900", "throughput": 1.0}, "--gpu 'H900': one of"),
        ({"throughput": 1.0}, "--gpu and --throughput go together"),
        ({"gpu": "A100", "throughput": 1.0, "dtype": "fp8"}, "A100's peaks are for bfloat16, float16"),
        ({"tokens": 0}, "--tokens 0"),
    ],
)
def test_bad_input_is_one_line(options, message):
    with pytest.raises(PipelineError) as e:
        run(GPT2, measure=False, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_text_encoder_decoder_counts_its_encoder_over_the_source_and_its_decoder_over_the_target():
    """flan-t5-base (its config): 12 + 12 layers, d 768, 12 heads of 64, a gated MLP of 2,048 (wi_0, wi_1, wo),
    vocabulary 32,128 and an untied head; T5 has no position limit, so the source is as long as the context."""
    r = run(str(CORPUS / "google--flan-t5-base.json"), context=512, batch=2)
    d, s, t, heads = 768, 512, 512, 12 * 128  # 12 heads × (query-key 64 + value 64)
    source = 12 * (2 * 4 * d * d + 2 * s * heads + 2 * 3 * d * 2048) + 12 * 2 * 2 * d * d  # + cross keys, values
    target = 12 * (2 * 4 * d * d + 2 * t * heads + 2 * 2 * d * d + 2 * s * heads + 2 * 3 * d * 2048) + 2 * d * 32_128
    seq = r["encoder_decoder"]
    assert (seq["source_tokens"], seq["per_source_token"], seq["per_target_token"]) == (512, source, target)
    assert r["forward_flops"] == 2 * (s * source + t * target)  # FlopCounterMode over the model's forward agrees:
    assert r["components"]["other_products"] == 0 and r["measured_at"] == 512
    assert r["forward_flops_per_token"] == round((s * source + t * target) / (s + t))


def test_a_speech_encoder_decoder_counts_its_convolution_stem():
    """whisper-tiny (its config): 4 + 4 layers, d 384, 6 heads of 64, MLP 1,536, 80 mel bins, a source of 1,500
    positions after two convolutions (kernel 3; 3,000 frames, then stride 2), a tied head over 51,865 tokens."""
    r = run(str(CORPUS / "openai--whisper-tiny.json"), context=448)
    d, s, t, heads = 384, 1500, 448, 6 * 128
    stem = (2 * d * 80 * 3 * 3000 + 2 * d * d * 3 * 1500) // s
    source = 4 * (2 * 4 * d * d + 2 * s * heads + 2 * 2 * d * 1536) + 4 * 2 * 2 * d * d + stem
    target = 4 * (2 * 4 * d * d + 2 * t * heads + 2 * 2 * d * d + 2 * s * heads + 2 * 2 * d * 1536) + 2 * d * 51_865
    seq = r["encoder_decoder"]
    assert (seq["per_source_token"], seq["per_target_token"], seq["source"]["convolutions"]) == (source, target, stem)
    assert r["forward_flops"] == s * source + t * target and r["components"]["other_products"] == 0


def test_a_state_space_model_counts_its_projections_convolutions_and_readout():
    """mamba-2.8b (its config): 64 layers, d_model 2,560, d_inner 5,120, d_state 16, dt_rank 160, kernel 4."""
    f, measured, m = closed_and_measured("state-spaces--mamba-2.8b-hf", 64)
    d, inner = 2560, 5120
    assert f.state_space == 2 * 64 * (d * 2 * inner + inner * (160 + 2 * 16) + 160 * inner + inner * d)
    assert f.convolutions == 2 * 64 * inner * 4  # one output per token, 4 taps per channel
    assert f.scan == 2 * 64 * inner * 16  # the readout C · h of a 5,120 × 16 state
    assert f.head == 2 * d * 50_280 and f.attention_scores == 0
    # the reference convolution pads both ends and computes 3 outputs per sequence more, per channel
    assert flops.padding(m.inv) == 64 * 2 * inner * 4 * 3
    assert measured == 64 * f.total + flops.padding(m.inv)


def test_a_hybrid_names_what_its_chunked_scan_adds():
    r = run(str(CORPUS / "LiquidAI--LFM2-1.2B.json"), context=4096)
    c = r["components"]
    # LFM2-1.2B: 10 short-convolution layers (2,048 channels, 3 taps), 6 attention layers (32 heads of 64)
    assert c["convolutions"] == 10 * 2 * 2048 * 3 and c["attention_scores"] == 6 * 2 * 4096 * 32 * 128
    assert c["other_products"] == 0 and r["measured_at"] == 64  # its convolutions are all the graph adds


def test_the_other_tools_conventions_on_gpt2():
    r = run(GPT2, context=1024, measure=False)
    by = {c["name"]: c["flops_per_token"] for c in r["conventions"]}
    d, v, t, h = 768, 50_257, 1024, 12
    matrices = 2 * (12 * 12 * d * d + d * v)
    assert by["calflops / DeepSpeed profiler"] == matrices  # sdpa's products not patched
    assert by["fvcore"] == matrices // 2  # one per multiply-add
    # Hoffmann et al. 2022, Appendix F, with key_size × heads = d and ffw_size = 4d
    layer = 2 * 3 * d * d + 2 * t * d + 3 * h * t + 2 * t * d + 2 * d * d + 2 * 2 * d * 4 * d
    assert by["Chinchilla (Appendix F)"] == 3 * (2 * v * d + 12 * layer + 2 * d * v)


def test_latent_experts_are_counted_at_their_latent_width(tmp_path):
    """Nemotron 3 Ultra's experts run on a 2,048-wide latent of its 8,192-wide tokens (moe_latent_size): 22 of 512
    experts of 5,120 (up, down) per token. Its config cut to attention and mixture layers, so nothing scans and
    FlopCounterMode over the forward must equal the closed form exactly."""
    config = json.loads((CORPUS / "nvidia--NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16.json").read_text())
    config.update(num_hidden_layers=4, layers_block_type=["attention", "moe", "attention", "moe"])
    path = tmp_path / "nemotron-3-ultra-attention-and-moe.json"
    path.write_text(json.dumps(config))
    m = fit.counted_model(str(path))
    f = flops.closed_form(m.inv, m.row, flops.attention_layers(m.model, m.config), 256)
    assert f.experts == 2 * 2 * 22 * 2 * 5120 * 2048  # 2 layers, 22 experts, up and down at the latent width
    assert flops.measured(m.model, 256) == 256 * f.total
