"""`hmp fit SOURCE`: the memory plan pipeline.answers.fit gives, one line per term with its formula and source."""

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
