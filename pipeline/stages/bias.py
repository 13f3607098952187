"""Stage bias: weights against biases per model and component, two definitions side by side.

Writes <paths.bias> for every model. For models with weights (source path or hub) it also streams
their values once and writes <paths.distributions> (count, mean, std, min, max, L2 norm by role,
component and value group) and <paths.histograms> (exact counts per bfloat16 bucket, by value group).
Both are cached per model (<paths.memo>/bias, pipeline/core/memo.py), keyed by the model's inventory CSV,
its files (provenance.json), the values settings and the code: a sweep that gains a model splits that one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from pipeline import formats
from pipeline.core import atomic, memo, params, results
from pipeline.core.errors import about, run
from pipeline.model import inventory, splits
from pipeline.values import distributions

log = logging.getLogger("bias")


def _inventory_file(cfg: params.Params, name: str) -> Path:
    return Path(cfg.paths["inventory"]) / f"{name}.csv"


def _frames(payload: list) -> tuple[pd.DataFrame, ...]:
    return tuple(memo.frame_from_plain(f) for f in payload)


def value_tables(cfg: params.Params, cache: memo.Memo) -> tuple[pd.DataFrame, pd.DataFrame]:
    v = cfg.values
    stats, hists = (
        [pd.DataFrame(columns=distributions.STAT_COLUMNS)],
        [pd.DataFrame(columns=distributions.HIST_COLUMNS)],
    )
    for name in cfg.models:
        folder = cfg.models_dir(name)
        with about(name):
            loaded = formats.load(folder, name)
            if loaded.format is None:  # no weights, or range reads that fetched only the embeddings
                continue
            prov = json.loads((folder / "provenance.json").read_text())
            key = cache.key("values", prov, memo.folder_state(folder), memo.file_digest(_inventory_file(cfg, name)), v)
            found = cache.fetch(key, _frames)
            if found is None:
                found = _frames(cache.put(key, [memo.frame_to_plain(f) for f in _distributions(cfg, name, loaded)]))
            s, h = found
        stats.append(s)
        hists.append(h)
        read = s.loc[s.by == "all", "count"]
        log.info("%s: value statistics of %s parameters", name, f"{int(read.iloc[0]) if len(read) else 0:,}")
    return pd.concat(stats, ignore_index=True), pd.concat(hists, ignore_index=True)


def _distributions(cfg: params.Params, name: str, loaded: formats.Loaded) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Value statistics and histograms of one model with weights (the pass imports torch)."""
    v, regrouped = cfg.values, loaded.regrouped
    return distributions.distributions(
        cfg.models_dir(name),
        regrouped.entries + regrouped.metadata,  # fp8 scales are read with their weights
        inventory.parameters(results.inventory(cfg, name)),
        name,
        int(v["bins"]),
        int(v["chunk_elements"]),
        int(v["threads"]),
        scales=regrouped.scales,
        every=int(v["hist_every"]),
    )


def split(cfg: params.Params, name: str, cache: memo.Memo) -> pd.DataFrame:
    """The two definitions' weight/bias split of one model, from the cache when its inventory is unchanged."""
    key = cache.key("split", memo.file_digest(_inventory_file(cfg, name)))
    found = cache.fetch(key, memo.frame_from_plain)
    if found is None:
        found = memo.frame_from_plain(cache.put(key, memo.frame_to_plain(splits.split(results.inventory(cfg, name)))))
    return found


def main() -> None:
    cfg = params.load()
    cache = memo.Memo(cfg.paths["memo"], "bias")
    frames = [split(cfg, name, cache) for name in cfg.models]
    table = pd.concat(frames, ignore_index=True)
    for name in cfg.models:
        row = table[(table.model == name) & (table.definition == "course") & (table.component == "all")]
        bias = row[row.category == "bias"].iloc[0]
        log.info("%s: %s parameters named *.bias (%.4f %%)", name, f"{bias.params:,}", 100 * bias.share_of_model)
    stats, hists = value_tables(cfg, cache)  # torch is imported only if a model with weights is not cached
    with atomic.batch():
        atomic.write_csv(cfg.paths["bias"], table)
        atomic.write_csv(cfg.paths["distributions"], stats)
        atomic.write_csv(cfg.paths["histograms"], hists)
    cache.prune()
    log.info("%d models: %s", len(cfg.models), cache.summary())


if __name__ == "__main__":
    run(main)
