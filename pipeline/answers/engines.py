"""hmp fit --engine vllm | llama.cpp: the same model's terms (pipeline.answers.fit's Needs: the weights as stored,
the layers' caches, the forward measured on fake tensors) put together as each engine allocates them, by the rules
of pipeline.cost.engines. Each class answers as Needs does: need(context, batch) -> (bytes one GPU holds, the
terms), budget(gpu) (what may be used of a GPU), detail(...) (the engine's own terms), replaced(options)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.core.errors import PipelineError


def vllm_sizes(options: Any, gpu: int) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs): as given, else vllm serve's defaults for this GPU."""
    from pipeline.cost import engines

    tokens, seqs = engines.vllm_batch_defaults(gpu)
    tokens, seqs = options.max_num_batched_tokens or tokens, options.max_num_seqs or seqs
    for flag, value in (("--max-num-batched-tokens", tokens), ("--max-num-seqs", seqs)):
        if value < 1:
            raise PipelineError(f"{flag} {value}: at least 1")
    return tokens, seqs


class Vllm:
    """vLLM: the weights, the profile run's peak (a forward of max_num_batched_tokens tokens and the sampler), the
    CUDA graphs' pool and the CUDA context take their share of gpu_memory_utilization × the GPU; the pages of the
    KV cache take the rest, and the plan fits when the batch's pages do."""

    def __init__(self, base: Any, options: Any, gpu: int):
        from pipeline.cost import engines
        from pipeline.cost.plan import DTYPE_BYTES

        self.base, self.options, self.gpu = base, options, gpu
        util = options.gpu_memory_utilization
        if not 0 < util <= 1:
            raise PipelineError(f"--gpu-memory-utilization {util}: a share of the GPU's memory, above 0 and at most 1")
        self.tokens, self.seqs = vllm_sizes(options, gpu)
        run = base.measured_at  # measured as one sequence of `run` tokens; the profile's activations follow them
        per_token = base.per_sequence(run)[0] / run
        self.profile = int(per_token * self.tokens)
        self.graphs = int(per_token * min(engines.VLLM_GRAPH_TOKENS, self.tokens))
        vocab = int(getattr(base.text, "vocab_size", 0) or 0)
        self.sampler = engines.vllm_sampler(min(self.seqs, self.tokens), vocab, DTYPE_BYTES[base.compute])
        self.stored, self.weights = _loaded(base, options, "vllm")
        self.overhead, self.kv_bytes = base.overhead, base.kv_bytes
        self.per_sequence, self.cache_from = base.per_sequence, base.cache_from
        runner = base.runner
        blocks = f"{len(runner.kept)} of {runner.depth} blocks" if runner is not None and runner.kept else "every block"
        how = (
            f"measured on fake tensors as transformers' modules run {run:,} tokens with a fused attention kernel "
            f"({blocks}), per token"
            if runner is not None
            else base.activations_from
        )
        self.activations_from = (
            f"vLLM's profile run: a forward of {self.tokens:,} tokens (max_num_batched_tokens; chunked prefill runs "
            f"no more at once), {how}; its sampler over {min(self.seqs, self.tokens):,} requests (logits in "
            f"{base.compute}, in float32 and as probabilities); the CUDA graphs' pool (the forward at "
            f"{min(engines.VLLM_GRAPH_TOKENS, self.tokens):,} tokens)"
        )

    def budget(self, gpu: int) -> int:
        return int(gpu * self.options.gpu_memory_utilization)

    def _cache(self, ctx: int, b: int) -> int:
        from pipeline.cost import engines

        return engines.vllm_cache(self.base.layers, ctx, b, self.kv_bytes, self.tokens)

    def __call__(self, ctx: int, b: int) -> tuple[int, dict]:
        _, parts = self.base(ctx, b)
        parts.update(self.weights)
        f, tp = parts, self.options.tp
        pages = self._cache(ctx, b) if self.cache_from == "formula" else 0
        parts["cache"] = dataclasses.replace(parts["cache"], at=pages)
        acts = self.profile + self.graphs
        per_gpu = f["weights_per_gpu"] + (pages if self.base.latent else pages / tp) + acts / tp + self.sampler
        parts.update(activations=acts + self.sampler, decode=None, phase="profile run, then the KV cache's pages")
        return int(per_gpu + self.overhead), parts

    def detail(self, ctx: int, b: int) -> dict[str, Any]:
        from pipeline.cost import engines

        tp = 1 if self.base.latent else self.options.tp
        fixed = int(self(ctx, b)[0] - self._cache(ctx, b) / tp)
        budget = self.budget(self.gpu) - fixed
        one = self._cache(ctx, 1) / tp
        return {
            "gpu_memory_utilization": self.options.gpu_memory_utilization,
            "max_num_batched_tokens": self.tokens,
            "max_num_seqs": self.seqs,
            "block_size": engines.VLLM_BLOCK,
            "profile_activation_bytes": self.profile,
            "sampler_bytes": self.sampler,
            "cuda_graph_bytes": self.graphs,
            "kv_cache_budget_bytes": max(budget, 0),
            "kv_cache_bytes_per_sequence": int(one),
            "max_concurrency": int(max(budget, 0) // one) if one else None,
        }

    def replaced(self, options: Any) -> Vllm:
        return Vllm(self.base.replaced(dataclasses.replace(options, batch=1)), options, self.gpu)

    def tracked(self, context: int, batch: int) -> dict[str, int] | None:
        return self.base.tracked(self.base.measured_at, 1)


class LlamaCpp:
    """llama.cpp: the offloaded layers' weights and caches split over the GPUs by layer, a compute buffer and the
    CUDA context on each; the input embedding and the layers left on the host are host memory."""

    def __init__(self, base: Any, options: Any):
        from pipeline.cost import engines

        if options.tp > 1 or options.ep > 1:
            raise PipelineError("--engine llama.cpp splits the layers over --gpus (its --split-mode layer), not "
                                "tensors or experts: leave --tp and --ep at 1")  # fmt: skip
        self.base, self.options = base, options
        self.type_bytes = engines.llama_cache_type(options.cache_type)
        if options.n_gpu_layers is not None and options.n_gpu_layers < 0:
            raise PipelineError(f"--n-gpu-layers {options.n_gpu_layers}: 0 or more layers")
        n = len(base.layers)
        self.stored, self.weights = _loaded(base, options, "llama.cpp")
        self.on_gpu, self.on_host, self.offloaded = engines.llama_offload(
            base.params, self.stored.bytes, n, options.n_gpu_layers
        )
        text = base.text
        hidden = int(getattr(text, "hidden_size", 0) or 0)
        routed = getattr(text, "moe_intermediate_size", None) and getattr(text, "num_experts_per_tok", None)
        inner = int(routed * text.num_experts_per_tok if routed else getattr(text, "intermediate_size", 0) or 0)
        self.compute = engines.llama_compute(int(getattr(text, "vocab_size", 0) or 0), hidden, inner)
        self.overhead, self.kv_bytes = base.overhead, self.type_bytes
        self.per_sequence, self.cache_from = base.per_sequence, base.cache_from
        self.activations_from = (
            f"llama.cpp's compute buffer, estimated: the widest step of its graph at {engines.LLAMA_UBATCH} tokens "
            f"(n_ubatch) in float32, max(vocabulary, 2 × {inner:,}) + 2 × {hidden:,} values per token, flash "
            "attention on; llama.cpp prints its own as 'compute buffer size' when it loads the model"
        )

    def budget(self, gpu: int) -> int:
        return gpu

    def _caches(self, ctx: int, b: int) -> tuple[float, float]:
        from pipeline.cost import engines

        layers = engines.llama_cache(self.base.layers, ctx, b, self.type_bytes)
        first = len(layers) - self.offloaded
        return float(sum(layers[first:])), float(sum(layers[:first]))

    def __call__(self, ctx: int, b: int) -> tuple[int, dict]:
        from pipeline.cost import engines

        _, parts = self.base(ctx, b)
        gpu_cache, host_cache = self._caches(ctx, b)
        gpus = self.options.gpus
        per_token = int(sum(layer.kv_per_token for layer in self.base.layers) * self.type_bytes)
        full = per_token * engines.llama_cells(ctx, b) * b
        parts["cache"] = dataclasses.replace(parts["cache"], at=int(gpu_cache + host_cache), per_token=per_token,
                                             full_length=full)  # fmt: skip
        parts.update(self.weights)
        parts.update(activations=self.compute, decode=None, phase="compute graph", weights_per_gpu=self.on_gpu / gpus)
        per_gpu = (self.on_gpu + gpu_cache) / gpus + self.compute + self.overhead
        return int(per_gpu), parts

    def detail(self, ctx: int, b: int) -> dict[str, Any]:
        from pipeline.cost import engines

        gpu_cache, host_cache = self._caches(ctx, b)
        return {
            "cache_type": self.options.cache_type,
            "n_ctx": engines.pad(ctx * b),
            "cells_per_slot": engines.llama_cells(ctx, b),
            "slots": b,
            "n_gpu_layers": self.offloaded,
            "layers": len(self.base.layers),
            "weights_on_gpus_bytes": int(self.on_gpu),
            "kv_cache_on_gpus_bytes": int(gpu_cache),
            "compute_buffer_bytes": self.compute,
            "host_bytes": int(self.on_host + host_cache),
        }

    def replaced(self, options: Any) -> LlamaCpp:
        return LlamaCpp(self.base.replaced(options), options)

    def tracked(self, context: int, batch: int) -> None:
        return None  # llama.cpp's graph is not PyTorch's: nothing to run under MemTracker


def _loaded(base: Any, options: Any, engine: str) -> tuple[Any, dict[str, float]]:
    """The weights as the engine holds them (pipeline.cost.engines.as_loaded), and their lines of the plan."""
    from pipeline.cost import engines, stored

    held = engines.as_loaded(base.params, base.stored, engine, options.dtype is not None)
    weights, per_gpu = stored.per_gpu(held.bytes, base.params["component"], options.tp, options.ep)
    return held, {"weights": weights, "weights_per_gpu": per_gpu}
