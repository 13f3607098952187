"""A sweep costs a fixed number of processes: one download stage for every model, and per-model caches in the
stages (pipeline/core/memo.py), so adding a model recounts that model alone, and the outputs are byte for byte
those of a cold run."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.stages import bias, count, download, report, ties
from tests.conftest import ROOT, TINY, run_module, tiny_params

DEEP = {"source": "config", "architecture": {**TINY, "n_layer": 3}}


def _write_params(data: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _run(monkeypatch, data: dict) -> None:
    _write_params(data)
    monkeypatch.setattr(sys, "argv", ["download"])
    download.main()
    for stage in (count, ties, bias, report):
        stage.main()


def _outputs(root: Path) -> dict[str, bytes]:
    paths = [*(root / "results").rglob("*"), *(root / "reports").rglob("*")]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths if p.is_file()}


def _said(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def _three() -> dict:
    data = tiny_params()
    data["models"]["tiny-deep"] = DEEP
    return data


def test_adding_a_model_recounts_only_it_and_gives_a_cold_runs_bytes(workdir, tmp_path, monkeypatch, caplog):
    _run(monkeypatch, tiny_params())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(monkeypatch, _three())
    assert "3 models: 1 materialised, 2 kept as they were, 0 folders of models no longer listed removed" in _said(
        caplog, "download"
    )
    assert "3 models: 1 computed, 2 from the cache (data/memo/count)" in _said(caplog, "count")
    assert "3 models: 1 computed, 2 from the cache (data/memo/bias)" in _said(caplog, "bias")
    warm = _outputs(workdir)

    cold = tmp_path / "cold"
    shutil.copytree(ROOT / "conf", cold / "conf")
    monkeypatch.chdir(cold)
    _run(monkeypatch, _three())
    assert _outputs(cold) == warm, "outputs from the cache must equal a cold run's, byte for byte"


def test_a_changed_entry_is_recounted_and_a_removed_model_dropped(workdir, monkeypatch, caplog):
    _run(monkeypatch, _three())
    data = _three()
    data["models"]["tiny-deep"]["architecture"]["n_layer"] = 4
    del data["models"]["tiny-untied"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(monkeypatch, data)
    assert "2 models: 1 materialised, 1 kept as they were, 1 folders of models no longer listed removed" in _said(
        caplog, "download"
    )
    assert "2 models: 1 computed, 1 from the cache (data/memo/count)" in _said(caplog, "count")
    assert sorted(p.name for p in (workdir / "data/models").iterdir()) == ["sweep.json", "tiny", "tiny-deep"]
    listed = json.loads((workdir / "data/models/sweep.json").read_text())
    assert [m["model"] for m in listed] == ["tiny", "tiny-deep"]  # in sweep order, each with its entry's hash
    assert sorted(p.name for p in (workdir / "results/inventory").iterdir()) == ["tiny-deep.csv", "tiny.csv"]
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    d = TINY["n_embd"]
    assert summary.loc["tiny-deep", "total"] - summary.loc["tiny", "total"] == 2 * (12 * d * d + 13 * d)
    assert json.loads((workdir / "data/models/tiny-deep/config.json").read_text())["n_layer"] == 4


def test_a_corrupt_cache_entry_is_recomputed_never_trusted(workdir, monkeypatch, caplog):
    _run(monkeypatch, tiny_params())
    first = _outputs(workdir)
    entries = sorted((workdir / "data/memo/count").glob("*.json"))
    assert len(entries) == 2
    entries[0].write_text(entries[0].read_text()[:100])  # cut short
    text = entries[1].read_text()
    entries[1].write_text(text.replace("GPT2LMHeadModel", "GPT2LMHeadModeX"))  # a payload its checksum disagrees with
    caplog.clear()
    with caplog.at_level(logging.INFO):
        count.main()
    assert "2 models: 2 computed, 0 from the cache (data/memo/count)" in _said(caplog, "count")
    assert sum("is unreadable" in m for m in _said(caplog, "memo")) == 2
    for stage in (ties, bias, report):
        stage.main()
    assert _outputs(workdir) == first


def test_a_model_folder_edited_in_place_is_counted_again_not_taken_from_the_cache(workdir, monkeypatch, caplog):
    """The cache is keyed on what the count reads (issue 27): provenance.json's hashes alone gave the old total."""
    _run(monkeypatch, tiny_params())
    config = workdir / "data/models/tiny/config.json"
    d = TINY["n_embd"]
    config.write_text(json.dumps({**json.loads(config.read_text()), "n_layer": TINY["n_layer"] + 1}))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        count.main()
    assert "2 models: 1 computed, 1 from the cache (data/memo/count)" in _said(caplog, "count")
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert summary.loc["tiny", "total"] - summary.loc["tiny-untied", "total"] == 12 * d * d + 13 * d - (
        TINY["vocab_size"] * d
    )


def test_a_changed_source_folder_is_materialised_again(workdir, monkeypatch, caplog):
    folder = workdir / "src"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    data = tiny_params({"m": {"source": "path", "path": str(folder), "config_only": True}})
    _write_params(data)
    monkeypatch.setattr(sys, "argv", ["download"])
    download.main()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        download.main()
        assert "1 models: 0 materialised, 1 kept as they were" in _said(caplog, "download")[-1]
        (folder / "config.json").write_text(json.dumps({**TINY, "n_layer": 3}))  # replaced: a new file
        download.main()
        assert "1 models: 1 materialised, 0 kept as they were" in _said(caplog, "download")[-1]
    assert json.loads((workdir / "data/models/m/config.json").read_text())["n_layer"] == 3


def test_refused_models_are_each_named_and_no_folder_is_written(workdir):
    data = tiny_params()
    data["models"]["bad-a"] = {"source": "path", "path": str(workdir / "nowhere")}
    data["models"]["bad-b"] = {"source": "path", "path": str(workdir / "nowhere-either")}
    _write_params(data)
    proc = run_module("pipeline.stages.download", cwd=workdir)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 1 and len(errors) == 3, proc.stderr
    assert "model 'bad-a'" in errors[0] and "model 'bad-b'" in errors[1]
    assert errors[2] == "error: 2 of 4 models refused; nothing was written"
    assert not (workdir / "data/models").exists() or not any((workdir / "data/models").iterdir())


@pytest.mark.parametrize("stage", ["download", "count", "ties", "bias", "report"])
def test_cached_config_only_models_import_no_torch(workdir, monkeypatch, stage):
    _run(monkeypatch, tiny_params())
    code = (
        "import runpy, sys; runpy.run_module(sys.argv.pop(1), run_name='__main__'); "
        "print('imported:', 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, f"pipeline.stages.{stage}"], cwd=workdir, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported: False False" in proc.stdout, (stage, proc.stderr)
