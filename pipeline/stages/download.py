"""Stage download: materialise <paths.models>/<name>/ for every model of the sweep, in one process.

Source config writes config.json from the model's architecture block (no network). Source path
takes config.json and the weights from a local folder; source hub from the Hugging Face Hub at the
model's revision. Every source writes provenance.json: where the files came from (with the resolved
commit sha for the Hub), their sizes and sha256, and what the folder was made from (pipeline/sources/current.py).

A folder that still matches its model (the same params entry and code, and for source path the same
source files) is kept as it is; the others are made in temp folders beside their final place. Every model
is checked before any folder is replaced: each refused one is named (one line each) and nothing is
written. Then each new folder replaces its old one whole, and the folders of models no longer listed are
removed. It also writes <paths.models>/sweep.json, the sweep's models in order with their entries' hashes:
the later stages depend on <paths.models> alone (dvc.yaml), so a model reordered, changed, added or removed
reaches them through it. `python -m pipeline.stages.download NAME ...` does the same for the models named
alone (and removes nothing else).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from pathlib import Path

from pipeline import sources
from pipeline.core import atomic, compose, params, progress
from pipeline.core.errors import PipelineError, about, collect, run
from pipeline.sources import current

log = logging.getLogger("download")

SWEEP = "sweep.json"  # in <paths.models>: the models in sweep order, each with its entry's hash


def materialise(spec: params.ModelSpec, tmp: Path, key: str) -> None:
    """Fill tmp with the model's files and its provenance.json."""
    with about(spec.name):
        record = sources.materialise(spec, tmp)
        record = {**record, "entry": key, "origins": current.origins(spec, record)}
        (tmp / current.PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
    files = ", ".join(f["name"] for f in record["files"])
    log.info(
        "%s: source %s%s: %s", spec.name, spec.source, f" @ {record['revision']}" if record["revision"] else "", files
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="only these models of params.yaml (default: all of them)")
    args = parser.parse_args()
    compose.check_composed()  # dvc.yaml makes conf/ a dependency of this stage, so a conf/ edit lands here
    cfg = params.load()
    for name in args.models:
        if name not in cfg.models:
            raise PipelineError(f"not in params.yaml models (have: {', '.join(cfg.models)})", model=name)
    chosen = {name: cfg.models[name] for name in args.models} if args.models else cfg.models
    root = Path(cfg.paths["models"])
    atomic.clean_leftovers(root)  # temp folders a killed run left, also beside folders kept as they are
    kept: list[str] = []
    with contextlib.ExitStack() as stack:  # every temp folder replaces its model's at the end, or none does

        def one(name: str, spec: params.ModelSpec) -> None:
            key = current.entry_key(spec)
            folder = cfg.models_dir(name)
            if current.unchanged(spec, folder, key):
                kept.append(name)
                return
            materialise(spec, stack.enter_context(atomic.replacing_dir(folder)), key)

        collect(progress.bar(chosen.items(), "download", "models", total=len(chosen)), one)
    listed = sorted(root.iterdir()) if root.is_dir() and not args.models else []
    stale = [p for p in listed if p.is_dir() and not p.name.startswith(".") and p.name not in cfg.models]
    for folder in stale:  # a model no longer in the sweep: its folder goes (links to weights, never the sources)
        shutil.rmtree(folder)
    if not args.models:
        atomic.write_json(root / SWEEP, [{"model": n, "entry": current.entry_key(s)} for n, s in cfg.models.items()])
    log.info(
        "%d models: %d materialised, %d kept as they were, %d folders of models no longer listed removed",
        len(chosen),
        len(chosen) - len(kept),
        len(kept),
        len(stale),
    )


if __name__ == "__main__":
    run(main)
