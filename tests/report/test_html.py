"""The HTML report: self-contained, rendered by headless Chromium with the network cut off, every figure loaded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (the Makefile's browser target installs it)")
        pytest.skip("chromium is not installed here (make browser installs it)")
    return found


def _browser(*args: str, page) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, with every host name unresolvable: nothing can come from a network."""
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"]
    cmd = [_chromium(), *flags, "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def rendered(tiny_run):
    return tiny_run / "reports"  # run_pipeline's report on tiny_params(), shared and only read here


def test_the_html_report_is_self_contained(rendered):
    html = (rendered / "report.html").read_text()
    md = (rendered / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures and html.count('src="data:image/png;base64,') == len(figures)
    assert not re.search(r'(src|href)="(https?:)?//', html), "nothing may load from a network"
    for heading in re.findall(r"^## (.+)$", md, flags=re.M):  # the same content, every section
        assert f"<h2>{heading.replace('&', '&amp;')}</h2>" in html


def test_chromium_renders_every_figure_offline(rendered, tmp_path):
    page = rendered / "report.html"
    dom = _browser("--dump-dom", page=page).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    figures, loaded = re.search(r'data-figures="(\d+)" data-loaded="(\d+)"', body).groups()
    assert int(figures) > 0 and loaded == figures, body
    shot = tmp_path / "report.png"
    _browser(f"--screenshot={shot}", "--window-size=1100,2000", page=page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # a page, not a blank


@pytest.mark.parametrize("which", ["committed", "tiny"])
@pytest.mark.parametrize("width", [1280, 800])
def test_nothing_runs_past_the_page_at_common_widths(rendered, tmp_path, width, which):
    """Issue 27: at 1280 and 800 px, no table, figure or paragraph is wider than the page (a cut-off column, a
    sideways scroll); the page counts them itself (render.LOADED) once every figure decoded. Both the committed
    report (the GPT-2 sweep) and a tiny run's."""
    from tests.conftest import ROOT

    if which == "committed":
        rendered = ROOT / "reports"
    dom = _browser("--dump-dom", f"--window-size={width},900", page=rendered / "report.html").stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-overflow="0"' in body, body
    shot = tmp_path / f"report-{width}.png"
    _browser(f"--screenshot={shot}", f"--window-size={width},3000", page=rendered / "report.html")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_table_cell_never_breaks_a_token():
    """Numbers with their units or shares, and hyphenated names, are kept whole; a wide table is cut in narrower
    ones that repeat its first column."""
    from pipeline.report.render import MAX_COLUMNS, to_html

    header = "| model | " + " | ".join(f"c{i}" for i in range(9)) + " |"
    rows = ["|" + "---|" * 10, "| gpt2-medium | " + " | ".join(["102,144 (0.0821 %)"] * 8) + " | 474.7 MiB |"]
    html = to_html("\n".join([header, *rows]) + "\n", {})
    assert html.count("<table>") == -(-9 // (MAX_COLUMNS - 1))  # 9 columns after the first, 4 per table
    assert html.count('<span class="k">gpt2-medium</span>') == html.count("<table>")
    assert "102,144\u00a0(0.0821\u00a0%)" in html and "474.7\u00a0MiB" in html
