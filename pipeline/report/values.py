"""What the values look like: statistics of every value, and histograms re-binned over each group's own range."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.report import plotdata
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotdata import rebinned
from pipeline.report.plotting import SMALL, save, setup
from pipeline.report.text import md_table, whole


def distributions_section(stats: pd.DataFrame, hists: pd.DataFrame, fig: str | None) -> str:
    out = ["## What the values look like", ""]
    if stats.empty:
        out += [
            "No model in this sweep comes with weights (all are built from their configuration), so there are "
            "no values to describe. Give a model `source: path` or `source: hub` to see them.",
            "",
        ]
        return "\n".join(out)
    groups = stats[stats["by"].isin(["group", "all"])].dropna(subset=["mean"])
    rows = [
        [
            f"`{r.model}`",
            r.group.replace("_", " "),
            whole(r.count),
            f"{r.mean:.4g}",
            f"{r.std:.4g}",
            f"{r.min:.4g}",
            f"{r.max:.4g}",
            f"{r.l2:.4g}",
        ]
        for r in groups.itertuples(index=False)
    ]
    out += [
        "Streamed tensor by tensor from the memory-mapped checkpoint (each tied tensor once). Weights are the "
        "matrices and embeddings; biases the Linear/Conv1D biases and norm shifts; norm gains apart. "
        "By role and by component: `results/distributions.csv`; histograms: `results/histograms.csv`.",
        "",
        md_table(["model", "values", "count", "mean", "std", "min", "max", "L2 norm"], rows, "llrrrrrr"),
        "",
    ]
    skipped = stats[stats["by"] == "skipped"]
    if not skipped.empty:
        out += [
            "Not read as values (packed or integer codes whose meaning needs the format's own dequantization): "
            + "; ".join(f"`{r.model}`: {whole(r.count)} parameters stored as {r.group}" for r in skipped.itertuples())
            + ".",
            "",
        ]
    if fig is not None:
        out += [_sampled(stats, hists), "", f"![Distribution of parameter values]({fig})", ""]
    return "\n".join(out)


def _sampled(stats: pd.DataFrame, hists: pd.DataFrame) -> str:
    """Which values the histograms count: all of them, or every k-th of each tensor."""
    every = int(hists["every"].max())
    if every == 1:
        return "The histograms count every value, each in its bfloat16 bucket, re-binned over each group's own range."
    read = stats[stats["by"] == "all"].set_index("model")["count"]
    counted = hists.groupby("model", sort=False)["count"].sum()
    parts = "; ".join(f"`{m}`: {whole(n)} of {whole(read[m])}" for m, n in counted.items())
    return (
        f"The histograms count every {every}th value of each tensor, from its first (a systematic sample: {parts}); "
        "the statistics above use every value. Set `values.hist_every: 1` to count them all, at about twice "
        "the time of the pass (`make bench`)."
    )


def section(d: Data) -> Section:
    name = "distributions.png"
    drawn = []
    if not d.hists.empty:
        bins = int(d.cfg.values["bins"]) or plotdata.DEFAULT_BINS
        drawn.append(Figure(distributions, (d.hists, bins), name))
    return Section(distributions_section(d.stats, d.hists, d.link(name) if drawn else None), drawn)


def distributions(hists: pd.DataFrame, bins: int, path: Path, dpi: int) -> None:
    """Value histograms (density, log scale) of weights, biases and norm gains, each over its own range.

    A group whose values are one number in every model (freshly initialised biases at 0, gains at 1)
    gets no panel of its own: a line under the panels says which value, so no panel is left empty.
    """
    plt, sns = setup()
    data = rebinned(hists, bins)
    every = int(hists["every"].max()) if "every" in hists and len(hists) else 1
    counted = "every value" if every == 1 else f"every {every}th value"
    present = [g for g in ("weights", "biases", "norm_gains") if g in set(data["group"])]
    spread = [g for g in present if data.loc[data["group"] == g, "single"].isna().any()]
    flat = [g for g in present if g not in spread]
    panels = max(len(spread), 1)
    fig, axes = plt.subplots(1, panels, figsize=(max(4.6 * panels, 8.0), 3.8), squeeze=False)
    if not spread:  # nothing spread out to draw: the figure is its sentences
        axes[0][0].axis("off")
    notes = []
    for ax, group in zip(axes[0], spread, strict=False):
        part = data[(data["group"] == group) & (data["density"] > 0)]
        ax.set_title(group.replace("_", " "))
        curves = part[part["single"].isna()]
        if not curves.empty:
            sns.lineplot(data=curves, x="value", y="density", hue="model", ax=ax, palette="colorblind", linewidth=1.2)
            ax.set_yscale("log")
            ax.legend(fontsize=SMALL)
        ones = part[part["single"].notna()].drop_duplicates("model")
        notes += [f"{group.replace('_', ' ')} of {r['model']}: all {r['single']:.4g}" for _, r in ones.iterrows()]
        ax.set_xlabel("parameter value")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.locator_params(axis="x", nbins=5)
    for group in flat:
        ones = data[data["group"] == group].drop_duplicates("model")
        values = sorted({f"{v:.4g}" for v in ones["single"]})
        models = ", ".join(ones["model"])
        notes.append(f"{group.replace('_', ' ')}: every value counted is {' or '.join(values)} ({models})")
    fig.suptitle(f"Distribution of parameter values (each group over its own range; {counted} of each tensor)")
    fig.tight_layout()
    if notes:
        notes = list(dict.fromkeys(notes))
        fig.subplots_adjust(bottom=0.24 + 0.055 * len(notes))
        fig.text(0.5, 0.01, "\n".join(notes), ha="center", va="bottom", fontsize="small")
    save(fig, path, dpi)
