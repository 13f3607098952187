"""How a serving engine allocates a model's memory: vLLM's and llama.cpp's rules, each from the engine's source.

vLLM (vllm/v1/worker/gpu_worker.py `determine_available_memory`; vllm/v1/kv_cache_interface.py):
- at start it loads the weights, runs one profile forward of `max_num_batched_tokens` tokens (chunked prefill: no
  step ever runs more, whatever the context or the batch) and the sampler over `min(max_num_seqs, those tokens)`
  requests, takes PyTorch's peak plus the memory allocated outside PyTorch (the CUDA context), and gives the KV
  cache whatever is left of `gpu_memory_utilization` × the GPU's memory;
- the cache is paged in blocks of `block_size` tokens (16 on CUDA): a full-attention layer takes
  ⌈max_model_len / 16⌉ pages of 16 × (K + V values) per sequence (FullAttentionSpec.max_memory_usage_bytes), a
  sliding-window layer ⌈min(window − 1 + max_num_batched_tokens, max_model_len) / 16⌉ + 1 pages
  (SlidingWindowSpec), a state-space layer one page of its state (MambaSpec, mamba_cache_mode none);
- the batch defaults are `vllm serve`'s (EngineArgs.get_batch_defaults, UsageContext.OPENAI_API_SERVER): 8,192
  batched tokens and 1,024 sequences on a GPU of at least 70 GiB (other than an A100), else 2,048 and 256;
- the sampler holds the logits in the model's dtype, their float32 copy (Sampler: `logits.to(torch.float32)`) and
  float32 probabilities (its random sampling's softmax), one row per request;
- CUDA graphs (vLLM ≥ 0.19 profiles their memory inside the budget, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS): the
  graphs share one memory pool, so it holds the intermediates of the largest captured batch, 512 tokens by default
  (CompilationConfig.max_cudagraph_capture_size); estimated as the forward's activations at that many tokens.

llama.cpp (src/llama-context.cpp, src/llama-kv-cache.cpp, src/llama-kv-cache-iswa.cpp, src/llama-model.cpp):
- `-c` is the context of all slots together; it is padded to a multiple of 256 (`GGML_PAD(cparams.n_ctx, 256)`)
  and each of `-np` slots gets n_ctx / n_seq, padded to 256 again; a sliding-window layer keeps
  GGML_PAD(min(cells, n_swa + n_ubatch), 256) cells per slot (unless --swa-full);
- K and V are stored per cell in the cache type (`-ctk`/`-ctv`, f16 by default; ggml's blocks: q8_0 is 34 bytes
  per 32 values, q4_0 18, ...); a recurrent layer keeps its conv and scan state in float32 per slot;
- `-ngl N` offloads the last N repeating layers with their caches (offload_kqv); the output layer goes too when
  N exceeds the layer count; the token embedding (the input layer) always stays in host memory, and a tied output
  head is the same tensor loaded a second time on the GPU;
- the compute buffer is reserved for the widest graph at n_ubatch (512) tokens, in float32: estimated here as the
  largest of the logits (vocabulary) and the MLP's two inner projections, beside two hidden states, with flash
  attention (llama.cpp's `-fa auto` turns it on with CUDA), so no n_kv × n_ubatch score matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.core.errors import PipelineError

ENGINES = ("transformers", "vllm", "llama.cpp")
VLLM_BLOCK = 16  # CacheConfig.block_size on CUDA
VLLM_UTILIZATION = 0.9  # CacheConfig.gpu_memory_utilization
VLLM_GRAPH_TOKENS = 512  # CompilationConfig.max_cudagraph_capture_size, by default
LLAMA_PAD = 256  # llama-context.cpp: GGML_PAD(n_ctx, 256), and the SWA cache's padding
LLAMA_UBATCH = 512  # common.h: n_ubatch
# ggml's type traits: bytes per value of each cache type llama.cpp's -ctk/-ctv takes (block bytes / block values)
CACHE_TYPES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
               "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}  # fmt: skip


def checked(engine: str) -> str:
    if engine not in ENGINES:
        raise PipelineError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    return engine


def vllm_batch_defaults(gpu_bytes: int) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) as `vllm serve` sets them for a GPU of this memory."""
    return (8192, 1024) if gpu_bytes >= 70 * 2**30 else (2048, 256)


def _pages(tokens: int, block: int) -> int:
    return -(-tokens // block)


def vllm_cache(layers: Sequence[Any], context: int, batch: int, kv_bytes: float, batched_tokens: int,
               block: int = VLLM_BLOCK) -> int:  # fmt: skip
    """Bytes of the pages `batch` sequences of `context` tokens take at most, each layer by its spec."""
    per_sequence = 0.0
    for layer in layers:
        page = block * layer.kv_per_token * kv_bytes
        if layer.kv_per_token and layer.window:
            per_sequence += (_pages(min(layer.window - 1 + batched_tokens, context), block) + 1) * page
        elif layer.kv_per_token:
            per_sequence += _pages(context, block) * page
        per_sequence += (layer.state or 0) * kv_bytes + layer.cross_kv_per_input_token * context * kv_bytes
    return int(batch * per_sequence)


def vllm_sampler(rows: int, vocab: int, compute_bytes: float) -> int:
    """The profile run's sampler: logits in the model's dtype, a float32 copy and float32 probabilities."""
    return int(rows * vocab * (compute_bytes + 4 + 4))


def pad(n: int, to: int = LLAMA_PAD) -> int:
    return -(-n // to) * to


def llama_cache_type(name: str) -> float:
    if name not in CACHE_TYPES:
        raise PipelineError(f"--cache-type {name!r}: one of llama.cpp's {', '.join(CACHE_TYPES)}")
    return CACHE_TYPES[name]


def llama_cells(context: int, batch: int) -> int:
    """Cells per slot: -c (context × slots) padded to 256, divided over the slots and padded again."""
    return pad(pad(context * batch) // batch)


def llama_cache(layers: Sequence[Any], context: int, batch: int, type_bytes: float, ubatch: int = LLAMA_UBATCH
                ) -> list[float]:  # fmt: skip
    """Bytes each layer's cache takes on `batch` slots of `context` tokens (K and V in the cache type; recurrent
    state in float32)."""
    cells = llama_cells(context, batch)
    out = []
    for layer in layers:
        kept = pad(min(cells, layer.window + ubatch)) if layer.window else cells
        state = (layer.state or 0) * 4.0
        out.append(batch * (kept * layer.kv_per_token * type_bytes + state))
    return out


def llama_compute(vocab: int, hidden: int, inner: int, ubatch: int = LLAMA_UBATCH) -> int:
    """The compute buffer's estimate: the widest step of the graph at n_ubatch tokens in float32."""
    return int(ubatch * 4 * (max(vocab, 2 * inner) + 2 * hidden))


def llama_offload(rows: Any, per_row: Any, n_layers: int, n_gpu_layers: int | None) -> tuple[float, float, int]:
    """(bytes on the GPUs, bytes in host memory, layers offloaded) as llama.cpp places the weights: the last
    n_gpu_layers repeating layers, the output layer (and what is outside the layers but the input) when every
    layer is offloaded, the input embedding on the host (a tied head: on both)."""
    offloaded = n_layers if n_gpu_layers is None else max(0, min(int(n_gpu_layers), n_layers))
    layer = rows["layer"]
    numbered = layer.notna() & (rows["role"] != "embedding") & (rows["tower"].fillna("text") == "text")
    on_gpu = numbered & (layer.fillna(-1).astype(float) >= n_layers - offloaded)
    head = rows["is_output_embedding"].astype(bool)
    inputs = rows["is_input_embedding"].astype(bool) | ((rows["role"] == "embedding") & ~numbered & ~head)
    outputs = head | (~numbered & ~inputs)
    all_on = n_gpu_layers is None or int(n_gpu_layers) > n_layers
    gpu = float(per_row[on_gpu].sum()) + (float(per_row[outputs].sum()) if all_on else 0.0)
    host = float(per_row[numbered & ~on_gpu].sum()) + float(per_row[inputs].sum())
    host += 0.0 if all_on else float(per_row[outputs & ~inputs].sum())
    return gpu, host, offloaded


GGUF_NAMES = ("token_embd.", "blk.", "output_norm.", "output.")  # gguf-py's tensor names, as llama.cpp writes them


def as_loaded(params: Any, stored: Any, engine: str, dtype_given: bool) -> Any:
    """The weights as the engine holds them, where that is not as stored (a Stored, pipeline.cost.stored):
    - vLLM with --dtype auto runs a float32 checkpoint in float16 (ModelConfig: "FP16 precision for FP32 and FP16
      models, BF16 precision for BF16 models"): 2 bytes for each float32 value;
    - llama.cpp runs GGUF files; any other source as convert_hf_to_gguf.py writes it by default (--outtype f16):
      tensors of two or more dimensions in f16, one-dimensional ones (norms, biases) in f32."""
    import dataclasses

    if dtype_given:
        return stored
    if engine == "vllm" and stored.source == "checkpoint":
        wide = params["stored_dtype"].astype(str).str.upper().isin(["F32", "FLOAT32"])
        if wide.any():
            per_row = stored.bytes.where(~wide, params["numel"] * 2)
            how = stored.how + "; float32 values run in float16 (vLLM's --dtype auto)"
            return dataclasses.replace(stored, bytes=per_row, how=how)
    if engine == "llama.cpp":
        keys = params["checkpoint_key"].fillna("").astype(str)
        if stored.source == "checkpoint" and keys.str.startswith(GGUF_NAMES).any():
            return stored  # a GGUF file: its own types
        if stored.quantized:
            return stored
        flat = params["shape"].astype(str).str.count("x") == 0
        per_row = (params["numel"] * 2).where(~flat, params["numel"] * 4)
        how = "as convert_hf_to_gguf.py writes it by default (--outtype f16): matrices in f16, 1-D tensors in f32"
        return dataclasses.replace(stored, bytes=per_row, how=how, source="convert_hf_to_gguf")
    return stored
