"""Will it fit? One call (plan) from a source and typed options (FitOptions) to a typed memory plan (Plan), per GPU
and in total. Each term's formula and source is pipeline.cost.plan's; this module puts them together for one
model, checks the options against it, and searches the largest context and batch that fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.core.errors import PipelineError

# QLoRA (Dettmers et al. 2023, section 3): NF4 weights with double quantization take 4.127 bits per parameter
QLORA_BITS = 4.127
ADAM_BYTES = 16  # mixed-precision Adam per trainable parameter (Rajbhandari et al. 2020, ZeRO, section 3)
MAX_SEARCH = 1 << 24  # the longest context or largest batch searched
DEFAULT_CONTEXT = 4096  # the context of a model whose positions set no limit (T5's relative positions, Mamba)


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """What to plan for; the names are hmp fit's options (--gpu-memory is gpu_memory)."""

    context: int | None = None  # tokens per sequence; None: the model's own positions, else DEFAULT_CONTEXT
    batch: int = 1
    dtype: str = "bfloat16"  # the weights'
    kv_dtype: str = "bfloat16"
    gpu_memory: str = "80GB"  # one GPU's, with its unit
    gpus: int = 1
    tp: int = 1
    ep: int = 1
    train: str | None = None  # None (inference), "full", "lora" or "qlora"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    checkpointing: bool = False
    revision: str | None = None  # of a Hub id
    name: str | None = None  # the model's name in the answer

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> FitOptions:
        """The options a mapping names (argparse's namespace as a dict, a query string): other keys ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in values.items() if k in known and v is not None or k == "context"}
        if "lora_targets" in given:
            given["lora_targets"] = tuple(given["lora_targets"])
        return cls(**given)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The plan; as_json() is hmp fit --json, field for field in this order."""

    model: str
    total_params: int
    weights_bytes: int
    weights_bytes_per_gpu: int
    kv_cache_bytes_per_token: int
    kv_cache_bytes: int
    kv_cache_bytes_full_length: int
    state_bytes_per_sequence: int | None
    lora_params: int
    lora_layers: int
    optimizer_and_gradient_bytes: int
    activation_bytes: int
    bytes_per_gpu: int
    gpu_memory_bytes: int
    fits: bool
    max_context: int
    max_batch: int
    context: int
    context_from: str
    max_positions: int | None
    latent_attention: bool
    training: str | None
    batch: int
    tp: int
    ep: int
    gpus: int

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Model:
    """What the plan needs of the counted model."""

    name: str
    shown: str
    inv: Any
    row: dict[str, Any]
    model: Any
    config: Any


def plan(source: str, options: FitOptions) -> Plan:
    """The memory plan of SOURCE (any source hmp count takes) under options."""
    from pipeline.cost import plan as terms

    gpu = terms.parse_memory(options.gpu_memory)
    kv_bytes = terms.dtype_bytes(options.kv_dtype, "--kv-dtype")
    w_bytes = terms.dtype_bytes(options.dtype, "--dtype")
    m = _counted(source, options)
    _check_parallel(m, options)
    context, limit, context_from = _context(m, options)
    if options.batch < 1:
        raise PipelineError(f"--batch {options.batch}: a batch is at least 1 sequence")
    need = _needs(m, options, w_bytes, kv_bytes)
    per_gpu, parts = need(context, options.batch)
    c = parts["cache"]
    return Plan(
        model=m.shown,
        total_params=int(m.row["total"]),
        weights_bytes=int(parts["weights"]),
        weights_bytes_per_gpu=int(parts["weights_per_gpu"]),
        kv_cache_bytes_per_token=c.per_token,
        kv_cache_bytes=c.at,
        kv_cache_bytes_full_length=c.full_length,
        state_bytes_per_sequence=c.state,
        lora_params=parts["lora"][0],
        lora_layers=parts["lora"][1],
        optimizer_and_gradient_bytes=int(parts["optimizer"]),
        activation_bytes=parts["activations"],
        bytes_per_gpu=per_gpu,
        gpu_memory_bytes=gpu,
        fits=per_gpu <= gpu,
        max_context=terms.largest(lambda n: need(n, options.batch)[0] <= gpu, limit or MAX_SEARCH),
        max_batch=terms.largest(lambda n: need(context, n)[0] <= gpu, MAX_SEARCH),
        context=context,
        context_from=context_from,
        max_positions=limit,
        latent_attention=parts["latent"],
        training=options.train or None,
        batch=options.batch,
        tp=options.tp,
        ep=options.ep,
        gpus=options.gpus,
    )


def _counted(source: str, options: FitOptions) -> _Model:
    from pipeline.answers import source as named
    from pipeline.core import params
    from pipeline.model.count import count_folder

    entry = named.entry_for(source, options.revision)
    shown = options.name or named.shown_name(source)
    name = named.checked_name(options.name or named.default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with named.linked(spec, entry, source) as (folder, _record):
        counted = count_folder(spec, folder)
    return _Model(name, shown, counted.inv, counted.row, counted.model, counted.config)


def _check_parallel(m: _Model, options: FitOptions) -> None:
    from pipeline.cost import plan as terms

    tp, gpus, ep = options.tp, options.gpus, options.ep
    if gpus < 1 or tp < 1 or gpus % tp:
        raise PipelineError(f"--gpus {gpus} --tp {tp}: the GPUs must be a whole number of tensor-parallel groups")
    terms.tensor_parallel_check(m.config, tp, m.name)
    n_experts = m.row.get("n_experts")
    if ep < 1:
        raise PipelineError(f"--ep {ep}: an expert-parallel degree is at least 1")
    if ep > 1 and (not n_experts or int(n_experts) % ep or gpus % ep):
        raise PipelineError(
            f"--ep {ep} must divide its routed experts ({n_experts or 'none'}) and --gpus {gpus}", model=m.name
        )


def _context(m: _Model, options: FitOptions) -> tuple[int, int | None, str]:
    """(the context planned, the model's own limit or None, where the context came from)."""
    from pipeline.cost import cache

    limit, limit_from = cache.max_positions(m.model, m.config)
    given = options.context
    context = int(given) if given is not None else limit or DEFAULT_CONTEXT  # the model's own context by default
    if context < 1:
        raise PipelineError(f"--context {context}: a context is at least 1 token")
    if limit and context > limit:
        raise PipelineError(f"--context {context:,} is beyond the {limit:,} positions '{m.name}' holds ({limit_from})")
    if given is not None:
        return context, limit, "--context"
    return context, limit, f"the model's own ({limit_from})" if limit else f"{DEFAULT_CONTEXT:,} ({limit_from})"


def _needs(m: _Model, options: FitOptions, w_bytes: float, kv_bytes: float) -> Callable[[int, int], tuple[int, dict]]:
    """need(context, batch) -> (bytes one GPU holds, the terms): everything but the cache and activations is fixed."""
    from pipeline.cost import cache
    from pipeline.cost import plan as terms
    from pipeline.model import build

    tp, ep, train = options.tp, options.ep, options.train
    text = cache.text_config(m.config)
    layers = cache.layers(m.model, m.config, build.is_causal_class(type(m.model), m.config))
    total = int(m.row["total"])
    p = m.inv[m.inv["kind"] == "parameter"]
    replicated = int(p.loc[p["component"] == "layer_norm", "numel"].sum())  # norms are not split
    lora = (0, 0)
    if train in ("lora", "qlora"):
        lora = terms.lora_params(m.model, list(options.lora_targets), int(options.lora_rank))
    if train == "qlora":  # the linear matrices in 4-bit NF4, every other tensor in the weights' dtype
        linear = int(p.loc[(p["role"] == "matrix"), "numel"].sum())
        weights = linear * QLORA_BITS / 8 + (total - linear) * w_bytes
    else:
        weights = total * w_bytes
    # Megatron: norms replicated, the rest split over the TP group; routed experts split over EP ranks instead
    routed = int(p.loc[p["component"] == "experts", "numel"].sum()) * (w_bytes if train != "qlora" else QLORA_BITS / 8)
    if ep > 1:
        weights_per_gpu = (weights - routed - replicated * w_bytes) / tp + routed / ep + replicated * w_bytes
    else:
        weights_per_gpu = (weights - replicated * w_bytes) / tp + replicated * w_bytes
    trainable = total if train == "full" else lora[0]
    optimizer = trainable * (ADAM_BYTES - (w_bytes if train == "full" else 0))  # full: the weights are counted above
    latent = bool(getattr(text, "kv_lora_rank", None))  # MLA's latent is not split across a TP group
    hidden = getattr(text, "hidden_size", 0) or 0
    heads = getattr(text, "num_attention_heads", 0) or 0
    n_layers = len(layers) or int(getattr(text, "num_hidden_layers", 0) or 0)
    source_positions = getattr(m.config, "max_source_positions", None)
    fixed = {"weights": weights, "weights_per_gpu": weights_per_gpu, "lora": lora, "optimizer": optimizer}

    def need(ctx: int, b: int) -> tuple[int, dict]:
        c = terms.kv_cache(layers, ctx, b, kv_bytes, source_positions or ctx)
        state = 0 if train else (c.state or 0) * b  # training keeps no cache or state (use_cache off)
        acts = terms.activation_bytes(ctx, b, hidden, heads, n_layers, bool(options.checkpointing)) if train else 0
        kv_gpu = 0 if train else c.at if latent else c.at / tp  # training runs without a KV cache (use_cache off)
        per_gpu = weights_per_gpu + kv_gpu + state / tp + (optimizer + acts) / tp
        return int(per_gpu), {"cache": c, "state": state, "activations": acts, "latent": latent, **fixed}

    return need
