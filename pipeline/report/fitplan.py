"""`hmp fit SOURCE`, as text: the plan pipeline.answers.fit gives, one line per term with its formula and source."""

from __future__ import annotations


def fit_text(r: dict) -> str:
    """The plan, one line per term with its formula and its source; the lines add up to the per-GPU total."""
    from pipeline.report.text import gib

    tp, batch = r["tp"], r["batch"]
    split = (
        f" ({gib(r['weights_bytes_per_gpu'])} per GPU: split by heads, columns, rows and vocabulary; norms replicated)"
    )
    if r["latent_attention"]:
        kv_formula = "latent + rotary key per attention layer and token (multi-head latent attention)"
    else:
        kv_formula = "2 × KV heads × head width per attention layer and token"
    kv_split = f", split over {tp} GPUs by KV heads" if tp > 1 and not r["latent_attention"] else ""
    state = r["state_bytes_per_sequence"]
    state_line = (
        [
            f"  state                  {gib(state * batch):>12}  {gib(state)} per sequence × {batch} sequence(s): "
            "state-space layers' conv and recurrent state, whatever the context"
        ]
        if state
        else []
    )
    lora = f"  LoRA: {r['lora_params']:,} parameters on {r['lora_layers']} layers, r·(in + out) each (Hu et al. 2021)"
    training = r["training"]
    lines = [
        f"{r['model']}: {r['total_params']:,} parameters; context {r['context']:,} ({r['context_from']}), "
        f"batch {batch}, {r['gpus']} GPU(s) of {gib(r['gpu_memory_bytes'])}, tensor parallel {tp}, "
        f"expert parallel {r['ep']}",
        f"  weights                {gib(r['weights_bytes']):>12}  exact count, {r['weights_how']}"
        + (split if tp > 1 or r["ep"] > 1 else ""),
        *(
            [f"  KV cache               {gib(0):>12}  none while training (use_cache off)"]
            if r["training"]
            else [f"  KV cache               {gib(0):>12}  {r['kv_cache_from']}"]
            if r["kv_cache_from"] != "formula"
            else [
                f"  KV cache               {gib(r['kv_cache_bytes']):>12}  {kv_formula}, windows capped, × context × "
                f"batch ({r['kv_cache_bytes_per_token']:,} B per token; {gib(r['kv_cache_bytes_full_length'])} if "
                f"every layer held the whole context){kv_split}",
                *state_line,
            ]
        ),
        *(
            [
                f"  optimizer + gradients  {gib(r['optimizer_and_gradient_bytes']):>12}  mixed-precision Adam, "
                "16 B per "
                "trainable parameter (ZeRO, Rajbhandari et al. 2020)",
                f"  activations            {gib(r['activation_bytes']):>12}  {r['activations_from']}",
            ]
            if training
            else [
                f"  prefill activations    {gib(r['activation_bytes']):>12}  {r['activations_from']}",
                *(
                    [
                        f"  decode step            {gib(r['decode_activation_bytes']):>12}  the next token's step "
                        "beyond the weights and the cache (the cache's growth, its logits), measured the same way"
                    ]
                    if r["decode_activation_bytes"] is not None
                    else []
                ),
            ]
        ),
        *([lora] if r["lora_params"] else []),
        f"  peak (PyTorch)         {gib(r['peak_bytes']):>12}  what PyTorch allocates at the peak, in the "
        f"{r['peak_phase']}: the fixed lines above and the higher of the two steps",
        f"  runtime overhead       {gib(r['overhead_bytes']):>12}  CUDA context and kernels (1 GB, transformers' "
        "'Model training anatomy'), cuBLASLt workspace (32 MiB, PyTorch #120925)",
        f"  per GPU                {gib(r['bytes_per_gpu']):>12}  → {'fits' if r['fits'] else 'does NOT fit'}"
        + (f" (the lines above, divided over {tp} GPUs as said)" if tp > 1 or r["ep"] > 1 else ""),
        f"  largest context that fits: {r['max_context']:,}; largest batch: {r['max_batch']:,}"
        if r["max_context"]
        else "  no context fits at this batch on these GPUs: see what would fit",
    ]
    if r["engine"] != "transformers":  # the engine's own lines between the weights and the overhead
        lines = [*lines[:2], *_engine(r), *lines[-3:]]
    elif state is None and not training:
        lines.insert(3, "  state                           ?  a sequence mixer whose state is not derived here")
    return "\n".join(lines + _after(r))


def _engine(r: dict) -> list[str]:
    """The engine's own lines: vLLM's pages, profile run and budget; llama.cpp's cells, compute buffer, offload."""
    from pipeline.report.text import gib

    d, batch = r["engine_detail"], r["batch"]
    peak = f"  allocated              {gib(r['peak_bytes']):>12}  "
    if r["engine"] == "vllm":
        many = f"{d['max_concurrency']:,}" if d["max_concurrency"] is not None else "any number of"
        return [
            f"  KV cache (pages)       {gib(r['kv_cache_bytes']):>12}  pages of {d['block_size']} tokens as vLLM's "
            f"specs take them at most: full attention ⌈T/{d['block_size']}⌉, a sliding window "
            f"⌈min(window − 1 + {d['max_num_batched_tokens']:,}, T)/{d['block_size']}⌉ + 1, a state-space layer one "
            f"page of its state; × {batch} sequence(s) ({r['kv_cache_bytes_per_token']:,} B per token)",
            f"  profile run            {gib(r['activation_bytes']):>12}  {r['activations_from']}",
            peak + "the weights, the profile run's peak and the batch's pages (vllm/v1/worker/gpu_worker.py)",
            f"  vLLM budget            {gib(r['gpu_memory_bytes'] * d['gpu_memory_utilization']):>12}  "
            f"gpu_memory_utilization {d['gpu_memory_utilization']} × the GPU; the weights, the profile run "
            f"({gib(d['profile_activation_bytes'])}), the sampler ({gib(d['sampler_bytes'])}), the CUDA graphs "
            f"({gib(d['cuda_graph_bytes'])}) and the CUDA context come first",
            f"  KV cache budget        {gib(d['kv_cache_budget_bytes']):>12}  what is left for pages "
            f"({gib(d['kv_cache_bytes_per_sequence'])} per sequence of {r['context']:,} tokens): {many} such "
            "sequences at once; vLLM allocates all of it at start",
        ]
    return [
        f"  KV cache               {gib(r['kv_cache_bytes']):>12}  {d['cache_type']} K and V, -c {d['n_ctx']:,} "
        f"(context × {d['slots']} slot(s), padded to 256): {d['cells_per_slot']:,} cells per slot, sliding layers "
        "min(cells, window + 512) padded to 256 (llama-context.cpp, llama-kv-cache-iswa.cpp); recurrent state in "
        "float32",
        f"  compute buffer         {gib(r['activation_bytes']):>12}  {r['activations_from']}",
        peak + f"on the GPUs: {d['n_gpu_layers']} of {d['layers']} layers offloaded (-ngl), their weights "
        f"({gib(d['weights_on_gpus_bytes'])}) and caches ({gib(d['kv_cache_on_gpus_bytes'])}), and the compute buffer",
        f"  host memory            {gib(d['host_bytes']):>12}  the input embedding, the layers left on the host "
        "and their caches",
    ]


def _after(r: dict) -> list[str]:
    """What would fit when the plan does not, and MemTracker's measurement beside the plan (--measure)."""
    from pipeline.report.text import gib

    lines: list[str] = []
    forward = r.get("way_forward")
    if forward:
        ways = []
        if "fewest_gpus" in forward:
            ways.append(f"{forward['fewest_gpus']['gpus']} GPUs at tensor parallel {forward['fewest_gpus']['tp']}")
        if "dtype" in forward:
            ways.append(f"the weights in {forward['dtype']} (--dtype {forward['dtype']})")
        if forward["max_context_at_this_batch"]:
            ways.append(f"a context of {forward['max_context_at_this_batch']:,} at this batch")
        if forward["max_batch_at_this_context"]:
            ways.append(f"a batch of {forward['max_batch_at_this_context']:,} at this context")
        lines.append("  what would fit: " + ("; ".join(ways) if ways else "none of more GPUs, fp8 or int4 weights"))
    if r.get("measured"):
        m = r["measured"]
        off = (m["live"] - m["activations"]) / m["activations"] * 100 if m["activations"] else 0.0
        lines.append(
            f"  measured (MemTracker)  {gib(m['activations']):>12}  PyTorch's MemTracker over the plan's own prefill "
            f"of {m['context']:,} tokens (the blocks it ran, weights {gib(m['parameters'])} apart): beyond the "
            f"weights {gib(m['activations'])}, the plan's {gib(m['live'])} ({off:+.2f} %)"
        )
    return lines
