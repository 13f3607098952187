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


def vit_params(d: int, layers: int, inner: int, image: int, patch: int, channels: int = 3, pooler: bool = True) -> int:
    """ViT (Dosovitskiy et al. 2021, section 3.1 and eq. 1-4; layout of transformers' ViTModel).

    Patch embedding: a P×P convolution of C channels to d, C·P²·d + d; a class token d; a learned position
    table (N + 1)·d for N = (H/P)² patches. Per block, with MLP width f:
      layernorm_before, layernorm_after    2 · 2d
      attention q, k, v, output            4 · (d·d + d)
      intermediate, output                 d·f + f + f·d + d
    Then a final LayerNorm (2d) and the pooler's dense layer (d·d + d).
    """
    patches = (image // patch) ** 2
    embed = channels * patch * patch * d + d + d + (patches + 1) * d
    block = 4 * d + 4 * (d * d + d) + (d * inner + inner) + (inner * d + d)
    return embed + layers * block + 2 * d + (d * d + d if pooler else 0)


def mamba_block_params(d: int, inner: int, state: int, kernel: int, dt_rank: int, conv_bias: bool = True) -> int:
    """One Mamba block (Gu and Dao 2023, Algorithm 2 and section 3.4; transformers' MambaMixer and MambaBlock).

    in_proj      d · 2E           x and the gate z (no bias)
    conv1d       E · K (+ E)      depthwise causal convolution
    x_proj       E · (R + 2N)     the step size's rank-R input, B and C
    dt_proj      R · E + E        the step size Δ
    A_log        E · N            the state matrix A, diagonal per channel
    D            E                the skip connection
    out_proj     E · d            (no bias)
    norm         d                RMSNorm gain
    """
    return (
        d * 2 * inner
        + inner * kernel
        + (inner if conv_bias else 0)
        + inner * (dt_rank + 2 * state)
        + dt_rank * inner
        + inner
        + inner * state
        + inner
        + inner * d
        + d
    )


def t5_block_params(d: int, inner_attn: int, ff: int, decoder: bool = False, gated: bool = False) -> int:
    """One T5 block (Raffel et al. 2020, section 3.1.1; transformers' T5Block), no biases anywhere.

      self-attention q, k, v, o      4 · d · (heads · d_kv)
      layer norms                    d each (RMS gain only): two, three in a decoder block
      cross-attention (decoder)      4 · d · (heads · d_kv)
      feed-forward wi, wo            2 · d · d_ff (T5 1.1's gated wi_0, wi_1: 3 · d · d_ff)
    Block 0 of each stack also holds the relative position table (buckets · heads), outside this formula.
    """
    attention = 4 * d * inner_attn
    ffn = (3 if gated else 2) * d * ff
    return attention + ffn + 2 * d + ((attention + d) if decoder else 0)


def whisper_layer_params(d: int, ff: int, decoder: bool = False) -> int:
    """One Whisper layer (Radford et al. 2022, section 2.2, the transformer of Vaswani et al.; transformers'
    WhisperEncoderLayer and WhisperDecoderLayer).

      self-attention q, v, out        3 · (d·d + d)  and k: d·d (k_proj has no bias)
      layer norms                     2d each: two, three in a decoder layer
      cross-attention (decoder)       4d² + 3d, as self-attention
      fc1, fc2                        d·f + f + f·d + d
    """
    attention = 4 * d * d + 3 * d
    return attention + 4 * d + (d * ff + ff) + (ff * d + d) + ((attention + 2 * d) if decoder else 0)
