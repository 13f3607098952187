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
    "stored_separately",
    "pearson_r",
    "max_abs_diff",
    "method",
]
NO_WEIGHTS = "no weights: source config builds the architecture on the meta device, so there are no values to compare"


STREAMED = (
    "streamed from the checkpoint: Pearson r and max |difference| of the stored input and output embedding "
    "matrices, in chunks with float64 accumulators"
)
RANGE_TIED = (
    "output embedding not stored (tied): only the embedding matrix was fetched by HTTP range reads, put into "
    "the meta-built model, re-tied by transformers' tie_weights(), then get_input_embeddings().weight was "
    "correlated with get_output_embeddings().weight"
)
EMBEDDING_ONLY = (
    "output embedding not stored (tied), checkpoint too big to load whole: the stored embedding matrix was put "
    "into the meta-built model, re-tied by transformers' tie_weights(), then get_input_embeddings().weight was "
    "correlated with get_output_embeddings().weight"
)
GGUF_TIED = (
    "output embedding not stored (tied GGUF): the stored embedding matrix (dequantized by gguf's own "
    "dequantizer when quantized) was put into the meta-built model, re-tied by transformers' tie_weights(), "
    "then get_input_embeddings().weight was correlated with get_output_embeddings().weight"
)
OTHER_FORMAT_TIED = (
    "output embedding not stored (tied {fmt} checkpoint, which transformers does not load): the stored embedding "
    "matrix was put into the meta-built model, re-tied by transformers' tie_weights(), then "
    "get_input_embeddings().weight was correlated with get_output_embeddings().weight"
)
COURSE = (
    "output embedding not stored (tied): the course's check, loading the model with transformers and "
    "correlating get_input_embeddings().weight with get_output_embeddings().weight"
)


def stored_keys(inv: pd.DataFrame) -> tuple[str, str]:
    """Checkpoint keys of the input and output embedding matrices ('' where not stored)."""
    params = inv[inv["kind"] == "parameter"]
    inp = params[params["is_input_embedding"]]
    out = params[params["is_output_embedding"]]
    in_keys = inp["checkpoint_key"].iloc[0].split(";") if not inp.empty else [""]
    if out.empty:
        return in_keys[0], ""
    out_keys = out["checkpoint_key"].iloc[0].split(";")
    if out.index[0] == (inp.index[0] if not inp.empty else None):  # tied: a second stored copy, if any
        return in_keys[0], (out_keys[1] if len(out_keys) > 1 else "")
    return in_keys[0], out_keys[0]


def evidence(
    inv: pd.DataFrame,
    declared_tied: bool,
    input_name: str,
    output_name: str,
    values: dict | None = None,
) -> dict:
    """One row of tie evidence for a model's inventory.

    input_name and output_name are the weights of get_input_embeddings() and get_output_embeddings()
    (output_name is empty for a model without an output head). values, when weights exist, holds
    stored_separately, pearson_r, max_abs_diff and method.
    """
    inv = inv[inv["kind"] == "parameter"]
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
        "stored_separately": None,
        "pearson_r": None,
        "max_abs_diff": None,
        "method": NO_WEIGHTS,
        **(values or {}),
    }


def declared(raw: dict) -> tuple[bool | None, str]:
    """(tie_word_embeddings as config.json states it for the part that owns the head, the field's path): a
    composite model's head belongs to its text_config; None when the file does not say."""
    text = raw.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("tie_word_embeddings"), bool):
        return text["tie_word_embeddings"], "text_config.tie_word_embeddings"
    value = raw.get("tie_word_embeddings")
    return (value if isinstance(value, bool) else None), "tie_word_embeddings"


def follow_declared_tie(model, raw: dict) -> str:
    """Untie a head that transformers' from-config build ties although config.json says the part owning it is
    untied (transformers 5 ties Mistral-Small-3.1's and InternVL3's heads by the top-level config, and mT5's
    whatever its config says): the head gets a meta tensor of its own, as the published checkpoint stores it.
    Returns the note the summary and the report give ('' when the build already follows the file)."""
    import torch

    value, field = declared(raw)
    try:
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    except (NotImplementedError, AttributeError):
        return ""
    weight = getattr(inp, "weight", None)  # an embeddings module of its own has none (Kyutai's speech-to-text)
    if value is not False or weight is None or out is None or getattr(out, "weight", None) is not weight:
        return ""
    out.weight = torch.nn.Parameter(torch.empty_like(inp.weight, device="meta"))
    return f"{field} is false but transformers' build ties the head: counted untied, as config.json says"
