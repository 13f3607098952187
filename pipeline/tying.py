"""Tie evidence between the input embedding and the output unembedding.

declared: what the config says (tie_word_embeddings); structural: get_output_embeddings().weight is
get_input_embeddings().weight, read off the inventory's flags, which the count stage set from tensor
identity. Value-level evidence (Pearson r, max |difference|) needs weights; without them the columns
stay empty and `method` says why.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = [
    "model",
    "declared_tied",
    "structural_tied",
    "input_embedding",
    "output_embedding",
    "untied_head_params",
    "pearson_r",
    "max_abs_diff",
    "method",
]
NO_WEIGHTS = "no weights: source config builds the architecture on the meta device, so there are no values to compare"


def evidence(inv: pd.DataFrame, declared_tied: bool, input_name: str, output_name: str) -> dict:
    """One row of tie evidence for a model's inventory.

    input_name and output_name are the weights of get_input_embeddings() and get_output_embeddings()
    (output_name is empty for a model without an output head).
    """
    structural = bool((inv["is_input_embedding"] & inv["is_output_embedding"]).any())
    out = inv[inv["is_output_embedding"]]
    return {
        "model": inv["model"].iloc[0],
        "declared_tied": bool(declared_tied),
        "structural_tied": structural,
        "input_embedding": input_name,
        "output_embedding": output_name,
        # a tied head would become a tensor of the same shape; an untied one already is one
        "untied_head_params": int(out["numel"].iloc[0]) if not out.empty else 0,
        "pearson_r": None,
        "max_abs_diff": None,
        "method": NO_WEIGHTS,
    }
