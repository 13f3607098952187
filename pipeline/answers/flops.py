"""How much compute? One call (flops) from a source and typed options (FlopsOptions) to the FLOPs of a forward and
a training step per token, by component, beside every other convention with its definition and the difference in
words, and the MFU of a measured throughput on a named GPU. The counting is pipeline.cost.flops's: the closed form
from the exact inventory, held equal to FlopCounterMode over the model's own forward on fake tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.core.errors import PipelineError

SCANNED = 64  # a model with state-space or recurrent mixers is run at most this long: its scans go token by token

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
    """hmp flops --json: the FLOPs per token of SOURCE (any source hmp count takes) under options."""
    from pipeline.answers import fit
    from pipeline.cost import flops as count

    if options.batch < 1:
        raise PipelineError(f"--batch {options.batch}: a batch is at least 1 sequence")
    m = fit.counted_model(source, options.revision, options.name)
    if getattr(m.config, "is_encoder_decoder", False):
        raise PipelineError("an encoder-decoder's FLOPs (its encoder over the input, its decoder over the output) "
                            "are not counted yet: hmp flops counts a model that generates from its own context",
                            model=m.name)  # fmt: skip
    context, _, context_from = fit.context_of(m, options.context)
    if options.batch * context > 2**31:
        raise PipelineError(f"--batch {options.batch} × --context {context:,}: more than 2^31 tokens in one forward")
    layers = count.attention_layers(m.model, m.config)
    forward = count.closed_form(m.inv, m.row, layers, context)
    other, measured_at, unmeasured = 0, None, None
    if options.measure:  # the graph's own count; what the closed form does not name is its "other products"
        measured_at = min(context, SCANNED) if count.scans(m.model, m.config) else context
        at = count.closed_form(m.inv, m.row, layers, measured_at).total
        try:
            other = count.measured(m.model, measured_at, options.batch) - at
        except Exception as exc:  # noqa: BLE001 - a graph that cannot run on fake tensors: the closed form stands
            measured_at, unmeasured = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    total = forward.total + other
    out: dict[str, Any] = {
        "model": m.shown,
        "total_params": int(m.row["total"]),
        "context": context,
        "context_from": context_from,
        "batch": options.batch,
        "forward_flops_per_token": total,
        "forward_flops": total * options.batch * context,
        "components": {**dataclasses.asdict(forward), "other_products": other},
        "measured_at": measured_at,
        "not_measured": unmeasured,
        "backward_flops_per_token": 2 * total,
        "training_flops_per_token": 3 * total,
        "conventions": conventions(m, total, forward.attention_scores, layers, context),
    }
    if options.tokens is not None:
        if options.tokens < 1:
            raise PipelineError(f"--tokens {options.tokens}: a training run is at least 1 token")
        out["training_run_flops"] = 3 * total * options.tokens
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
        (
            "exact forward",
            matrices,
            scores,
            False,
            "2 FLOPs per multiply-add of every matrix a token passes (the k "
            "routed experts, the head even when tied) + 2 · keys · heads · (qk + v width) per attention layer "
            "(FlopCounterMode, PaLM)",
        ),
        (
            "causal attention at half",
            matrices,
            scores // 2,
            False,
            "the headline with each token attending half the context on average (a causal mask's work)",
        ),
        ("2N", 2 * n, 0, False, "2 × every parameter (embeddings included, every expert), no attention"),
        ("2N active", 2 * active, 0, False, "2 × the parameters a token uses (k of the routed experts)"),
        (
            "Kaplan forward",
            2 * n_nonemb,
            2 * layers_n * context * width,
            False,
            "Kaplan et al. 2020, Table 1: 2N + 2 · n_layer · n_ctx · d_attn, N without embeddings",
        ),
        ("6N (Kaplan, Chinchilla)", 6 * n, 0, True, "6 × every parameter (Kaplan's C ≈ 6N; Hoffmann et al. 2022)"),
        ("6N non-embedding", 6 * n_nonemb, 0, True, "6 × the parameters without embeddings (Kaplan's N)"),
        (
            "PaLM MFU",
            6 * active,
            12 * layers_n * context * width,
            True,
            "Chowdhery et al. 2022, Appendix B: 6N + 12 · L · H · Q · T (nanoGPT's estimate_mfu)",
        ),
        ("exact training", 3 * matrices, 3 * scores, True, "the headline forward and its backward (2 × it)"),
    ]
    out = []
    for name, params, attention, training, definition in rows:
        scale = 3 if training else 1
        out.append({"name": name, "flops_per_token": int(params + attention), "training": training,
                    "definition": ("training: " if training else "") + definition,
                    "difference": _difference(params - scale * matrices, attention - scale * scores, scale * scores,
                                              context)})  # fmt: skip
    return out


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
