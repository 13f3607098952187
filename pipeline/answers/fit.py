"""Will it fit? One call (plan) from a source and typed options (FitOptions) to a typed memory plan (Plan), per GPU
and in total, as the transformers engine allocates it. Each term's formula and source is pipeline.cost's: the
weights as stored (cost.stored), the caches (cost.cache, cost.plan), what the prefill holds beyond them, measured
on fake tensors (cost.prefill), and the runtime's own overhead (OVERHEAD). This module puts them together for one
model, checks the options against it, and searches the largest context and batch that fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.answers.fit_options import FitOptions, Plan
from pipeline.answers.needs import Model, Needs, engine_needs
from pipeline.core.errors import PipelineError

__all__ = ["FitOptions", "Plan", "plan"]

MAX_SEARCH = 1 << 24  # the longest context or largest batch searched
DEFAULT_CONTEXT = 4096  # the context of a model whose positions set no limit (T5's relative positions, Mamba)


def plan(source: str, options: FitOptions) -> Plan:
    """The memory plan of SOURCE (any source hmp count takes) under options."""
    from pipeline.cost import plan as terms

    gpu = terms.parse_memory(options.gpu_memory)
    kv_bytes = terms.dtype_bytes(options.kv_dtype, "--kv-dtype")
    if options.dtype is not None:
        terms.dtype_bytes(options.dtype, "--dtype")
    m = _counted(source, options)
    _check_parallel(m, options)
    context, limit, context_from = _context(m, options)
    if options.batch < 1:
        raise PipelineError(f"--batch {options.batch}: a batch is at least 1 sequence")
    need = engine_needs(m, options, kv_bytes, context, limit, gpu)
    per_gpu, parts = need(context, options.batch)
    c, budget = parts["cache"], need.budget(gpu)
    fits = per_gpu <= budget
    max_context = terms.largest(lambda n: need(n, options.batch)[0] <= budget, limit or MAX_SEARCH)
    max_batch = terms.largest(lambda n: need(context, n)[0] <= budget, MAX_SEARCH)
    return Plan(
        model=m.shown,
        total_params=int(m.row["total"]),
        weights_from=need.stored.source,
        weights_how=need.stored.how,
        weights_bytes=int(parts["weights"]),
        weights_bytes_per_gpu=int(parts["weights_per_gpu"]),
        kv_cache_bytes_per_token=c.per_token,
        kv_cache_bytes=c.at,
        kv_cache_bytes_full_length=c.full_length,
        kv_cache_from=need.cache_from,
        state_bytes_per_sequence=c.state,
        lora_params=parts["lora"][0],
        lora_layers=parts["lora"][1],
        optimizer_and_gradient_bytes=int(parts["optimizer"]),
        activation_bytes=parts["activations"],
        decode_activation_bytes=parts["decode"],
        peak_phase=parts.get("phase")
        or (
            "training step"
            if options.train
            else "decode"
            if (parts["decode"] or 0) > parts["activations"]
            else "prefill"
        ),
        activations_from=need.activations_from,
        peak_bytes=per_gpu - need.overhead,
        overhead_bytes=need.overhead,
        bytes_per_gpu=per_gpu,
        gpu_memory_bytes=gpu,
        fits=fits,
        max_context=max_context,
        max_batch=max_batch,
        context=context,
        context_from=context_from,
        max_positions=limit,
        latent_attention=parts["latent"],
        training=options.train or None,
        batch=options.batch,
        tp=options.tp,
        ep=options.ep,
        gpus=options.gpus,
        way_forward=None if fits else _way_forward(m, options, need, gpu, context, max_context, max_batch),
        measured=need.tracked(context, options.batch) if options.measure else None,
        engine=options.engine,
        engine_detail=need.detail(context, options.batch),
    )


def _counted(source: str, options: FitOptions) -> Model:
    return counted_model(source, options.revision, options.name)


def counted_model(source: str, revision: str | None = None, name_given: str | None = None) -> Model:
    """SOURCE counted (any source hmp count takes), with what the cost answers need of it."""
    from pipeline.answers import source as named
    from pipeline.core import params

    entry = named.entry_for(source, revision)
    shown = name_given or named.shown_name(source)
    name = named.checked_name(name_given or named.default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with named.linked(spec, entry, source) as (folder, _record):
        counted = named.counted(spec, folder)
    return Model(name, shown, counted.inv, counted.row, counted.model, counted.config)


def _check_parallel(m: Model, options: FitOptions) -> None:
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


def _context(m: Model, options: FitOptions) -> tuple[int, int | None, str]:
    return context_of(m, options.context)


def context_of(m: Model, given: int | None) -> tuple[int, int | None, str]:
    """(the context planned, the model's own limit or None, where the context came from)."""
    from pipeline.cost import cache

    limit, limit_from = cache.max_positions(m.model, m.config)
    context = int(given) if given is not None else limit or DEFAULT_CONTEXT  # the model's own context by default
    if context < 1:
        raise PipelineError(f"--context {context}: a context is at least 1 token")
    if limit and context > limit:
        raise PipelineError(f"--context {context:,} is beyond the {limit:,} positions '{m.name}' holds ({limit_from})")
    if given is not None:
        return context, limit, "--context"
    return context, limit, f"the model's own ({limit_from})" if limit else f"{DEFAULT_CONTEXT:,} ({limit_from})"


def _way_forward(
    m: Model, options: FitOptions, need: Needs, gpu: int, context: int, max_context: int, max_batch: int
) -> dict[str, Any]:
    """What would fit when the plan does not: the fewest GPUs (a tensor-parallel degree that divides the heads), a
    smaller dtype for the weights on the GPUs given, the largest context at this batch, the largest batch here."""
    from pipeline.cost import plan as terms

    forward: dict[str, Any] = {"max_context_at_this_batch": max_context, "max_batch_at_this_context": max_batch}

    def fits(**change: Any) -> bool:
        other = dataclasses.replace(options, measure=False, **change)
        return need.replaced(other)(context, options.batch)[0] <= need.budget(gpu)

    for tp in (2, 4, 8, 16, 32, 64):
        if options.engine == "llama.cpp":  # it splits layers over GPUs, not tensors
            if fits(gpus=tp):
                forward["fewest_gpus"] = {"gpus": tp, "tp": 1}
                break
            continue
        try:
            terms.tensor_parallel_check(m.config, tp, m.name)
        except PipelineError:
            continue
        if fits(tp=tp, gpus=tp, ep=1):
            forward["fewest_gpus"] = {"gpus": tp, "tp": tp}
            break
    for dtype in ("fp8", "int4"):
        if fits(dtype=dtype):
            forward["dtype"] = dtype
            break
    return forward
