"""The plot data the report stage writes for `dvc plots`, and the offline page DVC fills (fast; test_dvc_plots.py
draws them with the real DVC in a browser)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.report import plotdata, plotpage
from pipeline.stages import report
from tests.conftest import ROOT, run_pipeline
from tests.support.checkpoints import tiny_checkpoint

# Three models listed out of size order, their bias counts as the count stage would give them
SUMMARY = pd.DataFrame(
    {"model": ["big", "small", "mid"], "total": [3_000_000, 1_000_000, 2_000_000], "bias_named": [3, 2, 1]}
).set_index("model", drop=False)


def test_models_go_smallest_first_and_shares_are_percent_of_the_counts():
    totals = plotdata.totals(SUMMARY)
    assert list(totals["model"]) == ["small", "mid", "big"]
    assert list(totals["millions"]) == [t / 1e6 for t in totals["total"]]
    shares = plotdata.bias_share(SUMMARY)
    assert list(shares["model"]) == ["small", "mid", "big"]
    assert list(shares["bias_percent"]) == [100 * 2 / 1_000_000, 100 * 1 / 2_000_000, 100 * 3 / 3_000_000]


def test_value_histograms_are_a_header_alone_without_weights():
    hists = pd.DataFrame(columns=["model", "group", "every", "bin_left", "bin_right", "count"])
    empty = plotdata.values(SUMMARY, hists, bins=10)
    assert empty.empty and list(empty.columns) == ["model", "total", "group", "value", "density"]
    rows = pd.DataFrame(
        {"model": "mid", "group": "weights", "every": 1, "bin_left": [-1.0, 0.0], "bin_right": [0.0, 1.0], "count": 5}
    )
    drawn = plotdata.values(SUMMARY, rows, bins=4)
    assert len(drawn) == 4 and set(drawn["total"]) == {2_000_000}
    assert (drawn["density"] * (drawn["value"].iloc[1] - drawn["value"].iloc[0])).sum() == pytest.approx(1)


def test_the_report_stage_writes_every_csv_dvc_yaml_plots_and_again_byte_for_byte(workdir, monkeypatch):
    folder = tiny_checkpoint(workdir / "ck")
    run_pipeline(workdir, monkeypatch, {"tiny": {"source": "path", "path": str(folder)}})
    paths = yaml.safe_load((workdir / "params.yaml").read_text())["paths"]
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    wanted = {
        next(iter(entry.values()))["y"].popitem()[0].replace("${paths.plots}", paths["plots"])
        for entry in plots
        if isinstance(entry, dict)
    }
    written = {p.relative_to(workdir).as_posix() for p in (workdir / paths["plots"]).iterdir()}
    assert written == wanted
    assert all(not pd.read_csv(workdir / name).empty for name in written)  # weights: histograms too
    before = {name: (workdir / name).read_bytes() for name in written}
    report.main()
    assert {name: (workdir / name).read_bytes() for name in written} == before


def test_the_page_inlines_vega_and_leaves_dvc_only_the_plots_to_fill():
    page = plotpage.page()
    assert "{plot_divs}" in page and "{scripts}" not in page  # so DVC adds none of its CDN <script> tags
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "window.vegaEmbed" in page and "Vega-Lite 5." in page
    assert plotpage.page() == page  # rebuilt byte for byte


def test_the_newest_vega_lite_5_is_chosen():
    assert plotpage.vega_lite_version(["5.8", "5.21", "5.20", "6.1"]) == "5.21"
    with pytest.raises(PipelineError, match="no Vega-Lite 5"):
        plotpage.vega_lite_version(["6.1", "6.4"])
