"""`hmp fit SOURCE`: will it fit? The memory plan of a model for inference or fine-tuning, per GPU and in total.

Every line is computed by pipeline.cost.plan from the exact count and the layers the model builds; the verdict
compares the bytes one GPU holds with --gpu-memory, and the largest context and batch are searched against it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError

# QLoRA (Dettmers et al. 2023, section 3): NF4 weights with double quantization take 4.127 bits per parameter
QLORA_BITS = 4.127
ADAM_BYTES = 16  # mixed-precision Adam per trainable parameter (Rajbhandari et al. 2020, ZeRO, section 3)
MAX_SEARCH = 1 << 24  # the longest context or largest batch searched
DEFAULT_CONTEXT = 4096  # --context for a model whose positions set no limit (T5's relative positions, Mamba)


def fit_source(source: str, options: dict[str, Any]) -> dict:
    from pipeline import sources
    from pipeline.cli.count import _default_name, checked_name, entry_for, shown_name
    from pipeline.core import params
    from pipeline.cost import cache, plan
    from pipeline.model import build
    from pipeline.model.count import count_built

    gpu = plan.parse_memory(options["gpu_memory"])
    kv_bytes = plan.dtype_bytes(options["kv_dtype"], "--kv-dtype")
    w_bytes = plan.dtype_bytes(options["dtype"], "--dtype")
    entry = entry_for(source, options.get("revision"))
    shown = options.get("name") or shown_name(source)
    name = checked_name(options.get("name") or _default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with tempfile.TemporaryDirectory(prefix="hmp-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        (folder / "provenance.json").write_text(json.dumps(sources.materialise(spec, folder, hashes=False)))
        inv, row, model, config = count_built(spec, folder)
    tp, gpus, ep = int(options["tp"]), int(options["gpus"]), int(options.get("ep", 1))
    if gpus < 1 or tp < 1 or gpus % tp:
        raise PipelineError(f"--gpus {gpus} --tp {tp}: the GPUs must be a whole number of tensor-parallel groups")
    plan.tensor_parallel_check(config, tp, name)
    n_experts = row.get("n_experts")
    if ep < 1:
        raise PipelineError(f"--ep {ep}: an expert-parallel degree is at least 1")
    if ep > 1 and (not n_experts or int(n_experts) % ep or gpus % ep):
        raise PipelineError(
            f"--ep {ep} must divide its routed experts ({n_experts or 'none'}) and --gpus {gpus}", model=name
        )
    text = cache.text_config(config)
    limit, limit_from = cache.max_positions(model, config)
    given = options.get("context")
    context = int(given) if given is not None else limit or DEFAULT_CONTEXT  # the model's own context by default
    if context < 1:
        raise PipelineError(f"--context {context}: a context is at least 1 token")
    if limit and context > limit:
        raise PipelineError(f"--context {context:,} is beyond the {limit:,} positions '{name}' holds ({limit_from})")
    batch = int(options["batch"])
    if batch < 1:
        raise PipelineError(f"--batch {batch}: a batch is at least 1 sequence")
    layers = cache.layers(model, config, build.is_causal_class(type(model), config))
    total = int(row["total"])
    train = options.get("train")
    p = inv[inv["kind"] == "parameter"]
    replicated = int(p.loc[p["component"] == "layer_norm", "numel"].sum())  # norms are not split
    lora = adapted = 0
    if train in ("lora", "qlora"):
        lora, adapted = plan.lora_params(model, options["lora_targets"], int(options["lora_rank"]))
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
    trainable = total if train == "full" else lora
    optimizer = trainable * (ADAM_BYTES - (w_bytes if train == "full" else 0))  # full: the weights are counted above
    latent = bool(getattr(text, "kv_lora_rank", None))  # MLA's latent is not split across a TP group
    hidden = getattr(text, "hidden_size", 0) or 0
    heads = getattr(text, "num_attention_heads", 0) or 0
    n_layers = len(layers) or int(getattr(text, "num_hidden_layers", 0) or 0)

    def need(ctx: int, b: int) -> tuple[int, dict]:
        c = plan.kv_cache(layers, ctx, b, kv_bytes, getattr(config, "max_source_positions", None) or ctx)
        state = 0 if train else (c.state or 0) * b  # training keeps no cache or state (use_cache off)
        acts = (
            plan.activation_bytes(ctx, b, hidden, heads, n_layers, bool(options.get("checkpointing"))) if train else 0
        )
        kv_gpu = 0 if train else c.at if latent else c.at / tp  # training runs without a KV cache (use_cache off)
        per_gpu = weights_per_gpu + kv_gpu + state / tp + (optimizer + acts) / tp
        return int(per_gpu), {"cache": c, "state": state, "activations": acts}

    per_gpu, parts = need(context, batch)
    c = parts["cache"]
    out = {
        "model": shown,
        "total_params": total,
        "weights_bytes": int(weights),
        "weights_bytes_per_gpu": int(weights_per_gpu),
        "kv_cache_bytes_per_token": c.per_token,
        "kv_cache_bytes": c.at,
        "kv_cache_bytes_full_length": c.full_length,
        "state_bytes_per_sequence": c.state,
        "lora_params": lora,
        "lora_layers": adapted,
        "optimizer_and_gradient_bytes": int(optimizer),
        "activation_bytes": parts["activations"],
        "bytes_per_gpu": per_gpu,
        "gpu_memory_bytes": gpu,
        "fits": per_gpu <= gpu,
        "max_context": plan.largest(lambda n: need(n, batch)[0] <= gpu, limit or MAX_SEARCH),
        "max_batch": plan.largest(lambda n: need(context, n)[0] <= gpu, MAX_SEARCH),
        "context": context,
        "context_from": "--context"
        if given is not None
        else (f"the model's own ({limit_from})" if limit else f"{DEFAULT_CONTEXT:,} ({limit_from})"),
        "max_positions": limit,
        "latent_attention": latent,
        "training": train or None,
        "batch": batch,
        "tp": tp,
        "ep": ep,
        "gpus": gpus,
    }
    return out


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
        f"  weights                {gib(r['weights_bytes']):>12}  exact count × bytes per value"
        + (split if tp > 1 or r["ep"] > 1 else ""),
        *(
            [f"  KV cache               {gib(0):>12}  none while training (use_cache off)"]
            if r["training"]
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
                f"  activations            {gib(r['activation_bytes']):>12}  sbh(34 + 5as/h) per layer, 2sbh with "
                "checkpointing (Korthikanti et al. 2022)",
            ]
            if training
            else []
        ),
        *([lora] if r["lora_params"] else []),
        f"  per GPU                {gib(r['bytes_per_gpu']):>12}  → {'fits' if r['fits'] else 'does NOT fit'}"
        + (f" (the lines above, divided over {tp} GPUs as said)" if tp > 1 or r["ep"] > 1 else ""),
        f"  largest context that fits: {r['max_context']:,}; largest batch: {r['max_batch']:,}",
    ]
    if state is None and not training:
        lines.insert(3, "  state                           ?  a sequence mixer whose state is not derived here")
    return "\n".join(lines)
