"""What if the base model were deeper or wider: the what-if grid against 12·L·d², the sweep's models marked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, log_log, setup


def whatif_section(cfg: params.Params, fig: str) -> str:
    model_type = cfg.whatif["base"].architecture["model_type"]
    gpt2 = model_type == "gpt2"
    family = "GPT-2" if gpt2 else f"the {model_type} base (`whatif.base`)"
    return "\n".join(
        [
            f"## What if {'GPT-2' if gpt2 else 'the base model'} were deeper or wider?",
            "",
            f"Every (L, d) of the what-if grid of {family} (`whatif` in `conf/config.yaml`, counted on the meta "
            "device into `results/whatif.csv`) against 12·L·d², the attention and MLP matrices of L GPT-2 blocks "
            "of width d, a reference line for any family. Small models sit far above it because their embeddings "
            "dominate; large ones approach it"
            + (
                ""
                if gpt2
                else f" (a {model_type} block holds more or fewer matrices than GPT-2's, so it settles "
                "on a line of its own)"
            )
            + ". Vary the grid with `dvc exp run -S 'whatif.n_layer=[...]'`.",
            "",
            f"![Parameters against 12·L·d²]({fig})",
            "",
        ]
    )


def section(d: Data) -> Section:
    name = "whatif.png"
    summary = d.summary
    shipped = summary.reset_index(drop=True).assign(
        params=summary["total"].to_numpy(),
        twelve_l_d2=12 * summary["n_layer"].to_numpy() * summary["d_model"].to_numpy() ** 2,
    )
    return Section(whatif_section(d.cfg, d.link(name)), [Figure(whatif, (d.grid, shipped), name)])


def whatif(grid: pd.DataFrame, shipped: pd.DataFrame, path: Path, dpi: int) -> None:
    """Parameters against 12·L·d² (log-log): the what-if grid as lines per width, the sweep's models marked."""
    plt, sns = setup()
    fig, ax = plt.subplots(figsize=(8, 5))
    data = grid.assign(width=grid["n_embd"].map(lambda d: f"d = {d}"))
    sns.lineplot(data=data, x="twelve_l_d2", y="params", hue="width", marker="o", ax=ax, palette="crest", linewidth=1)
    lo = min(grid["twelve_l_d2"].min(), shipped["twelve_l_d2"].min())
    hi = max(grid["params"].max(), shipped["params"].max(), grid["twelve_l_d2"].max())
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8, label="params = 12·L·d²")
    ax.scatter(shipped["twelve_l_d2"], shipped["params"], color="black", zorder=5, s=30, label="models in the sweep")
    for _, r in shipped.iterrows():
        ax.annotate(
            r["model"], (r["twelve_l_d2"], r["params"]), fontsize=SMALL, xytext=(4, -10), textcoords="offset points"
        )
    title = "Parameters against 12·L·d²: the gap is embeddings, biases and norms"
    log_log(fig, ax, "12·L·d² (attention and MLP matrices of a GPT-2 block)", "unique parameters", title, path, dpi)
