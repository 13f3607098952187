"""Where the parameters are: each model's parameters by component, as a table of shares and stacked bars."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.model import inventory
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import COMPONENT_LABELS, SMALL, legend_outside, setup, text_width
from pipeline.report.text import md_table, percent, whole


def components_section(cfg: params.Params, invs: dict[str, pd.DataFrame], fig: str) -> str:
    present = [c for c in inventory.COMPONENTS if any((inv["component"] == c).any() for inv in invs.values())]
    rows = []
    for name, inv in invs.items():
        sums = inv.groupby("component")["numel"].sum()
        total = int(inv["numel"].sum())
        rows.append([f"`{name}`"] + [f"{whole(sums.get(c, 0))} ({percent(sums.get(c, 0), total)})" for c in present])
    header = ["model"] + [COMPONENT_LABELS[c] for c in present]
    return "\n".join(
        [
            "## Where the parameters are",
            "",
            "By component. A tied output head has no tensor of its own, so it adds nothing here.",
            "",
            md_table(header, rows),
            "",
            f"![Parameters by component]({fig})",
            "",
        ]
    )


def section(d: Data) -> Section:
    name = "components.png"
    by_component = pd.concat(
        [
            inv.groupby("component", sort=False)["numel"].sum().rename("params").reset_index().assign(model=n)
            for n, inv in d.invs.items()
        ]
    )
    return Section(components_section(d.cfg, d.invs, d.link(name)), [Figure(components, (by_component,), name)])


def components(by_component: pd.DataFrame, path: Path, dpi: int) -> None:
    """100 % stacked horizontal bars: each model's parameters by component, as shares, so small parts stay visible."""
    plt, sns = setup()
    wide = by_component.pivot_table(index="model", columns="component", values="params", aggfunc="sum", sort=False)
    wide = wide.reindex(columns=[c for c in COMPONENT_LABELS if c in wide.columns]).fillna(0)
    wide = 100 * wide.div(wide.sum(axis=1), axis=0)
    wide = wide.rename(columns=COMPONENT_LABELS)
    fig, ax = plt.subplots(figsize=(8, 1.0 * len(wide) + 1.8))
    # one distinct colour per component drawn: colorblind's 10 while they suffice, else tab20's 20
    colors = sns.color_palette("colorblind" if len(wide.columns) <= 10 else "tab20", n_colors=len(wide.columns))
    palette = dict(zip(wide.columns, colors, strict=True))
    left = pd.Series(0.0, index=wide.index)
    for column in wide.columns:
        ax.barh(wide.index, wide[column], left=left, label=column, color=palette[column], height=0.6)
        left += wide[column]
    ax.set_xlim(0, 100)
    for y, (_, shares) in enumerate(wide.iterrows()):  # label each part inside its bar where the label fits
        start, small = 0.0, []
        for part, value in shares.items():
            label = ax.text(start + value / 2, y, f"{value:.1f} %", ha="center", va="center", fontsize=SMALL)
            if value <= 0 or text_width(fig, ax, label) + 1.0 > value:  # it would spill out: said below instead
                label.remove()
                if value > 0:
                    small.append(f"{part} {value:.2g} %")
            start += value
        if small:  # wrapped, so a sweep of many kinds of model keeps its notes under its own bar
            note = textwrap.fill("also: " + ", ".join(small), width=80)
            ax.text(0, y + 0.34, note, ha="left", va="top", fontsize=SMALL, linespacing=1.0)
    ax.invert_yaxis()
    legend_outside(fig, ax, "share of the model's parameters (%)", "Where the parameters are", path, dpi)
