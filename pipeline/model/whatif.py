"""The what-if grid: whatif.base at every depth and width of the grid, counted on the meta device (any family)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.model import build

WHATIF_COLUMNS = ["n_layer", "n_embd", "n_head", "params", "twelve_l_d2"]


def whatif_config(base: dict, n_layer: int, n_embd: int, head_width: int) -> Any:
    """The config of whatif.base with L layers and width d, for any family.

    Depth, width and heads are set through the config class's canonical names (hidden_size,
    num_hidden_layers, num_attention_heads; GPT-2 maps them to n_embd, n_layer, n_head), so the
    grid varies the real model whatever its field names. Heads are d / head_width; the base's
    ratios carry over where it has them: query heads per KV head, and the MLP width per unit of d.
    """
    from transformers import CONFIG_MAPPING

    arch = dict(base)
    cls = CONFIG_MAPPING[arch.pop("model_type")]
    base_cfg = cls(**arch)
    alias = getattr(cls, "attribute_map", None) or {}

    def field(canonical: str) -> str:
        return alias.get(canonical, canonical)

    d0, h0 = base_cfg.hidden_size, base_cfg.num_attention_heads
    heads = n_embd // head_width
    arch[field("num_hidden_layers")], arch[field("hidden_size")] = n_layer, n_embd
    arch[field("num_attention_heads")] = heads
    if getattr(base_cfg, "head_dim", None) is not None:
        arch["head_dim"] = head_width
    kv0 = getattr(base_cfg, "num_key_value_heads", None)
    if kv0:
        if (heads * kv0) % h0:
            raise PipelineError(
                f"whatif: {heads} heads (d={n_embd}) cannot keep whatif.base's {h0 // kv0} query heads per KV head"
            )
        arch[field("num_key_value_heads")] = heads * kv0 // h0
    for width in ("intermediate_size", "n_inner", "ffn_dim"):
        if isinstance(getattr(base_cfg, width, None), int) and base_cfg.hidden_size:
            arch[width] = getattr(base_cfg, width) * n_embd // d0
    return cls(**arch)


def whatif_grid(cfg: params.Params) -> pd.DataFrame:
    """Count every (n_layer, n_embd) variant of whatif.base on the meta device."""
    w = cfg.whatif
    base = dict(w["base"].architecture)
    rows = []
    for n_layer in w["n_layer"]:
        for n_embd in w["n_embd"]:
            config = whatif_config(base, n_layer, n_embd, int(w["head_width"]))
            model = build.build_meta(config, "whatif.base")
            total = sum(p.numel() for p in model.parameters())
            rows.append([n_layer, n_embd, config.num_attention_heads, total, 12 * n_layer * n_embd**2])
    return pd.DataFrame(rows, columns=WHATIF_COLUMNS)
