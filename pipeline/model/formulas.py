"""Closed-form parameter counts, written from the architecture papers, independent of the inventory code.

Tests check the inventory against these, the way nanoGPT's sizing notebook checks its model.
"""

from __future__ import annotations


def gpt2_params(vocab: int, positions: int, d: int, layers: int, inner: int | None = None, tied: bool = True) -> int:
    """GPT-2 (Radford et al. 2019; layout of openai/gpt-2 src/model.py): V·d + P·d + L·(12d² + 13d) + 2d when tied.

    Per block, with MLP width f (4d by default):
      ln_1, ln_2          2 · 2d            gain and shift each
      attn.c_attn         d·3d + 3d         fused q, k, v
      attn.c_proj         d·d + d
      mlp.c_fc            d·f + f
      mlp.c_proj          f·d + d
    With f = 4d a block is 12d² + 13d. Then ln_f (2d), token (V·d) and position (P·d) embeddings,
    and an untied head adds another V·d (no bias).
    """
    f = 4 * d if inner is None else inner
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
    head = 0 if tied else vocab * d
    return vocab * d + positions * d + layers * block + 2 * d + head


def gpt2_params_from_config(arch: dict) -> int:
    """gpt2_params from a GPT-2 config.json mapping (transformers' field names and defaults)."""
    return gpt2_params(
        vocab=arch.get("vocab_size", 50257),
        positions=arch.get("n_positions", 1024),
        d=arch.get("n_embd", 768),
        layers=arch.get("n_layer", 12),
        inner=arch.get("n_inner"),
        tied=arch.get("tie_word_embeddings", True),
    )


def llama_params(
    vocab: int, d: int, layers: int, inner: int, heads: int, kv_heads: int | None = None, tied: bool = False
) -> int:
    """Llama-style decoders (Touvron et al. 2023): no biases, RMSNorm gains, a gated MLP, rotary positions.

    Per block, with head width h = d / heads and kv_heads key/value heads:
      q_proj, o_proj      2 · d·d
      k_proj, v_proj      2 · d·(kv_heads·h)
      gate, up, down      3 · d·f
      2 RMSNorm gains     2d
    Then the final RMSNorm (d), the token embedding (V·d) and an untied head (V·d).
    """
    kv = heads if kv_heads is None else kv_heads
    h = d // heads
    block = 2 * d * d + 2 * d * kv * h + 3 * d * inner + 2 * d
    return vocab * d + layers * block + d + (0 if tied else vocab * d)


def llama_params_from_config(arch: dict) -> int:
    """llama_params from a Llama config.json mapping (transformers' field names)."""
    return llama_params(
        vocab=arch["vocab_size"],
        d=arch["hidden_size"],
        layers=arch["num_hidden_layers"],
        inner=arch["intermediate_size"],
        heads=arch["num_attention_heads"],
        kv_heads=arch.get("num_key_value_heads"),
        tied=arch.get("tie_word_embeddings", False),
    )


def gpt_neox_params(vocab: int, d: int, layers: int, inner: int, tied: bool = False) -> int:
    """GPT-NeoX / Pythia (Black et al. 2022; Biderman et al. 2023): biased Linear layers, LayerNorms, rotary.

    Per block: fused qkv d·3d + 3d, dense d·d + d, MLP d·f + f and f·d + d, two LayerNorms 4d.
    Then the final LayerNorm (2d), embed_in (V·d) and an untied embed_out (V·d).
    """
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d) + 4 * d
    return vocab * d + layers * block + 2 * d + (0 if tied else vocab * d)


def mixtral_params(
    vocab: int,
    d: int,
    layers: int,
    heads: int,
    kv_heads: int,
    expert_width: int,
    experts: int,
    per_token: int | None = None,
    tied: bool = False,
) -> int:
    """Mixtral-style mixture of experts (Jiang et al. 2024): Llama's block with the MLP replaced by E experts.

    Per block, with head width h = d / heads:
      q_proj, o_proj         2 · d·d
      k_proj, v_proj         2 · d·(kv_heads·h)
      router (gate)          E·d                 one logit per expert, no bias
      experts                E · 3·d·I           each a gated MLP: gate, up (d → I) and down (I → d)
      2 RMSNorm gains        2d
    Then the final RMSNorm (d), the token embedding (V·d) and an untied head (V·d).
    With per_token = k, the count one token uses: the same with k experts' matrices instead of E
    (router, attention, norms, embeddings and head stay whole: Mixtral's "active" convention).
    """
    used = experts if per_token is None else per_token
    h = d // heads
    block = 2 * d * d + 2 * d * kv_heads * h + experts * d + used * 3 * d * expert_width + 2 * d
    return vocab * d + layers * block + d + (0 if tied else vocab * d)
