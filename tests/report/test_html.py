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
