"""What a section is given and what it gives back: every table the report reads (each CSV once), and its text
with the figures it draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import results
from pipeline.core.params import Params
from pipeline.model import inventory


@dataclass(frozen=True)
class Figure:
    """One PNG: draw(*args, path, dpi) writes it as `name` under paths.figures."""

    draw: Callable[..., None]
    args: tuple[Any, ...]
    name: str


@dataclass
class Section:
    """A section's Markdown (empty: the section has nothing to say for this sweep) and the figures it shows."""

    text: str
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Data:
    """Every table the report is drawn from, for the models of this sweep, read once."""

    cfg: Params
    summary: pd.DataFrame
    full: dict[str, pd.DataFrame]  # every inventory row: parameters, buffers, quantization metadata, extras
    invs: dict[str, pd.DataFrame]  # the parameter rows alone
    ties: pd.DataFrame
    tie_sample: pd.DataFrame
    bias: pd.DataFrame
    conv: pd.DataFrame
    grid: pd.DataFrame
    costs: pd.DataFrame
    fit: pd.DataFrame  # inference memory against context (results/fit.csv)
    flops: pd.DataFrame  # FLOPs per token against context (results/flops.csv)
    stats: pd.DataFrame
    hists: pd.DataFrame
    published: pd.DataFrame
    census: pd.DataFrame  # the census stage's rows (results/census.csv), none without a census.list
    figures_from_report: Path  # the figures folder, relative to the report's own folder

    def link(self, name: str) -> str:
        """The Markdown path of figure `name`, as the report links it."""
        return (self.figures_from_report / name).as_posix()


def load(cfg: Params, figures_from_report: Path) -> Data:
    full = {name: results.inventory(cfg, name) for name in cfg.models}
    return Data(
        cfg=cfg,
        summary=results.summary(cfg),
        full=full,
        invs={name: inventory.parameters(inv) for name, inv in full.items()},
        ties=results.table(cfg, "ties"),
        tie_sample=results.table(cfg, "tie_sample"),
        bias=results.table(cfg, "bias"),
        conv=results.table(cfg, "conventions"),
        grid=results.grid(cfg),
        costs=results.table(cfg, "cost"),
        fit=results.table(cfg, "fit"),
        flops=results.table(cfg, "flops"),
        stats=results.table(cfg, "distributions"),
        hists=results.table(cfg, "histograms"),
        published=results.published(cfg),
        census=results.census(cfg),
        figures_from_report=figures_from_report,
    )
