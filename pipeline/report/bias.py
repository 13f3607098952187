"""Weights and biases: the course's definition (names ending in .bias) beside roles from module types."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, save, setup
from pipeline.report.text import md_table, whole

ROLE_LABELS = {
    "matrix": "matrices",
    "embedding": "embeddings",
    "bias": "biases",
    "norm_gain": "norm gains",
    "norm_bias": "norm biases",
    "conv_kernel": "conv kernels",
    "state_space": "state-space",
    "attention_sink": "attention sinks",
    "scalar": "scalars",
    "scale": "scales",
}


def bias_section(summary: pd.DataFrame, bias: pd.DataFrame, fig: str) -> str:
    allc = bias[bias["component"] == "all"]
    roles_all = allc[allc.definition == "role"]
    # the five roles every transformer has, and any other role a model of this sweep holds
    shown = [
        r
        for r in ROLE_LABELS
        if list(ROLE_LABELS).index(r) < 5 or (roles_all[roles_all.category == r].params > 0).any()
    ]
    rows = []
    for name in summary.index:
        course = allc[(allc.model == name) & (allc.definition == "course")].set_index("category")["params"]
        role = roles_all[roles_all.model == name].set_index("category")["params"]
        total = int(summary.loc[name, "total"])
        rows.append(
            [
                f"`{name}`",
                whole(course.get("weight", 0)),
                f"{whole(course.get('bias', 0))} ({100 * course.get('bias', 0) / total:.4f} %)",
                *(whole(role.get(r, 0)) for r in shown),
            ]
        )
    return "\n".join(
        [
            "## Weights and biases",
            "",
            "Two definitions side by side. The course's: a bias is a parameter whose name ends in `.bias`, "
            "so LayerNorm shifts count as biases. By role: each tensor's role comes from the type of the module "
            "that owns it (Linear/Conv1D weight = matrix, Embedding = embedding, LayerNorm weight and bias = norm "
            "gain and norm bias, a convolution's weight = conv kernel, a state-space mixer's own tensors = "
            "state-space), else from the tensor itself; the role columns add up to the total.",
            "",
            md_table(["model", "weights (course)", "biases (course)", *(ROLE_LABELS[r] for r in shown)], rows),
            "",
            f"![Bias share per model]({fig})",
            "",
        ]
    )


def section(d: Data) -> Section:
    name = "bias_share.png"
    shares = d.bias[(d.bias["component"] == "all") & (d.bias["category"] == "bias")]
    return Section(bias_section(d.summary, d.bias, d.link(name)), [Figure(bias_share, (shares,), name)])


def bias_share(shares: pd.DataFrame, path: Path, dpi: int) -> None:
    """Bars: share of each model's parameters that are biases, per definition (percent)."""
    plt, sns = setup()
    data = shares.assign(percent=100 * shares["share_of_model"])
    fig, ax = plt.subplots(figsize=(8, 0.6 * data["model"].nunique() + 1.8))
    sns.barplot(data=data, y="model", x="percent", hue="definition", ax=ax, palette="colorblind", orient="h")
    ax.set_xlabel("biases, % of all parameters")
    ax.set_ylabel("")
    ax.set_title(f"Biases as a share of all parameters (at most {data['percent'].max():.4f} %)")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.4f %%", fontsize=SMALL, padding=2)
    ax.margins(x=0.25)
    ax.legend(title="definition", fontsize="small")
    save(fig, path, dpi)
