"""The CSVs `dvc plots show` and `dvc plots diff` draw (dvc.yaml `plots:`), written by the report stage.

Each by-model table carries `total` (unique parameters): the templates in .dvc/plots/ order the models by it,
smallest first, whatever the sweep's order, and `dvc plots diff` overlays the revisions' rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.core import atomic
from pipeline.core.params import Params

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
    data = rebinned(hists, bins)
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


def rebinned(hists: pd.DataFrame, bins: int, tail: float = 0.001) -> pd.DataFrame:
    """Bucket counts re-binned over each (model, group)'s own central range: [the tail, 1 − tail] quantiles.

    A group whose values are (nearly) one number, such as norm gains all at 1.0, gets a narrow range around it.
    Returns model, group, value (bin centre), density (of all the group's values) and the share left outside.
    """
    import numpy as np

    out = []
    finite = hists[np.isfinite(hists["bin_left"]) & np.isfinite(hists["bin_right"])]
    for (model, group), part in finite.groupby(["model", "group"], sort=False):
        part = part.sort_values("bin_left")
        counts = part["count"].to_numpy(dtype=float)
        total = counts.sum()
        if total == 0:
            continue
        cum = np.cumsum(counts) / total
        lo = float(part["bin_left"].to_numpy()[np.searchsorted(cum, tail)])
        hi = float(part["bin_right"].to_numpy()[min(np.searchsorted(cum, 1 - tail), len(cum) - 1)])
        single = hi - lo <= 1e-6 * max(abs(lo), abs(hi), 1e-12) or len(part) == 1
        if single:  # (nearly) one value: a narrow window around it, and the figure says so
            centre = 0.0 if abs(lo) < 1e-30 else lo
            pad = max(abs(centre) * 0.01, 1e-3)
            lo, hi = centre - pad, centre + pad
        edges = np.linspace(lo, hi, bins + 1)
        centres = (part["bin_left"].to_numpy() + part["bin_right"].to_numpy()) / 2
        inside, _ = np.histogram(centres, bins=edges, weights=counts)
        width = edges[1] - edges[0]
        out.append(
            pd.DataFrame(
                {
                    "model": model,
                    "group": group,
                    "value": (edges[:-1] + edges[1:]) / 2,
                    "density": inside / total / width,
                    "outside": 1 - inside.sum() / total,
                    "single": float(part["bin_left"].iloc[0]) if single else np.nan,
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["model", "group", "value", "density"])
