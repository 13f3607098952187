"""The report's text and figures: every section there, every referenced figure drawn, prose only where it applies."""

from __future__ import annotations

import re

from tests.conftest import TINY_LLAMA, run_pipeline
from tests.support.checkpoints import tiny_checkpoint

ALWAYS = [
    "## Totals",
    "## Where the parameters are",
    "## One block, tensor by tensor",
    "## Weights and biases",
    "## Why every tool prints a different number",
    "## Do the embedding and the unembedding share weights?",
    "## What the values look like",
    "## What if",
    "## What it costs",
    "## Definitions",
]


def _report(workdir, monkeypatch, models: dict) -> str:
    text = (run_pipeline(workdir, monkeypatch, models) / "report.md").read_text()
    for fig in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every referenced figure was drawn
        assert (workdir / "reports" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    drawn = {p.name for p in (workdir / "reports/figures").iterdir()}
    assert drawn == {f.rpartition("/")[2] for f in re.findall(r"\]\((figures/[^)]+)\)", text)}  # and none else
    for heading in ALWAYS:
        assert heading in text, heading
    return text


def test_gpt2_with_weights_gets_its_own_prose(workdir, monkeypatch):
    import pandas as pd

    folder = tiny_checkpoint(workdir / "src" / "gpt2-ck")  # the Hub's layout: causal masks stored per layer
    untied = tiny_checkpoint(workdir / "src" / "untied-ck", tied=False, seed=1)
    models = {"gpt2ck": {"source": "path", "path": str(folder)}, "untied": {"source": "path", "path": str(untied)}}
    text = _report(workdir, monkeypatch, models)
    assert "figures/ties.png" in text and "a tied model lies on the diagonal" in text
    sample = pd.read_csv(workdir / "results/tie_sample.csv")
    tied, apart = sample[sample["model"] == "gpt2ck"], sample[sample["model"] == "untied"]
    assert len(tied) >= 1000 and (tied["input"] == tied["output"]).all()  # one tensor: every pair on the diagonal
    assert len(apart) >= 1000 and abs(apart["input"].corr(apart["output"])) < 0.2  # two random matrices: a cloud
    assert "these GPT-2 files carry a causal mask per layer" in text
    assert "the course's Model 5" in text
    assert "models with a checkpoint are also reconciled" in text
    assert "12d² + 13d" in text and "which matches the inventory" in text
    # the histograms' sample is stated, with the counted values per model from the CSV itself
    hists = pd.read_csv(workdir / "results/histograms.csv")
    every = int(hists["every"].iloc[0])
    assert every == 8 and f"count every {every}th value of each tensor" in text
    counted = hists.groupby("model")["count"].sum()
    inv = pd.read_csv(workdir / "results/inventory/gpt2ck.csv")
    read = pd.read_csv(workdir / "results/distributions.csv").query("by == 'all'").set_index("model")["count"]
    assert read["gpt2ck"] == inv.loc[inv["kind"] == "parameter", "numel"].sum()  # moments: every value
    assert f"`gpt2ck`: {counted['gpt2ck']:,} of {read['gpt2ck']:,}" in text and counted["gpt2ck"] < read["gpt2ck"]
    # the artifact carries the CSVs it was drawn from, byte for byte, and only those of this sweep
    data = workdir / "reports/data"
    for copy in data.rglob("*.csv"):
        source = workdir / "conf/published" if copy.parent.name == "published" else workdir / "results"
        source = source / copy.relative_to(data / ("published" if copy.parent.name == "published" else ""))
        assert copy.read_bytes() == source.read_bytes(), copy
    assert {p.name for p in (data / "inventory").iterdir()} == {"gpt2ck.csv", "untied.csv"}
    assert (data / "histograms.csv").exists() and (data / "summary.csv").exists()


def test_another_family_without_weights_gets_none_of_gpt2s(workdir, monkeypatch):
    text = _report(
        workdir, monkeypatch, {"llama": {"source": "config", "architecture": {"model_type": "llama", **TINY_LLAMA}}}
    )
    for gpt2_only in ("causal mask", "Model 5", "12d² + 13d", "GPT-2's files"):
        assert gpt2_only not in text, gpt2_only
    assert "(shapes only, no weights)." in text
    assert "no values to describe" in text


def test_an_override_that_changes_the_architecture_is_marked_and_loses_its_stated_size(workdir, monkeypatch):
    import json
    import sys

    import pandas as pd
    import yaml

    from pipeline.core import compose
    from pipeline.stages import bias, count, download, report, ties

    # what `dvc exp run -S sweep=gpt2-small -S models.gpt2.architecture.n_layer=6` composes
    data = compose.compose(["sweep=gpt2-small", "models.gpt2.architecture.n_layer=6"], workdir / "conf")
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", "gpt2"])
    download.main()
    for stage in (count, ties, bias, report):
        stage.main()
    s = pd.read_csv(workdir / "results/summary.csv").iloc[0]
    # GPT-2 small with 6 of its 12 blocks: 124,439,808 − 6 × 7,087,872 (one block, 12d² + 13d at d = 768)
    assert s["total"] == 124_439_808 - 6 * (12 * 768**2 + 13 * 768)
    assert s["what_if"] == "architecture.n_layer=6 (conf/: 12)" and pd.isna(s["stated_params"])
    text = (workdir / "reports/report.md").read_text()
    assert "`gpt2` is a what-if variant: an override set architecture.n_layer=6 (conf/: 12), so its stated 117M" in text
    assert "117M (" not in text  # no gap against a size stated for another model
    conv = pd.read_csv(workdir / "results/conventions.csv")
    assert conv.loc[conv["convention"] == "stated", "params"].isna().all()
    assert json.loads((workdir / "results/metrics.json").read_text()) == {"gpt2": int(s["total"])}


def _kept(monkeypatch, module) -> list:
    """Figures a report module draws, kept open instead of saved (its save() replaced)."""
    figs = []
    monkeypatch.setattr(module, "save", lambda fig, path, dpi: figs.append(fig))
    return figs


def test_no_label_runs_past_its_axes_or_out_of_its_bar(monkeypatch, tmp_path):
    """Issue 27: the gap labels of "Exact totals" end inside the axes; a share too narrow for its label in "Where the
    parameters are" is said below its bar, never spilled over its neighbours."""
    import pandas as pd

    from pipeline.report import components, plotting, totals

    figs = _kept(monkeypatch, totals)
    summary = pd.DataFrame({"model": ["a", "b-long-name"], "total": [124_439_808, 1_557_611_200],
                            "stated_params": [117_000_000, 1_542_000_000]})  # fmt: skip
    totals.totals(summary, tmp_path / "t.png", 110)
    (fig,) = figs
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    frame = ax.get_window_extent(r)
    labels = [t for t in ax.texts if t.get_text()]
    assert labels and all(t.get_window_extent(r).x1 <= frame.x1 for t in labels)
    monkeypatch.setattr(components, "legend_outside", lambda fig, ax, *a, **k: figs.append(fig))
    parts = pd.DataFrame({"model": ["m"] * 4, "component": ["token_embedding", "attention", "mlp", "layer_norm"],
                          "params": [52, 300, 640, 8]})  # fmt: skip
    components.components(parts, tmp_path / "c.png", 110)
    fig = figs[-1]
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    inside = [t for t in ax.texts if t.get_text().endswith(" %") and not t.get_text().startswith("also")]
    assert {t.get_text() for t in inside} == {"30.0 %", "64.0 %"}  # 5.2 % and 0.8 % do not fit their bars
    for t in inside:
        share = float(t.get_text().split()[0])
        box, centre = t.get_window_extent(r), t.get_position()[0]
        left, right = to_px((centre - share / 2, 0))[0], to_px((centre + share / 2, 0))[0]
        assert left <= box.x0 and box.x1 <= right, t.get_text()
    note = next(t.get_text() for t in ax.texts if t.get_text().startswith("also"))
    assert "token embedding 5.2 %" in note and "layer norm 0.8 %" in note
    assert plotting.SMALL == "small"
