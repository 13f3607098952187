"""The HTML page `dvc plots show` / `dvc plots diff` fill, with Vega, Vega-Lite and Vega-Embed inlined: no network.

DVC's own page loads those three libraries from a CDN, so offline its plots stay blank. DVC fills a page of ours
instead (.dvc/config `plots.html_template`), replacing `{plot_divs}` with one div per plot, each calling
`vegaEmbed`; this page has no `{scripts}`, so none of DVC's CDN script tags go in. The JavaScript comes from the
installed vl-convert-python (pinned in pyproject.toml), the Vega project's own bundle of the three libraries.

`make setup` writes the page (`python -m pipeline.report.plotpage`) where .dvc/config says; it is not committed: about
0.9 MB of minified JavaScript, rebuilt byte for byte from the pinned package.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core import atomic
from pipeline.core.errors import PipelineError, run

log = logging.getLogger("plotpage")

PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # what DVC's render_html replaces in the page

# After the libraries: draw as SVG (marks a reader or a test can inspect), keep the export and source actions but
# not "Open in Vega Editor" (a website), put a sentence where a plot has no rows or fails, and once every plot has
# settled count them on <body> (data-plots, -drawn, -empty, -failed, -images, -images-loaded), with the elements
# that reach past the window's right edge (data-overflow).
SCRIPT = """(() => {
  const embed = window.vegaEmbed, pending = [], count = {plots: 0, drawn: 0, empty: 0, failed: 0};
  const say = (div, text) => { const p = document.createElement("p"); p.className = "note"; p.textContent = text;
                               div.append(p); };
  window.vegaEmbed = (target, spec, options) => {
    const div = typeof target === "string" ? document.getElementById(target.slice(1)) : target;
    const name = div.id.replace(/_+/g, " ").trim();
    count.plots += 1;
    if (!spec || Object.keys(spec).length === 0) {
      count.empty += 1; div.dataset.plot = "empty";
      say(div, "Nothing to draw: this plot's data has no rows in the revisions shown (values need weights).");
      return Promise.resolve();
    }
    const actions = {export: true, source: true, compiled: true, editor: false};
    const drawn = embed(div, spec, {renderer: "svg", actions, ...options})
      .then(() => { count.drawn += 1; div.dataset.plot = "drawn"; })
      .catch((error) => { count.failed += 1; div.dataset.plot = "failed"; say(div, `${name}: ${error.message}`); });
    pending.push(drawn);
    return drawn;
  };
  addEventListener("load", () => Promise.allSettled(pending).then(() => {
    const images = [...document.images], w = document.documentElement.clientWidth;
    const overflow = [...document.querySelectorAll("body > div, table, img, svg")]
      .filter((e) => e.getBoundingClientRect().right > w + 1).length + (document.documentElement.scrollWidth > w + 1);
    Object.assign(document.body.dataset, count,
                  {images: images.length, imagesLoaded: images.filter((i) => i.naturalWidth > 0).length, overflow});
  }));
})();"""

# Every plot fits the window: DVC's image plots (a box per revision, side by side, nowrap in its inline styles) share
# the page's width, each PNG scaled down into its box, so `dvc plots diff` never runs wider than the screen.
STYLE = """body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #1f2328; }
body > div { margin: 0 0 2em; max-width: 100%; overflow-x: auto; } .note { color: #57606a; font-style: italic; }
table { border-spacing: 15px; width: 100%; table-layout: fixed; } td, th { overflow: hidden; }
img { max-width: 100%; height: auto; }
body > div:has(> div > img) { display: flex !important; flex-wrap: wrap; white-space: normal !important; }
body > div:has(> div > img) > p { flex-basis: 100%; }
body > div:has(> div > img) > div { flex: 1 1 0; min-width: 0; }"""


def vega_lite_version(available: list[str]) -> str:
    """The newest Vega-Lite 5 the package bundles: DVC's templates are written for v5."""
    fives = [v for v in available if v.split(".")[0] == "5"]
    if not fives:
        raise PipelineError(f"vl-convert-python bundles no Vega-Lite 5 (only {', '.join(available)})")
    return max(fives, key=lambda v: tuple(int(p) for p in v.split(".")))


def page() -> str:
    """The page: the libraries inlined, then SCRIPT, then DVC's plot divs."""
    from importlib.metadata import version

    import vl_convert

    vl = vega_lite_version(vl_convert.get_vegalite_versions())
    bundle = vl_convert.javascript_bundle(vl_version=vl)
    for bad in ("</script", "<!--", *PLACEHOLDERS):  # would end the script early, or be filled in by DVC
        if bad in bundle:
            raise PipelineError(f"vl-convert-python's bundle contains {bad!r}; it cannot be inlined as it is")
    made = (
        f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vl}, Vega-Embed {vl_convert.get_vega_embed_version()}, "
        f"from vl-convert-python {version('vl-convert-python')} by `python -m pipeline.report.plotpage`"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n{refresh_tag}\n<meta charset="utf-8">\n<title>how-many-params: DVC plots</title>\n'
        f"<!-- {made}; nothing loads from a network -->\n"
        f"<style>\n{STYLE}\n</style>\n"
        # Inside a function: the bundle's top-level names stay out of the global scope DVC's `var spec` shares.
        f"<script>\n(() => {{\n{bundle}\n}})();\n{SCRIPT}\n</script>\n"
        "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def template_path(root: Path = Path(".")) -> Path:
    """Where .dvc/config's plots.html_template points (relative to .dvc/, as DVC reads it)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config.get("plots", {}).get("html_template")
        if not name:
            raise PipelineError(f"{root / '.dvc/config'}: set plots.html_template (dvc config plots.html_template ...)")
        return Path(repo.dvc_dir) / name


def main() -> None:
    path = template_path()
    text = page()
    atomic.write_text(path, text)
    log.info("wrote %s (%d kB): `dvc plots show` now draws with no network", path, len(text.encode()) // 1000)


if __name__ == "__main__":
    run(main)
