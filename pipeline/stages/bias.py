"""Stage bias: weights against biases per model and component, two definitions side by side.

Writes <paths.bias> for every model. For models with weights (source path or hub) it also streams
their values once and writes <paths.distributions> (count, mean, std, min, max, L2 norm by role,
component and value group) and <paths.histograms> (exact counts per bfloat16 bucket, by value group).
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline import formats
from pipeline.core import atomic, params, results
from pipeline.core.errors import about, run
from pipeline.model import inventory, splits

log = logging.getLogger("bias")


def value_tables(cfg: params.Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    from pipeline.values import distributions

    v = cfg.values
    stats, hists = (
        [pd.DataFrame(columns=distributions.STAT_COLUMNS)],
        [pd.DataFrame(columns=distributions.HIST_COLUMNS)],
    )
    for name in cfg.models:
        folder = cfg.models_dir(name)
        with about(name):
            loaded = formats.load(folder, name)
            regrouped, fmt = loaded.regrouped, loaded.fmt
            entries = regrouped.entries + regrouped.metadata  # fp8 scales are read with their weights
            if fmt not in ("safetensors", "gguf"):  # no weights, or range reads that fetched only the embeddings
                continue
            params_inv = inventory.parameters(results.inventory(cfg, name))
            bins = int(v["bins"])
            s, h = distributions.distributions(
                folder,
                entries,
                params_inv,
                name,
                bins,
                int(v["chunk_elements"]),
                int(v["threads"]),
                scales=regrouped.scales,
                every=int(v["hist_every"]),
            )
        stats.append(s)
        hists.append(h)
        read = s.loc[s.by == "all", "count"]
        log.info("%s: value statistics of %s parameters", name, f"{int(read.iloc[0]) if len(read) else 0:,}")
    return pd.concat(stats, ignore_index=True), pd.concat(hists, ignore_index=True)


def main() -> None:
    cfg = params.load()
    frames = [splits.split(results.inventory(cfg, name)) for name in cfg.models]
    table = pd.concat(frames, ignore_index=True)
    for name in cfg.models:
        row = table[(table.model == name) & (table.definition == "course") & (table.component == "all")]
        bias = row[row.category == "bias"].iloc[0]
        log.info("%s: %s parameters named *.bias (%.4f %%)", name, f"{bias.params:,}", 100 * bias.share_of_model)
    stats, hists = value_tables(cfg)  # torch is imported only if some model has weights
    with atomic.batch():
        atomic.write_csv(cfg.paths["bias"], table)
        atomic.write_csv(cfg.paths["distributions"], stats)
        atomic.write_csv(cfg.paths["histograms"], hists)


if __name__ == "__main__":
    run(main)
