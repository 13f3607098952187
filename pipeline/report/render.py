"""The report from its sections: one Markdown text, its self-contained HTML twin, the figures, and the data
copied beside it."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import atomic, memo, params
from pipeline.core.errors import PipelineError
from pipeline.report import (
    base,
    bias,
    blocks,
    census,
    components,
    compute,
    conventions,
    cost,
    definitions,
    moe,
    quantized,
    ties,
    totals,
    values,
    whatif,
)

# The report's sections, in reading order: each turns the tables into its text and the figures it shows
SECTIONS = (
    totals.section,
    components.section,
    blocks.section,
    bias.section,
    conventions.section,
    moe.section,  # mixtures of experts only
    quantized.section,  # quantized or GGUF checkpoints only
    ties.section,
    values.section,
    whatif.section,
    cost.section,
    compute.section,
    census.section,  # with a census.list only
    definitions.section,
)


log = logging.getLogger("report")

# A figure with a bar per model stops being readable (and takes seconds to draw) long before a census-sized
# sweep: beyond this many models the figures show a sample, and every table still lists each model.
FIGURE_MODELS = 24


def figure_models(summary: pd.DataFrame, cap: int = FIGURE_MODELS) -> list[str]:
    """The models the figures show, in sweep order: all of them, or beyond cap the smallest and the largest plus
    those whose names hash lowest (sha256), a sample that stays put as the sweep grows."""
    names = list(summary.index)
    if len(names) <= cap:
        return names
    by_size = summary.sort_values("total", kind="stable").index
    chosen = {by_size[0], by_size[-1]}
    for name in sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        if len(chosen) == cap:
            break
        chosen.add(name)
    return [n for n in names if n in chosen]


def _shown(arg: Any, models: list[str]) -> Any:
    """A figure's table restricted to the models the figures show (tables without a model column as they are)."""
    if isinstance(arg, pd.DataFrame) and "model" in arg.columns and not arg["model"].isin(models).all():
        return arg[arg["model"].isin(models)]
    return arg


def render(cfg: params.Params) -> dict[str, object]:
    """Compute everything the report shows, without writing: its Markdown, the figures to draw and the frames
    the plot data are made from."""
    report_dir = Path(cfg.paths["report"]).parent
    fig_dir = Path(cfg.paths["figures"])
    d = base.load(cfg, Path(os.path.relpath(fig_dir, report_dir)))
    sections = [section(d) for section in SECTIONS]
    shown = figure_models(d.summary)
    sample = (
        [
            f"The figures show {len(shown)} of the {len(cfg.models)} models (the smallest, the largest and a fixed "
            "sample by a hash of their names, so they stay put as the sweep grows): "
            f"{', '.join(f'`{n}`' for n in shown)}. Every table lists every model.",
            "",
        ]
        if len(shown) < len(cfg.models)
        else []
    )
    body = "\n".join(
        [
            "# How many parameters?",
            "",
            "_Rendered by the `report` stage of `dvc repro` from `params.yaml` and `results/`; do not edit._",
            "",
            "How many parameters does each model hold, do its input embedding and output unembedding share one "
            'tensor, and what share are weights and biases? "The course" below is the *CodeChallenge: How Many '
            "Parameters* lecture this project grew from; its findings for GPT-2 are reproduced here exactly.",
            "",
            f"Models: {', '.join(f'`{n}`' for n in cfg.models)}.",
            "",
            *sample,
            *(s.text for s in sections if s.text),
        ]
    )
    drawn = [(f.draw, tuple(_shown(a, shown) for a in f.args), fig_dir / f.name) for s in sections for f in s.figures]
    # the tables plotdata writes for `dvc plots`, as read here (each CSV read once per report)
    return {"text": body, "figures": drawn, "frames": {"summary": d.summary, "hists": d.hists, "grid": d.grid}}


def _arg_digest(arg: Any) -> str:
    if isinstance(arg, pd.DataFrame | pd.Series):
        dtypes = arg.dtypes if isinstance(arg, pd.DataFrame) else [arg.dtype]
        return memo.digest(arg.to_csv(), [str(t) for t in dtypes])
    return memo.digest(arg)


def draw(figures: list[tuple[Any, tuple, Path]], dpi: int, cache: memo.Memo) -> None:
    """Draw each figure (inside the stage's atomic batch), its PNG read back from the cache when its data, dpi and
    the code are unchanged: a sweep that gains a model the figures do not show draws nothing, imports no matplotlib."""
    for fn, args, path in figures:
        try:
            key = cache.key(fn.__module__, fn.__qualname__, [_arg_digest(a) for a in args], dpi)
        except TypeError:  # an argument with no stable digest: drawn every time
            fn(*args, path, dpi)
            continue
        png = cache.fetch(key, lambda text: base64.b64decode(text.encode("ascii"), validate=True))
        if png is None:
            fn(*args, path, dpi)
            cache.put(key, base64.b64encode(atomic.staged(path)).decode("ascii"))
        else:
            atomic.write_bytes(path, png)
    cache.prune()
    log.info("%d figures: %s", len(figures), cache.summary())


STYLE = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; overflow-wrap: normal; hyphens: manual; }
th { background: #f6f8fa; }
.k { white-space: nowrap; }
@media (max-width: 900px) { body { font-size: 15px; } table { font-size: 13px; } th, td { padding: 3px 6px; } }
td { font-variant-numeric: tabular-nums; } code { background: #f6f8fa; padding: 0 .25em; border-radius: 4px; }
img { max-width: 100%; height: auto; }
"""


# Set once every figure has decoded: a reader (or a test in a headless browser) can see that all loaded, and
# how many tables, figures or blocks are wider than the page (cut off, or scrolled sideways) at this width.
LOADED = (
    "<script>addEventListener('load',()=>{const i=[...document.images],w=document.documentElement.clientWidth;"
    "document.body.dataset.figures=i.length;document.body.dataset.loaded=i.filter(x=>x.naturalWidth>0).length;"
    "document.body.dataset.overflow=[...document.querySelectorAll('table,img,pre,p,h1,h2,h3')].filter(e=>"
    "e.scrollWidth>e.clientWidth+1||e.getBoundingClientRect().right>w+1).length"
    "+(document.documentElement.scrollWidth>w+1?1:0)})"
    "</script>"
)


# Table cells wrap only between tokens: a number and its unit (474.7 MiB, 0.0821 %) or its share in brackets
# (102,144 (0.0821 %)) are joined by a no-break space,
# and a hyphenated name (gpt2-medium, non-emb.) is kept whole, so no cell ever breaks a token in two.
UNIT = re.compile(r"(?<=[\d)]) (%|[KMGT]i?B|B|M|\()(?=[\s\d)<,;]|$)")  # 474.7 MiB; 0.0821 %; 102,144 (0.08 %)
HYPHENATED = re.compile(r"(?<![\w&;-])([\w.]+(?:-[\w.]+)+)")


def _unbreakable(match: re.Match) -> str:
    tag, attrs, inner = match.group(1), match.group(2) or "", match.group(3)
    parts = re.split(r"(<[^>]+>)", inner)  # text between tags only: never inside a tag or an attribute
    for i in range(0, len(parts), 2):
        text = UNIT.sub("\u00a0\\1", parts[i])
        parts[i] = HYPHENATED.sub(r'<span class="k">\1</span>', text)
    return f"<{tag}{attrs}>{''.join(parts)}</{tag}>"


# The most columns one HTML table shows: a wider table (the conventions of every model: a dozen exact counts) is cut
# into tables of this many, each repeating the first column, so that every one fits a page 800 px wide.
MAX_COLUMNS = 5


def _narrow(match: re.Match) -> str:
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(1), flags=re.DOTALL)
    cells = [re.findall(r"<(t[hd])((?: [^>]*)?)>(.*?)</\1>", row, flags=re.DOTALL) for row in rows]
    width = max((len(c) for c in cells), default=0)
    if width <= MAX_COLUMNS or not cells or any(len(c) != width for c in cells):
        return match.group(0)
    out = []
    for start in range(1, width, MAX_COLUMNS - 1):
        keep = [0, *range(start, min(width, start + MAX_COLUMNS - 1))]
        head = "".join(f"<{t}{a}>{x}</{t}>" for t, a, x in (cells[0][k] for k in keep))
        body = "".join(
            "<tr>" + "".join(f"<{t}{a}>{x}</{t}>" for t, a, x in (row[k] for k in keep)) + "</tr>\n"
            for row in cells[1:]
        )
        out.append(f"<table>\n<thead>\n<tr>{head}</tr>\n</thead>\n<tbody>\n{body}</tbody>\n</table>")
    return "\n".join(out)


def to_html(markdown: str, figures: dict[str, bytes], title: str = "How many parameters?") -> str:
    """The Markdown report as one self-contained HTML page: figures embedded as data URIs, no network at all."""
    import base64
    import html
    import re

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        if src not in figures:
            raise PipelineError(f"report: figure {src} is referenced but was not drawn")
        return f'src="data:image/png;base64,{base64.b64encode(figures[src]).decode()}"'

    body = re.sub(r'src="([^"]+)"', embed, body)
    body = re.sub(r"<(td|th)( [^>]*)?>(.*?)</\1>", _unbreakable, body, flags=re.DOTALL)
    body = re.sub(r"<table>(.*?)</table>", _narrow, body, flags=re.DOTALL)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>\n'
        f"<body>\n{body}{LOADED}\n</body></html>\n"
    )


# The CSVs the report is drawn from (keys of params `paths`), copied beside it so the published artifact carries them
DATA = (
    "summary",
    "conventions",
    "ties",
    "tie_sample",
    "bias",
    "distributions",
    "histograms",
    "whatif",
    "cost",
    "fit",
    "flops",
)


def data_files(cfg: params.Params) -> dict[Path, Path]:
    """{copy under paths.report_data: source} for every CSV the report reads, inventories in a subfolder."""
    data = Path(cfg.paths["report_data"])
    keys = [*DATA, "census"] if (cfg.census or {}).get("list") else DATA  # the census with a census.list only
    files = {data / Path(cfg.paths[key]).name: Path(cfg.paths[key]) for key in keys}
    files[data / "published" / Path(cfg.paths["published"]).name] = Path(cfg.paths["published"])
    for name in cfg.models:
        files[data / "inventory" / f"{name}.csv"] = Path(cfg.paths["inventory"]) / f"{name}.csv"
    return files
