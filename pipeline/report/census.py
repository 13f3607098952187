"""The census: each listed repository's exact count beside its own claims (index, Hub API), where they differ most,
and a figure of claimed against exact."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import log_log, setup

MOST = 15  # rows of the table of the largest differences


def claims(census: pd.DataFrame) -> pd.DataFrame:
    """One row per (repository, claim) that names a finite count: source, exact, claimed, which, ratio, explained."""
    rows = []
    for r in census[census["error"].fillna("") == ""].itertuples(index=False):
        for which in ("index", "hub"):
            said = getattr(r, f"{which}_total")
            try:
                value = float(said)
            except (TypeError, ValueError):
                continue
            if math.isnan(value) or not math.isfinite(value) or value <= 0 or not r.total:
                continue
            rows.append(
                {
                    "source": r.source,
                    "exact": int(r.total),
                    "claimed": value,
                    "claim": "index total_parameters" if which == "index" else "Hub API",
                    "ratio": value / int(r.total),
                    "explained": getattr(r, f"{which}_explained"),
                }
            )
    return pd.DataFrame(rows, columns=["source", "exact", "claimed", "claim", "ratio", "explained"])


def section(d: Data) -> Section:
    census = d.census
    if census.empty:
        return Section(
            "\n".join(
                [
                    "## Census",
                    "",
                    "No census in this run (`census.list` is empty). `hmp census LIST -o OUT.csv` counts every "
                    "repository of a list from its headers alone; set `census.list` to a list under `conf/census/` "
                    "(`dvc exp run -S census.list=conf/census/shipped.txt`) to make it part of the report.",
                    "",
                ]
            )
        )
    counted = census[census["error"].fillna("") == ""]
    found = claims(census)
    lines = [
        "## Census: our exact count beside each repository's own",
        "",
        f"`{d.cfg.census['list']}` lists {len(census):,} sources; {len(counted):,} were counted from their "
        f"headers alone ({int(census['bytes_fetched'].fillna(0).sum()):,} bytes read in all) and "
        f"{len(census) - len(counted):,} refused, each with its reason in `results/census.csv`. "
        f"{counted['architecture'].nunique():,} distinct architectures were built, each once.",
        "",
    ]
    figures = []
    if found.empty:
        lines += ["No counted repository states a count of its own (index `total_parameters` or Hub API).", ""]
    else:
        found = found.assign(off=(found["ratio"].map(math.log).abs()))
        worst = found.sort_values(["off", "source", "claim"], ascending=[False, True, True], kind="stable").head(MOST)
        table = pd.DataFrame(
            {
                "source": worst["source"].map(lambda s: f"`{s}`"),
                "exact": worst["exact"].map(lambda n: f"{n:,}"),
                "claimed": worst["claimed"].map(_shown),
                "by": worst["claim"],
                "claimed / exact": worst["ratio"].map(lambda x: f"{x:.4g}"),
                "why": worst["explained"].fillna(""),
            }
        )
        agree = int((found["ratio"] == 1).sum())
        lines += [
            f"{len(found):,} claims were set beside the exact count; {agree:,} agree to the parameter. "
            f"The {len(worst)} that differ most:",
            "",
            table.to_markdown(index=False),
            "",
            f"![Claimed against exact]({d.link('census.png')})",
            "",
        ]
        figures.append(Figure(claimed_vs_exact, (found,), "census.png"))
    return Section("\n".join(lines), figures)


def _shown(value: float) -> str:
    return f"{int(value):,}" if value == int(value) and value < 1e16 else f"{value:.3g}"


def claimed_vs_exact(found: pd.DataFrame, path: Path, dpi: int) -> None:
    """Each claim against the exact count (log-log), the line where they agree."""
    plt, sns = setup()
    fig, ax = plt.subplots(figsize=(7, 5))
    shown = found.assign(claimed=found["claimed"].clip(upper=found["exact"].max() * 1e3))
    sns.scatterplot(data=shown, x="exact", y="claimed", hue="claim", style="claim", ax=ax, s=30)
    lo, hi = shown[["exact", "claimed"]].min().min(), shown[["exact", "claimed"]].max().max()
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8, label="claimed = exact")
    title = "Claimed against exact parameters (claims above 1000× shown at 1000×)"
    log_log(fig, ax, "exact parameters (our count)", "claimed parameters", title, path, dpi)
