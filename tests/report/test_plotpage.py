"""The real `dvc plots show` / `dvc plots diff` in a temp copy of this repository, drawn by headless Chromium offline.

DVC fills the page pipeline/report/plotpage.py makes (.dvc/config plots.html_template); every Vega plot must draw as SVG
with marks, every image load, and nothing may come from a network (the browser resolves no host name at all).
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_params
from tests.report.test_html import _browser, _chromium
from tests.support.checkpoints import tiny_checkpoint
from tests.support.repo_copy import copy_repo, dvc, sh

pytestmark = pytest.mark.slow

NETWORK = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.I)


@pytest.fixture
def repo(tmp_path) -> Path:
    """This repository's tracked files and results in a fresh git repo, the offline page made as `make setup` does."""
    _chromium()  # skips here, before any work, where there is no browser
    repo = copy_repo(tmp_path / "repo")
    sh(sys.executable, "-m", "pipeline.report.plotpage", cwd=repo)
    return repo


def _vega_plots(repo: Path) -> dict[str, Path]:
    """{plot name: its CSV} for every Vega plot in dvc.yaml (the image folder left out), paths from params.yaml."""
    paths = yaml.safe_load((repo / "params.yaml").read_text())["paths"]
    plots = {}
    for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, dict):
            ((name, props),) = entry.items()
            (source,) = props["y"]
            plots[name] = repo / source.replace("${paths.plots}", paths["plots"])
    return plots


def _drawn(page: Path, width: int = 1280) -> tuple[dict[str, str], dict[str, str]]:
    """Chromium's DOM once every plot settled, in a window width px wide: the counts on <body>, and each plot div's
    DOM by its state."""
    dom = _browser("--dump-dom", f"--window-size={width},900", page=page).stdout
    body = dict(re.findall(r'data-([a-z-]+)="(\d+)"', re.search(r"<body[^>]*data-plots[^>]*>", dom).group(0)))
    parts = re.split(r'(?=<div id="[^"]*"[^>]*data-plot=")', dom)[1:]
    divs = {re.match(r'<div id="([^"]*)"', p).group(1): p for p in parts}
    return body, divs


def _models_top_down(div: str) -> list[str]:
    """The models of a bar plot as drawn, top to bottom (each bar's y from its SVG path, its model from its label)."""
    bars = re.findall(r'<path aria-label="([^"]*)"[^>]*aria-roledescription="bar" d="M[-\d.e]+,([-\d.e]+)', div)
    drawn = sorted((float(y), re.search(r"model: ([^;]+)", label).group(1)) for label, y in bars)
    return list(dict.fromkeys(model for _, model in drawn))


def _show(repo: Path, out: Path, *args: str) -> str:
    proc = dvc("plots", *args, "-o", str(out), cwd=repo)
    assert "failed to load" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    html = (out / "index.html").read_text()
    assert not NETWORK.findall(html) and "cdn." not in html, "the page must load nothing from a network"
    return html


def test_dvc_plots_show_draws_every_plot_offline(repo, tmp_path):
    plots = _vega_plots(repo)
    empty = [name for name, csv in plots.items() if pd.read_csv(csv).empty]  # values.csv without weights
    images = sorted((repo / yaml.safe_load((repo / "params.yaml").read_text())["paths"]["figures"]).glob("*.png"))
    _show(repo, tmp_path / "show", "show")

    body, divs = _drawn(tmp_path / "show" / "index.html")
    assert body == {
        "plots": str(len(plots)),
        "drawn": str(len(plots) - len(empty)),
        "empty": str(len(empty)),
        "failed": "0",
        "images": str(len(images)),
        "images-loaded": str(len(images)),
        "overflow": "0",  # nothing reaches past the window's right edge (issue 27)
    }
    assert _drawn(tmp_path / "show" / "index.html", 800)[0]["overflow"] == "0"
    assert len(divs) == len(plots)
    for name, div in divs.items():
        if 'data-plot="drawn"' in div:
            assert "<svg" in div and 'class="mark-' in div and "role-mark" in div, name
        else:
            assert "has no rows in the revisions shown" in div, name

    totals = pd.read_csv(plots["Parameters per model"])
    by_size = list(totals.sort_values("total")["model"])
    for div in ("Parameters_per_model", "Biases_as_a_share_of_all_parameters__course_definition__named___bias_"):
        assert _models_top_down(divs[div]) == by_size, f"{div}: the smallest model on top, the largest at the bottom"

    shot = tmp_path / "plots.png"
    _browser(f"--screenshot={shot}", "--window-size=1000,1600", page=tmp_path / "show" / "index.html")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # drawn, not blank


def test_dvc_plots_diff_overlays_the_committed_results_and_a_tiny_sweep_with_weights(repo, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    data = tiny_params({"tiny": {"source": "path", "path": str(checkpoint)}})
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    dvc("repro", cwd=repo)
    plots = _vega_plots(repo)
    assert all(not pd.read_csv(csv).empty for csv in plots.values()), "weights give value histograms too"
    html = _show(repo, tmp_path / "diff", "diff", "HEAD")

    body, divs = _drawn(tmp_path / "diff" / "index.html")
    assert (body["plots"], body["drawn"], body["failed"]) == (str(len(plots)), str(len(plots)), "0")
    for width in (1280, 800):  # two revisions side by side still fit the screen (issue 27)
        assert _drawn(tmp_path / "diff" / "index.html", width)[0]["overflow"] == "0", width
    for name, div in divs.items():
        assert "HEAD" in div and "workspace" in div, f"{name}: both revisions in the legend"
    head = pd.read_csv(io.StringIO(sh("git", "show", "HEAD:reports/plots/totals.csv", cwd=repo).stdout))
    both = pd.concat([head, pd.read_csv(plots["Parameters per model"])])
    bars = re.findall(r'aria-roledescription="bar"', divs["Parameters_per_model"])
    assert len(bars) == len(both), "one bar per model and revision"
    assert _models_top_down(divs["Parameters_per_model"]) == list(both.sort_values("total")["model"])
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html
