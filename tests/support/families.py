"""Tiny models of the families beyond text decoders, built by transformers itself (real classes, small shapes),
for checkpoints saved with save_pretrained: an encoder-decoder, a speech model, a state-space model, a hybrid
with experts, a vision-language model and a vision encoder."""

from __future__ import annotations

from typing import Any

LLAMA_TEXT = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
CLIP_VISION = {
    "model_type": "clip_vision_model",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 16,
    "patch_size": 4,
}
# (config class, class, fields)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "t5": (
        "T5Config",
        "T5ForConditionalGeneration",
        {"vocab_size": 64, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2, "num_heads": 4},
    ),
    "whisper": (
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        {
            "vocab_size": 64,
            "d_model": 16,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 32,
            "decoder_ffn_dim": 32,
            "num_mel_bins": 8,
            "max_source_positions": 16,
            "max_target_positions": 16,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
    ),
    "mamba": (
        "MambaConfig",
        "MambaForCausalLM",
        {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "state_size": 4, "expand": 2},
    ),
    "jamba": (
        "JambaConfig",
        "JambaForCausalLM",
        {
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "attn_layer_period": 2,
            "attn_layer_offset": 1,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "mamba_dt_rank": 4,
        },
    ),
    "llava": (
        "LlavaConfig",
        "LlavaForConditionalGeneration",
        {"text_config": LLAMA_TEXT, "vision_config": CLIP_VISION, "image_token_index": 63},
    ),
    "vit": (
        "ViTConfig",
        "ViTModel",
        {
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "image_size": 16,
            "patch_size": 4,
        },
    ),
}


def tiny_family(name: str, seed: int = 0) -> Any:
    """The tiny model of one family, with real (seeded) weights."""
    import torch
    import transformers

    config_class, model_class, fields = FAMILIES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**fields)
    return getattr(transformers, model_class)(config)
