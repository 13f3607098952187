"""The stage modules end to end on tiny models (in-process and as `python -m`), and their bad-input errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.stages import bias, count, download, report, ties
from tests.conftest import TINY, copy_workspace, run_module, tiny_params

D, V, P, L = TINY["n_embd"], TINY["vocab_size"], TINY["n_positions"], TINY["n_layer"]
# GPT-2 closed form (see pipeline/model/formulas.py for its derivation): V·d + P·d + L·(12d² + 13d) + 2d
TINY_TOTAL = V * D + P * D + L * (12 * D * D + 13 * D) + 2 * D


def _write_params(data: dict) -> None:
    with open("params.yaml", "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)


def _run_all(monkeypatch, models) -> None:
    for name in models:
        monkeypatch.setattr(sys, "argv", ["download", name])
        download.main()
    for stage in (count, ties, bias, report):
        stage.main()


def test_stages_in_process(tiny_run):
    workdir = tiny_run  # every stage of run_pipeline, in process, on tiny_params(): shared, read only
    cfg = json.loads((workdir / "data/models/tiny/config.json").read_text())
    assert cfg == TINY
    prov = json.loads((workdir / "data/models/tiny/provenance.json").read_text())
    assert prov["source"] == "config" and prov["files"][0]["name"] == "config.json"

    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    for column in ("total", "total_untied", "embedding", "non_embedding", "bias_named", "bias_named_share"):
        assert column in summary.columns
    assert summary.loc["tiny", "total"] == TINY_TOTAL
    assert summary.loc["tiny-untied", "total"] == TINY_TOTAL + V * D
    assert summary.loc["tiny", "total_untied"] == summary.loc["tiny-untied", "total"]
    assert summary.loc["tiny", "stated_params"] == 20_000

    t = pd.read_csv(workdir / "results/ties.csv").set_index("model")
    assert t.loc["tiny", "declared_tied"] and t.loc["tiny", "structural_tied"]
    assert not t.loc["tiny-untied", "declared_tied"] and not t.loc["tiny-untied", "structural_tied"]
    assert t["pearson_r"].isna().all() and t["method"].str.startswith("no weights").all()

    b = pd.read_csv(workdir / "results/bias.csv")
    allc = b[b.component == "all"]
    for (_, _), part in allc.groupby(["model", "definition"]):
        assert part["params"].sum() == summary.loc[part["model"].iloc[0], "total"]

    metrics = json.loads((workdir / "results/metrics.json").read_text())
    assert metrics["tiny"] == TINY_TOTAL and set(metrics) == set(summary.index)  # flat: one per model

    text = (workdir / "reports/report.md").read_text()
    assert f"{TINY_TOTAL:,}" in text
    assert f"{TINY_TOTAL + V * D:,} − {V * D:,} = {TINY_TOTAL:,}" in text
    for fig in ("totals.png", "components.png", "bias_share.png"):
        png = workdir / "reports/figures" / fig
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{fig}" in text


def _rerun_in_a_copy(tiny_run, tmp_path, monkeypatch) -> Path:
    """A copy of the shared run (tiny_params() went through every stage once), as the working directory."""
    workdir = copy_workspace(tiny_run, tmp_path / "wd")
    monkeypatch.chdir(workdir)
    return workdir


def test_outputs_are_byte_identical_on_rerun(tiny_run, tmp_path, monkeypatch):
    workdir = _rerun_in_a_copy(tiny_run, tmp_path, monkeypatch)
    data = tiny_params()
    paths = sorted(p for p in workdir.rglob("*") if p.is_file() and "conf" not in p.parts and p.name != "params.yaml")
    first = {p: p.read_bytes() for p in paths}
    _run_all(monkeypatch, data["models"])
    assert {p: p.read_bytes() for p in paths} == first


def test_a_model_removed_from_the_sweep_vanishes_from_results(tiny_run, tmp_path, monkeypatch):
    workdir = _rerun_in_a_copy(tiny_run, tmp_path, monkeypatch)
    data = tiny_params()
    assert (workdir / "results/inventory/tiny-untied.csv").exists()
    del data["models"]["tiny-untied"]
    _write_params(data)
    for stage in (count, ties, bias, report):  # each reads the listed models only, whatever files stay
        stage.main()
    assert sorted(p.name for p in (workdir / "results/inventory").iterdir()) == ["tiny.csv"]
    for csv in ("summary.csv", "ties.csv", "bias.csv"):
        assert set(pd.read_csv(workdir / "results" / csv)["model"]) == {"tiny"}
    assert "tiny-untied" not in (workdir / "reports/report.md").read_text()


def _one_error_line(proc) -> str:
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0])  # the last word, no traceback after it
    assert "Traceback" not in proc.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("arch", "field"),
    [
        ({**TINY, "n_embd": 30}, "n_embd"),
        ({**TINY, "n_layer": 0}, "n_layer"),
        ({**TINY, "n_head": -1}, "n_head"),
        ({k: v for k, v in TINY.items() if k != "model_type"}, "model_type"),
    ],
)
def test_impossible_architecture_fails_download_without_output(workdir, arch, field):
    _write_params(tiny_params({"bad": {"source": "config", "architecture": arch}}))
    line = _one_error_line(run_module("pipeline.stages.download", "bad", cwd=workdir))
    assert "model 'bad'" in line and f"architecture.{field}" in line
    assert not (workdir / "data").exists()


def test_count_refuses_a_bad_model_and_writes_nothing(workdir):
    _write_params(tiny_params())
    for name in ("tiny", "tiny-untied"):
        assert run_module("pipeline.stages.download", name, cwd=workdir).returncode == 0
    # a config.json whose model_type transformers does not know (e.g. one that needs remote code)
    (workdir / "data/models/tiny-untied/config.json").write_text(json.dumps({"model_type": "my-own-arch"}))
    line = _one_error_line(run_module("pipeline.stages.count", cwd=workdir))
    assert "model 'tiny-untied'" in line and "my-own-arch" in line
    assert not (workdir / "results").exists()


def test_download_of_a_model_not_in_params(workdir):
    _write_params(tiny_params())
    line = _one_error_line(run_module("pipeline.stages.download", "gpt5", cwd=workdir))
    assert "model 'gpt5'" in line


def test_stage_before_its_inputs_exist(workdir):
    _write_params(tiny_params())
    line = _one_error_line(run_module("pipeline.stages.ties", cwd=workdir))
    assert "results/summary.csv" in line


def test_config_path_with_architecture_overrides(workdir, monkeypatch):
    (workdir / "base-config.json").write_text(json.dumps(TINY))
    data = tiny_params(
        {"from-file": {"source": "config", "config_path": "base-config.json", "architecture": {"n_layer": 1}}}
    )
    _write_params(data)
    _run_all(monkeypatch, data["models"])
    written = json.loads((workdir / "data/models/from-file/config.json").read_text())
    assert written == {**TINY, "n_layer": 1}
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert summary.loc["from-file", "total"] == TINY_TOTAL - (12 * D * D + 13 * D)  # one block fewer
