"""Will it fit? One call (plan) from a source and typed options (FitOptions) to a typed memory plan (Plan), per GPU
and in total, as the transformers engine allocates it. Each term's formula and source is pipeline.cost's: the
weights as stored (cost.stored), the caches (cost.cache, cost.plan), what the prefill holds beyond them, measured
on fake tensors (cost.prefill), and the runtime's own overhead (OVERHEAD). This module puts them together for one
model, checks the options against it, and searches the largest context and batch that fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pipeline.answers.fit_options import FitOptions, Plan
from pipeline.core.errors import PipelineError

__all__ = ["FitOptions", "Plan", "plan"]

# QLoRA (Dettmers et al. 2023, section 3): NF4 weights with double quantization take 4.127 bits per parameter
QLORA_BITS = 4.127
ADAM_BYTES = 16  # mixed-precision Adam per trainable parameter (Rajbhandari et al. 2020, ZeRO, section 3)
MAX_SEARCH = 1 << 24  # the longest context or largest batch searched
DEFAULT_CONTEXT = 4096  # the context of a model whose positions set no limit (T5's relative positions, Mamba)
# What a CUDA process holds beyond PyTorch's allocations, per GPU: the CUDA context and the kernels it loads
# ("When a model is loaded to the GPU the kernels are also loaded, which can take up 1-2GB of memory":
# transformers' docs, "Model training anatomy"; the lower figure), and cuBLASLt's workspace on Hopper (32 MiB,
# PyTorch #120925, NVIDIA's recommended size for cublasSetWorkspace).
OVERHEAD = {"CUDA context and kernels": 10**9, "cuBLASLt workspace": 32 * 2**20}
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")  # the prefill runs in --dtype if one of these, else bfloat16


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
    if options.dtype is not None:
        terms.dtype_bytes(options.dtype, "--dtype")
    m = _counted(source, options)
    _check_parallel(m, options)
    context, limit, context_from = _context(m, options)
    if options.batch < 1:
        raise PipelineError(f"--batch {options.batch}: a batch is at least 1 sequence")
    need = _engine_needs(m, options, kv_bytes, context, limit, gpu)
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


def _engine_needs(m: _Model, options: FitOptions, kv_bytes: float, context: int, limit: int | None, gpu: int):
    """The plan's terms as the engine asked allocates them: transformers' own (Needs), or vLLM's and llama.cpp's
    over the same model (pipeline.answers.engines)."""
    from pipeline.answers import engines
    from pipeline.cost.engines import checked

    if checked(options.engine) == "transformers":
        return Needs(m, options, kv_bytes, context)
    if options.train:
        raise PipelineError(f"--engine {options.engine} serves a model; --train plans fine-tuning in PyTorch (its "
                            "default engine, transformers)")  # fmt: skip
    if options.engine == "llama.cpp":  # nothing run on fake tensors: llama.cpp's graph is not PyTorch's
        return engines.LlamaCpp(Needs(m, options, kv_bytes, context, lambda n: (0, None)), options)
    tokens, _ = engines.vllm_sizes(options, gpu)
    run = min(tokens, limit or tokens)  # its profile splits the tokens over requests: measured as one sequence
    return engines.Vllm(Needs(m, dataclasses.replace(options, batch=1), kv_bytes, run), options, gpu)


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


class Needs:
    """need(context, batch) -> (bytes one GPU holds, the terms): the weights, LoRA and the optimizer are fixed; the
    caches, the state and the activations grow with the context and the batch."""

    def __init__(self, m: _Model, options: FitOptions, kv_bytes: float, context: int, per_sequence=None):
        from pipeline.cost import cache, stored
        from pipeline.cost import plan as terms
        from pipeline.model import build

        self.m, self.options, self.kv_bytes = m, options, kv_bytes
        tp, ep, train = options.tp, options.ep, options.train
        self.text = cache.text_config(m.config)
        self.causal = build.is_causal_class(type(m.model), m.config)
        self.layers = cache.layers(m.model, m.config, self.causal)
        total = int(m.row["total"])
        p = m.inv[m.inv["kind"] == "parameter"]
        self.params, self.stored = p, stored.weights(p, m.config, options.dtype)
        per_row = self.stored.bytes
        if train == "qlora":  # the linear matrices in 4-bit NF4, every other tensor as stored
            per_row = per_row.where(p["role"] != "matrix", p["numel"] * QLORA_BITS / 8)
        weights, weights_per_gpu = stored.per_gpu(per_row, p["component"], tp, ep)
        lora = (0, 0)
        if train in ("lora", "qlora"):
            lora = terms.lora_params(m.model, list(options.lora_targets), int(options.lora_rank))
        # mixed-precision Adam: 16 B per trainable parameter, less the weights already counted when all train
        optimizer = total * ADAM_BYTES - weights if train == "full" else lora[0] * ADAM_BYTES
        self.latent = bool(getattr(self.text, "kv_lora_rank", None))  # MLA's latent is not split across a TP group
        self.fixed = {"weights": weights, "weights_per_gpu": weights_per_gpu, "lora": lora, "optimizer": optimizer}
        self.overhead = sum(OVERHEAD.values())
        self.compute = options.dtype if options.dtype in COMPUTE_DTYPES else "bfloat16"
        self.runner, self.activations_from = None, "training: Korthikanti et al. 2022" if train else ""
        self.cache_from = "formula"  # the layers' own sizes (pipeline.cost.cache); "none" for a class that keeps none
        self.measured_at = context  # the largest context run on fake tensors
        self.window = max((layer.window for layer in self.layers if layer.window), default=None)
        self.scans = any(layer.mixer for layer in self.layers)  # state-space or recurrent mixers: scaling.sizes
        if per_sequence is not None:  # another plan of the same model at the same size: measured there
            self.per_sequence = per_sequence
        else:
            self.per_sequence = self._prefill(context) if not train else self._training(context)

    def _prefill(self, context: int) -> Callable[[int], tuple[int, int | None]]:
        """Bytes one sequence of n tokens holds beyond the weights and the cache at the prefill's peak and at the
        peak of the decoding step after it, measured on fake tensors (_sizes: where, and how other sizes follow);
        else the gated MLP's peak, 4 hidden states and 3 intermediate ones per token, the step not apart."""
        from pipeline.cost import prefill, scaling

        batch = self.options.batch
        sizes = scaling.sizes(context, self.window, self.scans)
        try:
            kernel = prefill.KERNEL if self.options.engine == "vllm" else prefill.ATTENTION  # its kernels: fused
            runner = prefill.Runner(self.m.model, self.compute, self.causal, attention=kernel)
            self.runner = runner  # (its blocks run are what _beyond_cache reads)
            # the decoding step at every size for a model that scans (one token: cheap), else at the first only
            runs = [runner.measure(batch, n, step=i == 0 or self.scans) for i, n in enumerate(sizes)]
            if runs[0].cache == 0:  # its transformers class returns no cache from a prefill
                self.cache_from = (
                    f"none: {type(self.m.model).__name__} returns no cache; each token recomputes the prefix"
                )
        except prefill.Unmeasured as exc:
            self.runner = None  # --measure then has nothing to run either
            hidden = int(getattr(self.text, "hidden_size", 0) or 0)
            inner = int(getattr(self.text, "intermediate_size", 0) or 4 * hidden)
            size = 4 if self.compute == "float32" else 2
            self.activations_from = (
                f"not measured ({exc}): estimated as the gated MLP's peak, (4 × {hidden:,} + 3 × {inner:,}) values "
                "per token; the formula stands alone"
            )
            return lambda n: (n * size * (4 * hidden + 3 * inner), None)
        self.measured_at = max(sizes)
        prefill_at = scaling.through([(r.context, self._beyond_cache(r, r.activations) / batch) for r in runs])
        decode_at = None
        stepped = [r for r in runs if r.decode is not None]  # every size, or the first only: a·n through it
        if runs[0].decode is not None and (len(stepped) == len(runs) or not self.scans):
            decode_at = scaling.through([(r.context, self._beyond_cache(r, r.decode) / batch) for r in stepped])
        blocks = f"{len(runner.kept)} of {runner.depth} blocks" if runner.kept else "every block"
        self.activations_from = (
            f"measured: the transformers prefill of {batch} × {scaling.listed(sizes)} tokens on fake tensors "
            f"({self.compute}, {self.runner.attention} attention, {blocks}), and the decoding step after it"
            + ("" if decode_at else " (not measured: the step does not run on fake tensors)")
            + f", beyond the weights and the cache; {scaling.followed(context, sizes)}"
        )
        return lambda n: (prefill_at(n), decode_at(n) if decode_at else None)

    def _training(self, context: int) -> Callable[[int], tuple[int, None]] | None:
        """Bytes one sequence of n tokens holds at the peak of a fine-tuning step beyond the weights, their
        gradients and the optimizer's states: measured on fake tensors (pipeline.cost.training) at the context
        asked and at half of it, a·n + b·n² through both; None where the step cannot run there."""
        from pipeline.cost import scaling, training
        from pipeline.cost.prefill import Unmeasured

        o, batch = self.options, self.options.batch
        lora = (list(o.lora_targets), int(o.lora_rank)) if o.train in ("lora", "qlora") else None
        sizes = scaling.sizes(context, self.window, self.scans)
        try:
            points = [training.step_peak(self.m.model, batch, n, o.train, lora, bool(o.checkpointing))
                      for n in sizes]  # fmt: skip
        except Unmeasured as exc:
            self.activations_from = (
                f"training, not measured ({exc}): Korthikanti et al. 2022, sbh(34 + 5as/h) per layer, 2sbh with "
                "checkpointing; the formula stands alone"
            )
            return None
        # the gradients are a line apart
        at = scaling.through(
            [(n, (peak - gradients) / batch) for n, (peak, gradients) in zip(sizes, points, strict=True)]
        )
        self.activations_from = (
            f"measured: one {o.train} fine-tuning step of {batch} × {scaling.listed(sizes)} tokens on fake tensors as "
            f"Trainer runs it (bf16 autocast, fused AdamW{', activation checkpointing' if o.checkpointing else ''}), "
            f"beyond the weights, gradients and optimizer states; {scaling.followed(context, sizes)}"
        )
        return lambda n: (at(n), None)

    def _beyond_cache(self, measured: Any, live: int) -> int:
        """The prefill's live bytes at its peak less the cache and state the plan's own lines hold (in the compute
        dtype, as transformers keeps them). What transformers holds beyond those stays here: after a prefill a
        sliding-window layer keeps a view of the whole prompt's keys and values, so their storage lives on."""
        from pipeline.cost import plan as terms

        size = terms.DTYPE_BYTES[self.compute]
        n, b = measured.context, measured.batch
        if measured.cache == 0:  # a class that returns no cache: all it holds is the prefill's
            return live
        source = getattr(self.m.config, "max_source_positions", None) or n
        kept = self.runner.kept if self.runner is not None else None
        run = [self.layers[i] for i in kept] if kept and len(self.layers) == self.runner.depth else self.layers
        ran = terms.kv_cache(run, n, b, size, source)  # the blocks run: each holds the whole prompt after it
        every = terms.kv_cache(self.layers, n, b, size, source)
        transient = live - ran.full_length - (ran.state or 0) * b  # what no block keeps: the same at any depth
        return max(transient + every.full_length - every.at, 0)

    def budget(self, gpu: int) -> int:
        return gpu

    def detail(self, context: int, batch: int) -> None:
        return None

    def replaced(self, options: FitOptions) -> Needs:
        """The same model's terms under other options (the way forward), measured once."""
        return Needs(self.m, options, self.kv_bytes, self.measured_at, self.per_sequence)

    def __call__(self, ctx: int, b: int) -> tuple[int, dict]:
        from pipeline.cost import plan as terms

        tp, train = self.options.tp, self.options.train
        source_positions = getattr(self.m.config, "max_source_positions", None)
        c = terms.kv_cache(self.layers, ctx, b, self.kv_bytes, source_positions or ctx)
        if self.cache_from != "formula":
            c = terms.Cache(per_token=0, at=0, full_length=0, state=0, cross=0)
        state = 0 if train else (c.state or 0) * b  # training keeps no cache or state (use_cache off)
        if train and self.per_sequence is None:  # a step that cannot run on fake tensors: Korthikanti's formula
            hidden = getattr(self.text, "hidden_size", 0) or 0
            heads = getattr(self.text, "num_attention_heads", 0) or 0
            n_layers = len(self.layers) or int(getattr(self.text, "num_hidden_layers", 0) or 0)
            acts = terms.activation_bytes(ctx, b, hidden, heads, n_layers, bool(self.options.checkpointing))
            decode = None
        else:
            prefill_at, decode_at = self.per_sequence(ctx)
            acts, decode = prefill_at * b, None if decode_at is None else decode_at * b
        kv_gpu = 0 if train else c.at if self.latent else c.at / tp  # training runs without a KV cache (use_cache off)
        f = self.fixed
        step = max(acts, decode or 0)  # the higher of the prefill's peak and the decoding step's
        per_gpu = f["weights_per_gpu"] + kv_gpu + state / tp + (f["optimizer"] + step) / tp + self.overhead
        terms_ = {"activations": int(acts), "decode": None if decode is None else int(decode)}
        return int(per_gpu), {"cache": c, "state": state, **terms_, "latent": self.latent, **f}

    def tracked(self, context: int, batch: int) -> dict[str, int] | None:
        """MemTracker's peak of the same prefill (hmp fit --measure), beside the plan, and the bytes of the cache
        tensors that prefill returned."""
        from pipeline.cost import prefill

        if self.runner is None:
            return None
        n = self.measured_at  # the same run as the plan's own: its blocks, its size
        run = self.runner.measure(batch, n)
        return {**prefill.tracker_peak(self.runner, batch, n), "cache": run.cache, "context": n,
                "live": run.activations}  # fmt: skip


def _way_forward(
    m: _Model, options: FitOptions, need: Needs, gpu: int, context: int, max_context: int, max_batch: int
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
