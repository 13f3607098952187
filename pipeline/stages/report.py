"""Stage report: render the CSVs into <paths.report>, its HTML twin, the figures under <paths.figures>, the data
copied beside them and the plot data `dvc plots` draws."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.core import atomic, memo, params
from pipeline.core.errors import run
from pipeline.report import plotdata
from pipeline.report.render import data_files, draw, render, to_html

log = logging.getLogger("report")


def main() -> None:
    cfg = params.load()
    rendered = render(cfg)
    dpi = int(cfg.report["dpi"])
    fig_dir = Path(cfg.paths["figures"])
    report_dir = Path(cfg.paths["report"]).parent
    with atomic.batch():  # the report, its HTML twin and its figures appear together, or not at all
        draw(rendered["figures"], dpi, memo.Memo(cfg.paths["memo"], "report"))  # PNGs of unchanged data: cached
        atomic.sync_dir(fig_dir, keep=[path.name for _, _, path in rendered["figures"]])
        atomic.write_text(cfg.paths["report"], rendered["text"])
        drawn = {os.path.relpath(path, report_dir): atomic.staged(path) for _, _, path in rendered["figures"]}
        atomic.write_text(cfg.paths["report_html"], to_html(rendered["text"], drawn))
        copies = data_files(cfg)
        for copy, source in copies.items():  # byte for byte: the artifact's data are the results themselves
            atomic.write_changed(copy, source.read_bytes())
        for folder in {copy.parent for copy in copies}:
            atomic.sync_dir(folder, keep=[c.name for c in copies if c.parent == folder])
        plotdata.write(cfg, **rendered["frames"])  # the CSVs `dvc plots show` draws (dvc.yaml `plots:`)
    log.info(
        "wrote %s, %s, %d figures and the %d CSVs they were drawn from (%s)",
        cfg.paths["report"],
        cfg.paths["report_html"],
        len(rendered["figures"]),
        len(copies),
        cfg.paths["report_data"],
    )


if __name__ == "__main__":
    run(main)
