"""hmp serve's page in a real browser: Debian's chromium, driven by Selenium through chromium-driver, the network
cut off but for the server on 127.0.0.1. Paste GPT-2's config and read 124,439,808; move the context and see the
plan change; paste a broken config and see its one line; at 1280 and 800 px wide nothing runs past the page."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import ROOT
from tests.serve.server import Server

pytestmark = pytest.mark.slow
GPT2 = ROOT / "tests" / "support" / "published_configs" / "openai-community--gpt2.json"


def _driver(width: int):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (the Makefile's browser target installs them)")
        pytest.skip("chromium or chromium-driver is not installed here (make browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    offline = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"  # nothing but the server can answer
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", offline,
                 f"--window-size={width},1000"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def _wait(browser, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda b: condition(b))


def _paste(browser, text: str) -> None:
    """The text into the box as a paste puts it there (the page reads the box's value), then Count."""
    box = browser.find_element("id", "config")
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                           box, text)  # fmt: skip
    browser.find_element("id", "count-btn").click()


def _overflowing(browser) -> list[str]:
    return browser.execute_script(
        "const w = document.documentElement.clientWidth; const out = [];"
        "if (document.documentElement.scrollWidth > w) out.push('page ' + document.documentElement.scrollWidth);"
        "for (const e of document.querySelectorAll('main *')) { const r = e.getBoundingClientRect();"
        "  if (r.width && r.right > w + 1) out.push(e.tagName + '#' + e.id + ' ' + Math.round(r.right)); }"
        "return out;"
    )


@pytest.mark.parametrize("width", [1280, 800])
def test_the_page_counts_plans_and_refuses_in_a_real_browser(server, width, tmp_path):
    browser = _driver(width)
    try:
        browser.get(server.url + "/")
        _paste(browser, GPT2.read_text())
        _wait(browser, lambda b: b.find_element("id", "total").text == "124,439,808")
        assert "102,144" in browser.find_element("id", "split").text  # the course's biases
        _wait(browser, lambda b: "GiB per GPU" in b.find_element("id", "fit-result").text)
        _wait(browser, lambda b: "284,812,800" in b.find_element("id", "flops-total").text)  # at 1,024 tokens
        before = browser.find_element("id", "fit-result").text
        slider = browser.find_element("id", "fit-context")
        browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
        _wait(browser, lambda b: b.find_element("id", "fit-result").text not in (before, "–"))
        assert browser.find_element("id", "fit-context-value").text == "128 tokens"
        browser.find_element("id", "compare-btn").click()
        assert "124,439,808" in browser.find_element("id", "compare").text
        assert not _overflowing(browser), _overflowing(browser)
        shot = tmp_path / f"page-{width}.png"
        browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _paste(browser, '{"model_type": "gpt2", "n_layer": "twelve"}')
        _wait(browser, lambda b: b.find_element("id", "error").text != "")
        error = browser.find_element("id", "error").text
        assert "\n" not in error and "n_layer" in error, error
        assert browser.find_element("id", "total").text == "–"
        assert not _overflowing(browser), _overflowing(browser)
        browser.find_element("id", "source").click()
        assert "gpt2" in browser.find_element("id", "source").text  # the sweep's models to pick
    finally:
        browser.quit()
