"""Weights against biases, under two definitions side by side.

- course: a parameter is a bias when its name ends in `.bias` (LayerNorm shifts included); the rest are weights.
- role: the role the inventory gives each tensor from its module type (matrix, bias, embedding,
  norm_gain, norm_bias), so a LayerNorm shift is told apart from a Linear bias.
"""

from __future__ import annotations

import pandas as pd

from pipeline.model.inventory import COMPONENTS, ROLES, parameters

COURSE_CATEGORIES = ("weight", "bias")
COLUMNS = ["model", "definition", "component", "category", "params", "share_of_model"]


def _course_category(names: pd.Series) -> pd.Series:
    return names.str.endswith(".bias").map({True: "bias", False: "weight"})


def split(inv: pd.DataFrame) -> pd.DataFrame:
    """Long table: per definition, component (and 'all'), category: parameters and share of the model's total."""
    inv = parameters(inv)
    model = inv["model"].iloc[0]
    total = int(inv["numel"].sum())
    frames = []
    for definition, categories, category in (
        ("course", COURSE_CATEGORIES, _course_category(inv["name"])),
        ("role", ROLES, inv["role"]),
    ):
        table = inv.assign(category=category)
        for component in ("all", *COMPONENTS):
            part = table if component == "all" else table[table["component"] == component]
            if part.empty:
                continue
            sums = part.groupby("category")["numel"].sum()
            for cat in categories:
                params = int(sums.get(cat, 0))
                if component != "all" and params == 0:
                    continue
                frames.append(
                    {
                        "model": model,
                        "definition": definition,
                        "component": component,
                        "category": cat,
                        "params": params,
                        "share_of_model": params / total,
                    }
                )
    return pd.DataFrame(frames, columns=COLUMNS)
