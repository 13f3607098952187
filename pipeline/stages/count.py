"""Stage count: the per-tensor inventory of every model, built on the meta device, and its summary.

Writes <paths.inventory>/<name>.csv per model, <paths.summary> (one row per model) and
<paths.metrics>. All models go through one process, so torch and transformers are imported once, and only
when a model (or the what-if grid) is not in the cache (<paths.memo>/count, pipeline/core/memo.py): each
model's work is keyed by its params entry, its files, the cost settings, its what-if note and the code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.answers import needs
from pipeline.core import atomic, compose, memo, params, progress
from pipeline.core.errors import collect, run
from pipeline.cost import estimates, flops
from pipeline.model import build, conventions
from pipeline.model.count import SUMMARY_COLUMNS, count_folder, provenance
from pipeline.model.whatif import whatif_grid

log = logging.getLogger("count")


def count_one(cfg: params.Params, name: str, spec: params.ModelSpec, note: str) -> dict:
    """One model's inventory (as its CSV text), summary row, conventions, costs, memory and FLOPs curves."""
    counted = count_folder(spec, cfg.models_dir(name))
    inv, row, model, config = counted.inv, counted.row, counted.model, counted.config
    row["what_if"] = note
    if note:
        for key in ("stated_size", "stated_params", "stated_active", "stated_active_params"):
            row[key] = None
        log.warning("%s: changed by an override (%s); its stated size no longer applies", name, note)
    mine = conventions.conventions(inv, row)
    by_name = {c["convention"]: c["params"] for c in mine}
    causal = build.is_causal_class(type(model), config)
    costs = estimates.table(name, model, config, row, by_name, cfg.cost, causal)
    curve = needs.memory_curve(name, inv, row, model, config, cfg.cost)
    compute = flops.curve(name, inv, row, model, config, cfg.cost)
    log.info("%s: %s parameters in %d tensors (%s)", name, f"{row['total']:,}", len(inv), row["model_class"])
    return {
        "inventory": atomic.csv_text(inv),
        "row": row,
        "conventions": mine,
        "costs": memo.frame_to_plain(costs),
        "curve": memo.frame_to_plain(curve),
        "flops": memo.frame_to_plain(compute),
    }


def _decoded(payload: dict) -> tuple[str, dict, list, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    inv, row, mine = payload["inventory"], payload["row"], payload["conventions"]
    if not (isinstance(inv, str) and isinstance(row, dict) and isinstance(mine, list)):
        raise TypeError("not a count entry")
    if row.get("model") is None or any(not isinstance(c, dict) for c in mine):
        raise ValueError("not a count entry")
    frames = (memo.frame_from_plain(payload[k]) for k in ("costs", "curve", "flops"))
    return (inv, row, mine, *frames)


def main() -> None:
    cfg = params.load()
    marked = compose.what_if(cfg, cache=cfg.paths["memo"])  # models an override changed: stated sizes lapse
    cache = memo.Memo(cfg.paths["memo"], "count")

    def one(name: str, spec: params.ModelSpec) -> tuple[str, dict, list, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        note = marked.get(name, "")
        folder = cfg.models_dir(name)
        key = cache.key(spec, provenance(folder, name), memo.folder_state(folder), cfg.cost, note)
        found = cache.fetch(key, _decoded)
        if found is None:
            found = _decoded(cache.put(key, count_one(cfg, name, spec, note)))
        return found

    # Every model is counted before anything is written, and every refused one is named (one line each)
    counted = collect(progress.bar(cfg.models.items(), "count", "models", total=len(cfg.models)), one)
    inventories = {name: inv for name, (inv, *_) in counted.items()}
    rows = [row for _, row, *_ in counted.values()]
    conv = [c for _, _, mine, *_ in counted.values() for c in mine]
    costs = [table for _, _, _, table, _, _ in counted.values()]
    curves = [curve for *_, curve, _ in counted.values() if not curve.empty]
    computes = [compute for *_, compute in counted.values() if not compute.empty]
    grids = memo.Memo(
        cfg.paths["memo"], "whatif", code="count"
    )  # the grid, counted on the meta device, also needs torch
    key = grids.key(cfg.whatif)
    grid = grids.fetch(key, memo.frame_from_plain)
    if grid is None:
        grid = memo.frame_from_plain(grids.put(key, memo.frame_to_plain(whatif_grid(cfg))))
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
        for name, inv in inventories.items():  # one file per model: a sweep of 200 rewrites only those that changed
            atomic.write_changed(Path(inv_dir) / f"{name}.csv", inv.encode("utf-8"))
        atomic.sync_dir(inv_dir, keep=[f"{name}.csv" for name in inventories])
        atomic.write_csv(cfg.paths["summary"], summary)
        atomic.write_csv(cfg.paths["conventions"], conventions.table(conv))
        atomic.write_csv(cfg.paths["whatif"], grid)
        atomic.write_csv(cfg.paths["cost"], pd.concat(costs, ignore_index=True))
        fit = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=needs.CURVE_COLUMNS)
        atomic.write_csv(cfg.paths["fit"], fit)
        compute = pd.concat(computes, ignore_index=True) if computes else pd.DataFrame(columns=flops.FLOPS_COLUMNS)
        atomic.write_csv(cfg.paths["flops"], compute)
        atomic.write_json(cfg.paths["metrics"], metrics)
    cache.prune()
    log.info("%d models: %s", len(counted), cache.summary())


if __name__ == "__main__":
    run(main)
