"""Stage bias: weights against biases per model and component, two definitions side by side. Writes <paths.bias>."""

from __future__ import annotations

import logging

import pandas as pd

from pipeline import atomic, params, results, splits
from pipeline.cli import run

log = logging.getLogger("bias")


def main() -> None:
    cfg = params.load()
    frames = [splits.split(results.inventory(cfg, name)) for name in cfg.models]
    table = pd.concat(frames, ignore_index=True)
    for name in cfg.models:
        row = table[(table.model == name) & (table.definition == "course") & (table.component == "all")]
        bias = row[row.category == "bias"].iloc[0]
        log.info("%s: %s parameters named *.bias (%.4f %%)", name, f"{bias.params:,}", 100 * bias.share_of_model)
    atomic.write_csv(cfg.paths["bias"], table)


if __name__ == "__main__":
    run(main)
