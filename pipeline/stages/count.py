"""Stage count: the per-tensor inventory of every model, built on the meta device, and its summary.

Writes <paths.inventory>/<name>.csv per model, <paths.summary> (one row per model) and
<paths.metrics>. All models go through one process, so torch and transformers are imported once.
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.core import atomic, compose, params, progress
from pipeline.core.errors import collect, run
from pipeline.cost import estimates
from pipeline.model import build, conventions
from pipeline.model.count import SUMMARY_COLUMNS, count_built
from pipeline.model.whatif import whatif_grid

log = logging.getLogger("count")


def main() -> None:
    cfg = params.load()
    marked = compose.what_if(cfg)  # models an override changed: their stated sizes no longer apply

    def one(name: str, spec: params.ModelSpec) -> tuple[pd.DataFrame, dict, list, pd.DataFrame, pd.DataFrame]:
        inv, row, model, config = count_built(spec, cfg.models_dir(name))
        row["what_if"] = marked.get(name, "")
        if name in marked:
            for key in ("stated_size", "stated_params", "stated_active", "stated_active_params"):
                row[key] = None
            log.warning("%s: changed by an override (%s); its stated size no longer applies", name, marked[name])
        mine = conventions.conventions(inv, row)
        by_name = {c["convention"]: c["params"] for c in mine}
        causal = build.is_causal_class(type(model), config)
        costs = estimates.table(name, model, config, row, by_name, cfg.cost, causal)
        curve = estimates.memory_curve(name, model, config, row, cfg.cost, causal)
        log.info("%s: %s parameters in %d tensors (%s)", name, f"{row['total']:,}", len(inv), row["model_class"])
        return inv, row, mine, costs, curve

    # Every model is counted before anything is written, and every refused one is named (one line each)
    counted = collect(progress.bar(cfg.models.items(), "count", "models", total=len(cfg.models)), one)
    inventories = {name: inv for name, (inv, *_) in counted.items()}
    rows = [row for _, row, *_ in counted.values()]
    conv = [c for _, _, mine, *_ in counted.values() for c in mine]
    costs = [table for _, _, _, table, _ in counted.values()]
    curves = [curve for *_, curve in counted.values() if not curve.empty]
    grid = whatif_grid(cfg)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for column in (
        "stated_params",
        "stated_active_params",
        "checkpoint_tensors",
        "checkpoint_buffers",
        "checkpoint_extra",
        "checkpoint_bytes",
        "bytes_fetched",
        "n_experts",
        "experts_per_token",
        "routed_expert_params",
    ):
        summary[column] = summary[column].astype("Int64")
    inv_dir = cfg.paths["inventory"]
    metrics = {row["model"]: row["total"] for row in rows}  # flat and few: one column per model in dvc exp show
    with atomic.batch():  # every file, or none
        for name, inv in inventories.items():
            atomic.write_csv(f"{inv_dir}/{name}.csv", inv)
        atomic.sync_dir(inv_dir, keep=[f"{name}.csv" for name in inventories])
        atomic.write_csv(cfg.paths["summary"], summary)
        atomic.write_csv(cfg.paths["conventions"], conventions.table(conv))
        atomic.write_csv(cfg.paths["whatif"], grid)
        atomic.write_csv(cfg.paths["cost"], pd.concat(costs, ignore_index=True))
        fit = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=estimates.FIT_COLUMNS)
        atomic.write_csv(cfg.paths["fit"], fit)
        atomic.write_json(cfg.paths["metrics"], metrics)


if __name__ == "__main__":
    run(main)
