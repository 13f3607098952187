"""Stage ties: per model, is the output unembedding the input embedding? Writes <paths.ties>."""

from __future__ import annotations

import logging

import pandas as pd

from pipeline import atomic, params, results, tying
from pipeline.cli import run

log = logging.getLogger("ties")


def main() -> None:
    cfg = params.load()
    summary = results.summary(cfg)
    rows = []
    for name in cfg.models:
        inv = results.inventory(cfg, name)
        s = summary.loc[name]
        rows.append(tying.evidence(inv, s["declared_tied"], s["input_embedding"], s["output_embedding"]))
        log.info("%s: declared tied %s, same tensor %s", name, rows[-1]["declared_tied"], rows[-1]["structural_tied"])
    atomic.write_csv(cfg.paths["ties"], pd.DataFrame(rows, columns=tying.COLUMNS))


if __name__ == "__main__":
    run(main)
