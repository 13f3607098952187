"""How much compute? One call (flops) from a source and typed options (FlopsOptions) to the FLOPs of a forward and
a training step per token, by component, beside every other convention with its definition and the difference in
words, and the MFU of a measured throughput on a named GPU. The counting is pipeline.cost.flops's: the closed form
from the exact inventory, held equal to FlopCounterMode over the model's own forward on fake tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.core.errors import PipelineError

# Peak dense tensor-core FLOP/s per GPU and dtype, from each vendor's datasheet (the sparse figures halved where the
# datasheet gives only those): NVIDIA H100 Tensor Core GPU datasheet (SXM: BF16/FP16 1,979 TFLOPS, FP8 3,958 with
# sparsity; PCIe: 1,513 and 3,026), NVIDIA H200 datasheet (as H100 SXM), NVIDIA A100 datasheet (BF16/FP16 312 TFLOPS
# dense), NVIDIA L40S datasheet (BF16/FP16 362.05, FP8 733 dense), AMD Instinct MI300X datasheet (BF16/FP16 1,307.4,
# FP8 2,614.9 dense).
GPUS = {
    "H100-SXM": {"bfloat16": 989.5e12, "float16": 989.5e12, "fp8": 1979e12},
    "H100-PCIe": {"bfloat16": 756.5e12, "float16": 756.5e12, "fp8": 1513e12},
    "H200": {"bfloat16": 989.5e12, "float16": 989.5e12, "fp8": 1979e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12},
    "L40S": {"bfloat16": 362.05e12, "float16": 362.05e12, "fp8": 733e12},
    "MI300X": {"bfloat16": 1307.4e12, "float16": 1307.4e12, "fp8": 2614.9e12},
}


@dataclasses.dataclass(frozen=True)
class FlopsOptions:
    context: int | None = None  # tokens per sequence; None: the model's own positions, else 4,096
    batch: int = 1
    tokens: int | None = None  # a training run's tokens
    gpu: str | None = None  # a name of GPUS, for the MFU
    throughput: float | None = None  # measured tokens per second (of the whole run, all GPUs), for the MFU
    gpus: int = 1  # GPUs that throughput came from
    dtype: str = "bfloat16"  # whose peak the MFU divides by
    measure: bool = True  # also count the model's own forward with FlopCounterMode, held to the closed form
    revision: str | None = None
    name: str | None = None

    @classmethod
    def of(cls, values: dict[str, Any]) -> FlopsOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


def flops(source: str, options: FlopsOptions) -> dict[str, Any]:
    """hmp flops --json: the FLOPs per token of SOURCE (any source hmp count takes) under options. An encoder-decoder
    counts its encoder over its source (pipeline.cost.prefill.source_length: a speech encoder's own positions, else as
    many tokens as the context) and its decoder over the context; its per-token figure is per token of both."""
    from pipeline.answers import fit
    from pipeline.cost import flops as count

    if options.batch < 1:
        raise PipelineError(f"--batch {options.batch}: a batch is at least 1 sequence")
    m = fit.counted_model(source, options.revision, options.name)
    context, _, context_from = fit.context_of(m, options.context)
    if options.batch * context > 2**31:
        raise PipelineError(f"--batch {options.batch} × --context {context:,}: more than 2^31 tokens in one forward")
    try:
        c = count.counted(m.inv, m.row, m.model, m.config, context, options.batch, options.measure)
    except PipelineError as exc:
        raise PipelineError(exc.message, model=m.name) from None
    tokens = options.batch * (context + c.source_tokens)
    total_forward = c.total(context, options.batch) + c.other
    per = round(total_forward / tokens)
    scores = round((context * c.forward.attention_scores + c.source_tokens * (
        c.source.attention_scores if c.source else 0)) / (context + c.source_tokens))  # fmt: skip
    out: dict[str, Any] = {
        "model": m.shown,
        "total_params": int(m.row["total"]),
        "context": context,
        "context_from": context_from,
        "batch": options.batch,
        "forward_flops_per_token": per,
        "forward_flops": total_forward,
        "components": {**dataclasses.asdict(c.forward), "other_products": round(c.other / tokens)},
        "measured_at": c.measured_at,
        "not_measured": c.unmeasured,
        "backward_flops_per_token": 2 * per,
        "training_flops_per_token": 3 * per,
        "conventions": conventions(m, per, scores, c.layers, context),
    }
    if c.source is not None:
        out["encoder_decoder"] = {
            "source_tokens": c.source_tokens,
            "per_source_token": c.source.total,
            "per_target_token": c.forward.total,
            "source": dataclasses.asdict(c.source),
        }
    if options.tokens is not None:
        if options.tokens < 1:
            raise PipelineError(f"--tokens {options.tokens}: a training run is at least 1 token")
        out["training_run_flops"] = 3 * per * options.tokens
    if options.gpu is not None or options.throughput is not None:
        out["mfu"] = mfu(out["conventions"], options)
    return out


def conventions(m: Any, total: int, scores: int, layers: list, context: int) -> list[dict[str, Any]]:
    """Every other tool's number for the same model and context, per token, each with its definition and how it
    differs from the headline, term by term: its parameters' term (2 or 6 × some N) and its attention's."""
    row = m.row
    n, n_nonemb = int(row["total"]), int(row["non_embedding"])
    active = int(row.get("active") or n)
    layers_n, width = len(layers), sum(h * dqk for h, dqk, _, _ in layers) // max(len(layers), 1)
    matrices = total - scores  # the headline's products outside attention
    rows = [  # name, its parameters' term, its attention's term, training, definition
        ("exact forward", matrices, scores, False, "2 FLOPs per multiply-add of every matrix a token passes (the k "
         "routed experts, the head even when tied) + 2 · keys · heads · (qk + v width) per attention layer "
         "(FlopCounterMode, PaLM)"),
        ("causal attention at half", matrices, scores // 2, False,
         "the headline with each token attending half the context on average (a causal mask's work)"),
        ("2N", 2 * n, 0, False, "2 × every parameter (embeddings included, every expert), no attention"),
        ("2N active", 2 * active, 0, False, "2 × the parameters a token uses (k of the routed experts)"),
        ("Kaplan forward", 2 * n_nonemb, 2 * layers_n * context * width, False,
         "Kaplan et al. 2020, Table 1: 2N + 2 · n_layer · n_ctx · d_attn, N without embeddings"),
        ("calflops / DeepSpeed profiler", matrices, 0, False,
         "their patches of F.linear, torch.matmul/bmm/einsum count 2 per multiply-add of the matrices; "
         "F.scaled_dot_product_attention is not patched, so under transformers' default sdpa attention its "
         "products are not counted; the 1-5 FLOPs per element they add for norms, activations, softmax, add and "
         "mul are not reproduced here"),
        ("fvcore", matrices // 2, 0, False,
         "FlopCountAnalysis counts 1 per multiply-add (its 'flop' is a multiply-add) of traced addmm/matmul/"
         "linear/bmm/einsum/convolution; aten::scaled_dot_product_attention has no handle (skipped with a "
         "warning) under transformers' default sdpa attention"),
        *_chinchilla(m, layers, context),
        ("6N (Kaplan, Chinchilla)", 6 * n, 0, True, "6 × every parameter (Kaplan's C ≈ 6N; Hoffmann et al. 2022)"),
        ("6N non-embedding", 6 * n_nonemb, 0, True, "6 × the parameters without embeddings (Kaplan's N)"),
        ("PaLM MFU", 6 * active, 12 * layers_n * context * width, True,
         "Chowdhery et al. 2022, Appendix B: 6N + 12 · L · H · Q · T (nanoGPT's estimate_mfu)"),
        ("exact training", 3 * matrices, 3 * scores, True, "the headline forward and its backward (2 × it)"),
    ]  # fmt: skip
    out = []
    for name, params, attention, training, definition in rows:
        scale = 3 if training else 1
        out.append({"name": name, "flops_per_token": int(params + attention), "training": training,
                    "definition": ("training: " if training else "") + definition,
                    "difference": _difference(params - scale * matrices, attention - scale * scores, scale * scores,
                                              context)})  # fmt: skip
    return out


def _chinchilla(m: Any, layers: list, context: int) -> list[tuple]:
    """Hoffmann et al. 2022, Appendix F, per token, as a training step (3 × the forward): embeddings 2·V·d; per
    layer the K, Q, V projections 2·3·d·(k·H), logits 2·T·(k·H), softmax 3·H·T, the values 2·T·(k·H), the output
    2·(k·H)·d, a dense block 2·2·d·F; the final logits 2·d·V. Read from the text config (d, F, V) and each
    attention layer's heads × width (k·H); none where the config gives no intermediate size."""
    from pipeline.cost import cache

    text = cache.text_config(m.config)
    d, ffw, vocab = (getattr(text, a, None) for a in ("hidden_size", "intermediate_size", "vocab_size"))
    if ffw is None and hasattr(text, "n_inner") and isinstance(d, int):
        ffw = text.n_inner or 4 * d  # GPT-2's and GPT-J's: None means 4 × the width
    if not all(isinstance(v, int) for v in (d, ffw, vocab)) or not layers:
        return []
    blocks = int(getattr(text, "num_hidden_layers", len(layers)))
    params = 2 * vocab * d + blocks * 4 * d * ffw + 2 * d * vocab
    params += sum(2 * 3 * d * h * k + 2 * h * k * d for h, k, _, _ in layers)
    attention = sum(2 * context * h * k + 3 * h * context + 2 * context * h * k for h, k, _, _ in layers)
    return [("Chinchilla (Appendix F)", 3 * params, 3 * attention, True,
             "Hoffmann et al. 2022, Appendix F: 3 × (embeddings 2·V·d + per layer 2·3·d·kH + 2·T·kH + 3·H·T + "
             "2·T·kH + 2·kH·d + 2·2·d·F + logits 2·d·V), as if every layer were dense at intermediate_size F and "
             "its keys and values had as many heads as its queries")]  # fmt: skip


def _difference(params: int, attention: int, ours: int, context: int) -> str:
    """In words, per token, how a convention's two terms differ from the headline's."""
    words = []
    if params:
        words.append(f"its parameters' term {'adds' if params > 0 else 'leaves out'} {abs(params) / 1e9:,.2f} "
                     "GFLOPs (lookups, norms, experts no token is sent to; or matrices it does not count)")  # fmt: skip
    if attention and attention == -ours:
        words.append(f"leaves out the attention over {context:,} tokens: {ours / 1e9:,.2f} GFLOPs")
    elif attention:
        words.append(f"its attention term {'adds' if attention > 0 else 'leaves out'} {abs(attention) / 1e9:,.2f} "
                     f"GFLOPs of the {ours / 1e9:,.2f} over {context:,} tokens")  # fmt: skip
    return "; ".join(words) or "the headline"


def mfu(conventions_: list[dict], options: FlopsOptions) -> dict[str, Any]:
    """Model FLOPs utilisation of a measured training throughput under each training convention."""
    if options.gpu is None or options.throughput is None:
        raise PipelineError("--gpu and --throughput go together: the MFU divides the throughput's FLOPs by the "
                            "GPU's peak")  # fmt: skip
    if options.gpu not in GPUS:
        raise PipelineError(f"--gpu {options.gpu!r}: one of {', '.join(GPUS)}")
    peak = GPUS[options.gpu].get(options.dtype)
    if peak is None:
        raise PipelineError(f"--dtype {options.dtype}: {options.gpu}'s peaks are for {', '.join(GPUS[options.gpu])}")
    if options.throughput <= 0 or options.gpus < 1:
        raise PipelineError(f"--throughput {options.throughput} on --gpus {options.gpus}: both above 0")
    of = {c["name"]: c["flops_per_token"] * options.throughput / (peak * options.gpus)
          for c in conventions_ if c["training"]}  # fmt: skip
    return {"gpu": options.gpu, "dtype": options.dtype, "peak_flops": peak, "gpus": options.gpus, "mfu": of}
