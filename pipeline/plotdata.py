"""The CSVs `dvc plots show` and `dvc plots diff` draw (dvc.yaml `plots:`), written by the report stage.

Each by-model table carries `total` (unique parameters): the templates in .dvc/plots/ order the models by it,
smallest first, whatever the sweep's order, and `dvc plots diff` overlays the revisions' rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline import atomic, figures
from pipeline.params import Params

log = logging.getLogger("plotdata")

DEFAULT_BINS = 100  # histogram bins when values.bins is 0 (the report's fallback too)


def by_size(summary: pd.DataFrame) -> pd.DataFrame:
    """model and total, smallest model first (models of one size keep their sweep order)."""
    table = summary.reset_index(drop=True)[["model", "total"]].astype({"total": "int64"})
    return table.sort_values("total", kind="stable").reset_index(drop=True)


def totals(summary: pd.DataFrame) -> pd.DataFrame:
    """Unique parameters per model: exact, and in millions for the axis."""
    table = by_size(summary)
    return table.assign(millions=table["total"] / 1e6)


def bias_share(summary: pd.DataFrame) -> pd.DataFrame:
    """Parameters named `*.bias` (the course's definition) as a percentage of each model's parameters."""
    table = by_size(summary)
    named = summary.set_index("model").loc[table["model"], "bias_named"].to_numpy(dtype="int64")
    return table.assign(bias_named=named, bias_percent=100 * named / table["total"].to_numpy())


def values(summary: pd.DataFrame, hists: pd.DataFrame, bins: int) -> pd.DataFrame:
    """Value histograms re-binned over each (model, group)'s own range, as density; empty without weights."""
    columns = ["model", "total", "group", "value", "density"]
    if hists.empty:
        return pd.DataFrame(columns=columns)
    data = figures.rebinned(hists, bins)
    sizes = by_size(summary).set_index("model")["total"]
    return data.assign(total=data["model"].map(sizes).astype("int64"))[columns]


def whatif(grid: pd.DataFrame) -> pd.DataFrame:
    """The what-if grid: parameters against 12·L·d², one line per width d."""
    return grid[["n_layer", "n_embd", "twelve_l_d2", "params"]].sort_values(["n_embd", "n_layer"], kind="stable")


def tables(summary: pd.DataFrame, hists: pd.DataFrame, grid: pd.DataFrame, bins: int) -> dict[str, pd.DataFrame]:
    """{file name: table} for every plot in dvc.yaml.

    values.csv has rows only when the bias stage counted values (models with weights); without them it is its header
    alone, so `dvc plots show` finds every file it was told of and the page says that plot has no rows.
    """
    return {
        "totals.csv": totals(summary),
        "bias_share.csv": bias_share(summary),
        "whatif.csv": whatif(grid),
        "values.csv": values(summary, hists, bins),
    }


def write(cfg: Params, summary: pd.DataFrame, hists: pd.DataFrame, grid: pd.DataFrame) -> list[Path]:
    """Write the plot CSVs under paths.plots (inside the caller's atomic batch) and drop any no longer drawn.

    summary, hists and grid are the report's own frames (results.summary, the histograms table, results.grid).
    """
    folder = Path(cfg.paths["plots"])
    bins = int(cfg.values["bins"]) or DEFAULT_BINS
    made = tables(summary, hists, grid, bins)
    for name, table in made.items():
        atomic.write_csv(folder / name, table)
    atomic.sync_dir(folder, keep=made)
    log.info("wrote %d plot tables under %s", len(made), folder)
    return [folder / name for name in made]
