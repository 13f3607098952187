"""What the parameters cost: memory per dtype, training memory, the KV cache and compute, from the exact count.

Each quantity is one row of results/cost.csv (model, quantity, value, unit, definition), computed from
the meta-built model, its config and the count; none is typed in. The definitions follow the anchors
people use: accelerate's estimate-memory (bytes per dtype, the largest layer or residual group),
ZeRO (Rajbhandari et al. 2020: 16 bytes per parameter for mixed-precision Adam), Kaplan et al. 2020
(forward compute per token C ≈ 2N + 2·n_layer·n_ctx·d_attn, N the non-embedding parameters) and
Chinchilla (Hoffmann et al. 2022: about 20 training tokens per parameter, training ≈ 6·N·D FLOPs).
"""

from __future__ import annotations

from math import ceil
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.cost import cache, plan

if TYPE_CHECKING:
    import torch

COLUMNS = ["model", "quantity", "value", "unit", "definition"]
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1, "int4": 0.5}
DEFINITIONS = {
    **{
        f"weights_bytes_{d}": f"the exact parameter count × {b} byte{'s' if b != 1 else ''} per value ({d})"
        for d, b in DTYPE_BYTES.items()
    },
    "weights_bytes_on_disk": "the size of the checkpoint's weight files, for a model that has one",
    "largest_layer_bytes_float32": "the largest layer or residual group in float32, accelerate's definition: a module "
    "with no children or one the model says must not be split (_no_split_modules), buffers included",
    "train_adam_mixed_bytes": "mixed-precision Adam: bytes per trainable parameter (ZeRO's 16: fp16 weights and "
    "gradients, fp32 master weights, momentum and variance), activations not included",
    "kv_cache_bytes_per_token_bfloat16": "keys and values one generated token adds to the cache in bfloat16: 2 × KV "
    "heads × head width per self-attention layer of the generating stack (multi-head latent attention: its latent "
    "and rotary key); state-space layers, encoders and vision towers add none",
    "kv_cache_bytes_at_context": "the KV cache for the context and batch of the cost settings, sliding-window layers "
    "holding at most their window (an encoder-decoder: its cross-attention cache too, for an input of "
    "max_source_positions, else the context)",
    "state_bytes_per_sequence_bfloat16": "the fixed state a state-space or recurrent layer keeps per sequence, "
    "whatever the context, as transformers' cache holds it: the convolution's kernel-wide inputs in bfloat16, the "
    "recurrent state in float32 (empty where a mixer's state is not derived)",
    "cross_attention_kv_bytes_per_input_token_bfloat16": "keys and values of the encoder's output that an "
    "encoder-decoder's cross-attention caches once per input token, in bfloat16",
    "kv_cache_bytes_full_length": "the KV cache at the context and batch if every layer held the whole context "
    "(what an engine that gives sliding-window layers full-length caches allocates)",
    "inference_bytes_at_context": "bfloat16 weights, the KV cache and the state-space state at the context and batch "
    "of the cost settings: what one GPU holds without tensor parallelism (activations of a forward pass aside)",
    "fits_on_gpu": "inference_bytes_at_context is at most cost.gpu_memory",
    "max_context_on_gpu": "the longest context, up to the model's own, whose inference bytes fit in cost.gpu_memory "
    "at the batch of the cost settings (0: not even one token; empty for a model that generates nothing)",
    "forward_flops_per_token": "Kaplan et al. 2020: 2N + 2 · n_layer · n_ctx · d_attn, N the non-embedding "
    "parameters (a mixture of experts: those one token uses), at the context of the cost settings",
    "train_tokens_chinchilla": "Hoffmann et al. 2022: tokens per parameter at the compute optimum × N",
    "train_flops_chinchilla": "6 · N · tokens, N as for forward_flops_per_token",
}


def largest_layer(model: torch.nn.Module, bytes_per_param: int = 4) -> tuple[int, list[str]]:
    """(bytes, module names) of the largest layer or residual group, as accelerate's calculate_maximum_sizes.

    A layer is a module with no children, or one whose class is in model._no_split_modules (a whole
    transformer block); its size is its parameters at bytes_per_param (each tied tensor once, where
    named_parameters() first meets it) plus its buffers in their own dtype (BERT's int64 position ids).
    Module-level parameters and buffers of the root count alone.
    """
    sizes: dict[str, int] = {}
    tensors = [(n, t.numel() * bytes_per_param) for n, t in model.named_parameters()]
    tensors += [(n, t.numel() * t.element_size()) for n, t in model.named_buffers()]
    for name, size in tensors:
        parts = name.split(".")
        for i in range(len(parts)):
            key = ".".join(parts[:i])
            sizes[key] = sizes.get(key, 0) + size
        sizes[name] = size
    no_split = set(getattr(model, "_no_split_modules", None) or [])
    queue: list[tuple[str, Any]] = [
        *model.named_parameters(recurse=False),
        *model.named_children(),
        *model.named_buffers(recurse=False),
    ]
    best, names = 0, []
    while queue:
        name, module = queue.pop(0)
        children = list(module.named_children()) if hasattr(module, "named_children") else []
        if children and type(module).__name__ not in no_split:
            queue = [(f"{name}.{n}", m) for n, m in children] + queue
            continue
        size = sizes.get(name, 0)
        if size > best:
            best, names = size, [name]
        elif size == best:
            names.append(name)
    return best, names


# Fields that state a model's longest sequence: positions of a decoder, GPT-2's, Whisper's decoder's, T5's
NO_CONTEXT = "its config states no maximum context: set cost.context"
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx", "seq_length")


def context_of(config: Any, settings: dict, attends: bool = True) -> int | None:
    """cost.context, or (when it is 0) the model's own longest sequence: its maximum positions, or a vision
    tower's patches and class token. None for a model that attends and states none (T5's relative positions
    set no limit): its context-dependent rows stay empty until cost.context is set; 0 when nothing it does
    grows with the context (a state-space model)."""
    context = settings.get("context")
    for field in CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if not context and isinstance(value, int) and value > 0:
            context = value
    image, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if not context and isinstance(image, int) and isinstance(patch, int) and patch > 0:
        context = (image // patch) ** 2 + 1  # ViT: one token per patch and the class token
    if not context and attends:
        return None
    return int(context or 0)


def table(
    name: str, model: torch.nn.Module, config: Any, row: dict, conv: dict, settings: dict, causal: bool = True
) -> pd.DataFrame:
    """The cost rows of one model. row: its summary row; conv: its conventions {name: params}; causal: a decoder."""
    total = int(row["total"])
    text = cache.text_config(config)
    per_layer = cache.layers(model, config, causal)
    attends = not per_layer or any(layer.kv_per_token or layer.cross_kv_per_input_token for layer in per_layer)
    ctx = context_of(text, settings, attends)
    no_context = ctx is None  # rows that grow with the context stay empty: nothing is guessed
    ctx = ctx or 0
    batch = int(settings["batch"])
    source = getattr(config, "max_source_positions", None) or ctx  # the input an encoder-decoder attends to
    at = plan.kv_cache(per_layer, ctx, batch, 2, source)  # bfloat16, each layer as its kind caches
    cross = sum(layer.cross_kv_per_input_token for layer in per_layer) * 2
    # Kaplan's N: non-embedding; for a mixture of experts, the part one token uses
    embedding = total - int(conv["non_embedding_kaplan"])
    n = int(conv["active_per_token"]) - embedding
    d_attn = cache.attention_width(text)
    attention_layers = (
        sum(1 for layer in per_layer if layer.kv_per_token) if per_layer else getattr(text, "num_hidden_layers", 0)
    )
    flops = 2 * n + 2 * attention_layers * ctx * d_attn
    tokens = int(settings["tokens_per_param"]) * n
    largest, _ = largest_layer(model)
    gpu = plan.parse_memory(settings.get("gpu_memory", "80GB"), "cost.gpu_memory")
    weights = 2 * total  # bfloat16

    def inference(n: int) -> int:  # bf16 weights, the cache at n tokens and the state, for the batch
        c = plan.kv_cache(per_layer, n, batch, 2, getattr(config, "max_source_positions", None) or n)
        return weights + c.at + batch * (c.state or 0)

    full = at.full_length if ctx else 0
    limit = ctx if not no_context else 0
    fits = None if no_context else int(inference(ctx) <= gpu)
    longest = None if no_context or not per_layer else plan.largest(lambda n: inference(n) <= gpu, limit)
    values: dict[str, tuple[float | None, str]] = {
        **{f"weights_bytes_{d}": (ceil(total * b), "bytes") for d, b in DTYPE_BYTES.items()},
        "weights_bytes_on_disk": (row.get("checkpoint_bytes"), "bytes"),
        "largest_layer_bytes_float32": (largest, "bytes"),
        "train_adam_mixed_bytes": (total * int(settings["adam_bytes_per_param"]), "bytes"),
        "kv_cache_bytes_per_token_bfloat16": (at.per_token, "bytes"),
        "kv_cache_bytes_at_context": (
            None if no_context else at.at,
            NO_CONTEXT if no_context else f"bytes ({ctx:,} tokens × {batch})",
        ),
        "state_bytes_per_sequence_bfloat16": (at.state if per_layer else 0, "bytes"),
        "cross_attention_kv_bytes_per_input_token_bfloat16": (cross, "bytes"),
        "kv_cache_bytes_full_length": (None if no_context else full, "bytes"),
        "inference_bytes_at_context": (None if no_context else inference(ctx), "bytes"),
        "fits_on_gpu": (fits, f"1 if it fits in {settings.get('gpu_memory', '80GB')}, else 0"),
        "max_context_on_gpu": (longest, "tokens"),
        "forward_flops_per_token": (
            None if no_context else flops,
            NO_CONTEXT if no_context else f"FLOPs (context {ctx:,})",
        ),
        "train_tokens_chinchilla": (tokens, "tokens"),
        "train_flops_chinchilla": (6 * n * tokens, "FLOPs"),
    }
    rows = [
        {
            "model": name,
            "quantity": q,
            "value": None if v is None or pd.isna(v) else int(v),
            "unit": unit,
            "definition": DEFINITIONS[q],
        }
        for q, (v, unit) in values.items()
    ]
    # Python integers, written exactly: training FLOPs pass int64's 9.2·10^18 already for GPT-2 XL
    return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


KAPLAN_ALPHA_N = 0.076  # Kaplan et al. 2020, eq. 1.1: L(N) = (N_c / N)^α_N with α_N ≈ 0.076


def power_law(n: list[float], perplexity: list[float]) -> tuple[float, float]:
    """(α, c) of loss = c · N^-α fitted in log-log to the points, loss = ln(perplexity) in nats per token."""
    import numpy as np

    slope, intercept = np.polyfit(np.log(n), np.log(np.log(perplexity)), 1)
    return float(-slope), float(np.exp(intercept))
