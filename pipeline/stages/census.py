"""Stage census: `hmp census` on the list census.list names, into <paths.census>.

Each listed repository (a Hub id at a revision, read by range requests or, offline, from the local
cache; or a local folder) is counted from its config.json and headers alone, on Dask distributed (a
local cluster of census.workers processes, or census.scheduler's cluster), and set beside its own
claims. With census.list empty there is no census: the CSV holds its header alone and nothing is imported.
A killed run resumes from its journal (<paths.census>.partial/).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.census import listing, rows, run
from pipeline.core import atomic, params, progress
from pipeline.core.errors import PipelineError
from pipeline.core.errors import run as run_stage

log = logging.getLogger("census")


def main() -> None:
    cfg = params.load()
    if cfg.census is None:
        raise PipelineError("params.yaml: missing top-level key 'census' (run make params)")
    settings, out = cfg.census, Path(cfg.paths["census"])
    if not settings["list"]:
        atomic.write_text(out, rows.to_csv([]))
        log.info("census: census.list is empty, so there is no census; wrote the header of %s", out)
        return
    sources = listing.read(settings["list"])
    with progress.bar(None, "census", "repos", total=len(sources)) as bar:
        done = run.census(
            sources, out, settings["workers"], settings["threads"], settings["scheduler"] or None, bar=bar
        )
    log.info(
        "census: %d sources, %d counted, %d refused, %d architectures built on %d workers in %.1f s; wrote %s",
        len(done.rows), done.counted, done.refused, done.builds, done.workers, done.seconds, out,
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
