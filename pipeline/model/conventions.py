"""Every counting convention side by side: why the paper, the Hub, nanoGPT, minGPT and TransformerLens disagree.

Each convention is one line of definition and one function of the parameter inventory and the summary
row; none is typed in. GPT-2 small's values are pinned in tests/model/test_conventions.py with their sources.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.model.inventory import parameters

DEFINITIONS = {
    "unique": "unique trainable parameters: sum(p.numel() for p in model.parameters()), each tied tensor once",
    "untied_head": "with an output head of its own instead of the tied token embedding "
    "(the course's Model 5; what minGPT's GPT-2 module holds)",
    "non_embedding_kaplan": "without any embedding table: token, position and segment embeddings and an untied "
    "output head left out (Kaplan et al. 2020)",
    "non_embedding_pythia": "without the input and output embedding matrices; learned position embeddings stay "
    "(the Pythia suite's convention)",
    "nanogpt_default": "unique minus the learned position embeddings (nanoGPT's get_num_params(), "
    "non_embedding=True by default)",
    "attn_mlp_matrices": "attention and MLP weight matrices only (every expert's and the router's too): no embeddings, "
    "biases or norms "
    "(TransformerLens's n_params; 12·L·d² for GPT-2)",
    "checkpoint_tensors": "every value stored in the checkpoint file, buffers included (what the Hub's model page "
    "shows); empty when the model has no checkpoint",
    "stated": "the size its authors stated (stated_size in the model config)",
    "torchinfo": "torchinfo summary()'s total params: each module's own parameters added up, so a tied tensor "
    "counts once per module that holds it",
    "active_per_token": "what one token's forward pass uses: every non-routed parameter (embeddings, head, "
    "router, attention, norms, shared experts, dense layers) plus k/E of each routed-expert tensor "
    "(Mixtral's convention); equals unique for a dense model",
    "active_excluding_input_embedding": "active_per_token without the input embedding matrix, a lookup rather "
    "than a matmul (gpt-oss's convention); kept when it is tied to the output head, which multiplies by it",
    "language_model": "a composite model's text tower (the sub-model built for its text_config) with the output "
    "head: the language model alone, what a vision-language model's name often counts",
    "language_model_active": "active_per_token within the language model alone (a multimodal mixture of experts: "
    "Llama 4 Scout's 17B active)",
    "vision_tower": "a composite model's vision encoder (the sub-model built for its vision_config)",
    "audio_tower": "a composite model's audio encoder (the sub-model built for its audio_config)",
    "projector": "a composite model's parameters outside every tower: the multimodal projector",
    "encoder_stack": "an encoder-decoder's encoder (get_encoder()), without the embedding it shares with the decoder",
    "decoder_stack": "an encoder-decoder's decoder (get_decoder()) with the output head, without the shared embedding",
    "shared_between_stacks": "tensors an encoder-decoder's two stacks share (T5's and BART's token embedding), once",
}
# Tower conventions: the inventory's tower each sums, and whether it needs a composite model or an encoder-decoder
TOWER_CONVENTIONS = {
    "language_model": ("text", "composite"),
    "vision_tower": ("vision", "composite"),
    "audio_tower": ("audio", "composite"),
    "projector": ("projector", "composite"),
    "encoder_stack": ("encoder", "encoder_decoder"),
    "decoder_stack": ("decoder", "encoder_decoder"),
    "shared_between_stacks": ("shared", "encoder_decoder"),
}
# Who prints each number: the report's conventions figure and `hmp count` label each convention so
TOOLS = {
    "unique": "unique: sum(p.numel()) in PyTorch",
    "untied_head": "untied head: minGPT's module",
    "torchinfo": "torchinfo summary()",
    "nanogpt_default": "nanoGPT get_num_params()",
    "non_embedding_pythia": "non-embedding: Pythia suite",
    "non_embedding_kaplan": "non-embedding: Kaplan et al.",
    "attn_mlp_matrices": "TransformerLens n_params",
    "checkpoint_tensors": "the Hub page: header sum",
    "stated": "stated by the authors",
}
# The two active counts, for mixtures of experts: the model cards that use each
ACTIVE_TOOLS = {
    "active_per_token": "active per token: Mixtral's card",
    "active_excluding_input_embedding": "active, no input embedding: gpt-oss's card",
}
# The parts of a composite model or an encoder-decoder: who quotes each
PART_TOOLS = {
    "language_model": "language model alone: a VLM's name",
    "language_model_active": "language model, active per token",
    "vision_tower": "vision tower",
    "audio_tower": "audio tower",
    "projector": "multimodal projector",
    "encoder_stack": "encoder stack",
    "decoder_stack": "decoder stack and head",
    "shared_between_stacks": "shared by both stacks",
}
COLUMNS = ["model", "convention", "params", "definition"]
# Where TransformerLens's n_params finds matrices: attention and MLP, and in a mixture of experts every
# expert's MLP and the router (its n_params multiplies the MLP by the number of experts)
MATRIX_COMPONENTS = ["attention", "cross_attention", "mlp", "router", "experts", "shared_experts"]


def _held_again(p: pd.DataFrame) -> int:
    """Values of tied tensors counted again for every other module that holds them (the aliases' owners)."""
    extra = 0
    for name, aliases, numel in zip(p["name"], p["aliases"].fillna(""), p["numel"], strict=True):
        owners = {a.rpartition(".")[0] for a in str(aliases).split(";") if a} - {name.rpartition(".")[0]}
        extra += len(owners) * int(numel)
    return extra


def _sum(inv: pd.DataFrame, mask: pd.Series) -> int:
    return int(inv.loc[mask, "numel"].sum())


def conventions(inv: pd.DataFrame, summary_row: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per convention for one model. Conventions that do not apply have params None."""
    p = parameters(inv)
    total = int(p["numel"].sum())
    own_head = p["is_output_embedding"] & ~p["is_input_embedding"]
    values = {
        "unique": total,
        "untied_head": int(summary_row["total_untied"]),
        "non_embedding_kaplan": total - _sum(p, p["role"] == "embedding"),
        "non_embedding_pythia": total - _sum(p, p["is_input_embedding"] | own_head),
        "nanogpt_default": total - _sum(p, p["component"] == "position_embedding"),
        "attn_mlp_matrices": _sum(p, (p["role"] == "matrix") & p["component"].isin(MATRIX_COMPONENTS)),
        "checkpoint_tensors": summary_row.get("checkpoint_tensors"),
        "stated": summary_row.get("stated_params"),
        "torchinfo": total + _held_again(p),
        "active_per_token": int(summary_row["active"]),
        "active_excluding_input_embedding": int(summary_row["active"])
        - _sum(p, p["is_input_embedding"] & ~p["is_output_embedding"]),
    }
    values.update(tower_values(p, summary_row))
    return [
        {
            "model": p["model"].iloc[0],
            "convention": key,
            "params": None if values[key] is None or pd.isna(values[key]) else int(values[key]),
            "definition": DEFINITIONS[key],
        }
        for key in DEFINITIONS
    ]


def tower_values(p: pd.DataFrame, summary_row: dict[str, Any]) -> dict[str, int | None]:
    """Each tower convention's count, None where the model has no such tower (a single-tower model has none)."""
    towers = set(p["tower"])
    kinds = {
        "composite": "text" in towers and bool(towers & {"vision", "audio", "projector"}),
        "encoder_decoder": {"encoder", "decoder"} <= towers,
    }
    out: dict[str, int | None] = {
        key: _sum(p, p["tower"] == tower) if kinds[kind] and tower in towers else None
        for key, (tower, kind) in TOWER_CONVENTIONS.items()
    }
    out["language_model_active"] = None
    top_k = summary_row.get("experts_per_token")
    if out["language_model"] is not None and top_k is not None and not pd.isna(top_k):
        text = p[p["tower"] == "text"]
        experts = text[text["component"] == "experts"]
        routed = int(experts["numel"].sum())
        used = int((experts["numel"] // experts["experts"]).sum()) * int(top_k)
        out["language_model_active"] = out["language_model"] - routed + used
    return out


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["params"] = df["params"].astype("Int64")
    return df
