"""What one model needs of a GPU, term by term, as an engine allocates it: Needs (transformers' own: the weights as
stored, the caches, the prefill and the decoding step measured on fake tensors, a fine-tuning step), engine_needs
(vLLM's and llama.cpp's, pipeline.answers.engines, over the same terms), and memory_curve, those against the context
for the pipeline's sweep (results/fit.csv). pipeline.answers.fit puts them into hmp fit's plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.answers.fit_options import FitOptions
from pipeline.core.errors import PipelineError

# QLoRA (Dettmers et al. 2023, section 3): NF4 weights with double quantization take 4.127 bits per parameter
QLORA_BITS = 4.127
ADAM_BYTES = 16  # mixed-precision Adam per trainable parameter (Rajbhandari et al. 2020, ZeRO, section 3)
# What a CUDA process holds beyond PyTorch's allocations, per GPU: the CUDA context and the kernels it loads
# ("When a model is loaded to the GPU the kernels are also loaded, which can take up 1-2GB of memory":
# transformers' docs, "Model training anatomy"; the lower figure), and cuBLASLt's workspace on Hopper (32 MiB,
# PyTorch #120925, NVIDIA's recommended size for cublasSetWorkspace).
OVERHEAD = {"CUDA context and kernels": 10**9, "cuBLASLt workspace": 32 * 2**20}
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")  # the prefill runs in --dtype if one of these, else bfloat16


@dataclasses.dataclass(frozen=True)
class Model:
    """What the plan needs of the counted model."""

    name: str
    shown: str
    inv: Any
    row: dict[str, Any]
    model: Any
    config: Any


def engine_needs(m: Model, options: FitOptions, kv_bytes: float, context: int, limit: int | None, gpu: int):
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


class Needs:
    """need(context, batch) -> (bytes one GPU holds, the terms): the weights, LoRA and the optimizer are fixed; the
    caches, the state and the activations grow with the context and the batch."""

    def __init__(self, m: Model, options: FitOptions, kv_bytes: float, context: int, per_sequence=None):
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
            runner = prefill.runner(self.m.model, self.compute, self.causal, attention=kernel)
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
            + _prompted(runner, self.causal)
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
        try:
            tracked = prefill.tracker_peak(self.runner, batch, n)
        except Exception:  # noqa: BLE001 - MemTracker cannot follow this model: the plan stands, unmeasured
            return None
        return {**tracked, "cache": run.cache, "context": n, "live": run.activations}


CURVE_COLUMNS = [
    "model",
    "engine",
    "context",
    "batch",
    "weights_bytes",
    "kv_cache_bytes",
    "activation_bytes",
    "overhead_bytes",
    "bytes_per_gpu",
    "budget_bytes",
    "gpu_memory_bytes",
    "fits",
    "max_context",
]


def _prompted(runner: Any, causal: bool) -> str:
    """What the prompt was, where it is not a causal model's tokens alone."""
    if runner.seq2seq:
        given = "a spectrogram" if runner.source_input == "input_features" else "tokens"
        return f"; the encoder given {given} of its max_source_positions (else the context's), its output held"
    return "" if causal else "; a prompt of text alone (no image or audio: their tokens count as text tokens)"


def memory_curve(name: str, inv: Any, row: dict, model: Any, config: Any, settings: Mapping[str, Any]) -> Any:
    """Per engine, one GPU's bytes against the context (powers of two from 128 up to the model's own positions, and
    those), at the batch and on the GPU of the cost settings, measured once per engine at the longest context; and
    the longest context that fits. The report's "Will it fit" figure (results/fit.csv). Empty for a model that
    generates nothing or states no context; an engine whose plan cannot be made for it is left out, and said."""
    import logging

    import pandas as pd

    from pipeline.cost import cache, engines
    from pipeline.cost import plan as terms

    m = Model(name, name, inv, row, model, config)
    limit, _ = cache.max_positions(model, config)
    gpu = terms.parse_memory(settings.get("gpu_memory", "80GB"), "cost.gpu_memory")
    batch = int(settings["batch"])
    if not limit or not cache.layers(model, config, build_causal(model, config)):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    contexts = sorted({*(1 << k for k in range(7, 25) if 1 << k < limit), limit})
    rows = []
    for engine in engines.ENGINES:
        options = FitOptions(context=limit, batch=batch, gpu_memory=str(settings.get("gpu_memory", "80GB")),
                             engine=engine)  # fmt: skip
        try:
            need = engine_needs(m, options, 2.0, limit, limit, gpu)
        except PipelineError as exc:
            logging.getLogger("fit").warning("%s: no %s plan (%s)", name, engine, exc)
            continue
        budget = need.budget(gpu)
        longest = terms.largest(lambda n, need=need, budget=budget: need(n, batch)[0] <= budget, limit)
        for n in contexts:
            per_gpu, parts = need(n, batch)
            rows.append({"model": name, "engine": engine, "context": n, "batch": batch,
                         "weights_bytes": int(parts["weights_per_gpu"]), "kv_cache_bytes": int(parts["cache"].at),
                         "activation_bytes": int(max(parts["activations"], parts["decode"] or 0)),
                         "overhead_bytes": int(need.overhead), "bytes_per_gpu": per_gpu, "budget_bytes": budget,
                         "gpu_memory_bytes": gpu, "fits": per_gpu <= budget, "max_context": longest})  # fmt: skip
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def build_causal(model: Any, config: Any) -> bool:
    from pipeline.model import build

    return build.is_causal_class(type(model), config)
