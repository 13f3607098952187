"""The real DVC: `dvc repro` and `dvc exp run` in a temp copy of this repository (slow: several processes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY, tiny_params
from tests.support.repo_copy import copy_repo, dvc

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path) -> Path:
    """The tracked files of this repository, as they are in the working tree, in a fresh git repo."""
    return copy_repo(tmp_path / "repo")


def _set_params(repo: Path, data: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _outputs(repo: Path) -> dict[str, bytes]:
    paths = [*(repo / "results").rglob("*"), *(repo / "reports").rglob("*")]
    return {str(p.relative_to(repo)): p.read_bytes() for p in paths if p.is_file()}


def test_dvc_repro_tiny_sweep_then_noop_then_remove_a_model(repo):
    _set_params(repo, tiny_params())
    out = dvc("repro", cwd=repo).stdout
    for stage in ("download", "count", "ties", "bias", "report"):  # one download stage for every model
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'download@" not in out

    summary = pd.read_csv(repo / "results/summary.csv").set_index("model")
    d, v = TINY["n_embd"], TINY["vocab_size"]
    assert summary.loc["tiny-untied", "total"] - summary.loc["tiny", "total"] == v * d
    assert (repo / "reports/report.md").exists()
    assert sorted(p.name for p in (repo / "reports/figures").iterdir()) == [
        "bias_share.png",
        "components.png",
        "conventions.png",
        "cost.png",
        "fit.png",  # inference memory against context (issue 21), per engine (issue 29)
        "flops.png",  # FLOPs per token against context (issue 30)
        "per_layer.png",
        "totals.png",
        "whatif.png",
    ]
    first = _outputs(repo)

    noop = dvc("repro", cwd=repo).stdout
    assert "Running stage" not in noop
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)
    assert "tiny" in json.dumps(metrics)

    dvc("repro", "--force", cwd=repo)
    assert _outputs(repo) == first, "a forced rerun must give byte-identical outputs"

    data = tiny_params()
    del data["models"]["tiny-untied"]
    _set_params(repo, data)
    dvc("repro", cwd=repo)
    assert sorted(p.name for p in (repo / "results/inventory").iterdir()) == ["tiny.csv"]
    assert list(pd.read_csv(repo / "results/summary.csv")["model"]) == ["tiny"]
    assert "tiny-untied" not in (repo / "reports/report.md").read_text()
    assert sorted(p.name for p in (repo / "data/models").iterdir()) == ["sweep.json", "tiny"]  # its folder goes too


def test_dvc_repro_after_adding_a_model_recounts_it_alone_with_a_cold_runs_bytes(repo, tmp_path):
    _set_params(repo, tiny_params())
    dvc("repro", cwd=repo)
    data = tiny_params()
    data["models"]["tiny-deep"] = {"source": "config", "architecture": {**TINY, "n_layer": 3}}
    _set_params(repo, data)
    proc = dvc("repro", cwd=repo)
    said = proc.stdout + proc.stderr
    assert "download: 3 models: 1 materialised, 2 kept as they were" in said
    assert "count: 3 models: 1 computed, 2 from the cache" in said
    assert "bias: 3 models: 1 computed, 2 from the cache" in said
    assert "count: tiny-deep: " in said and "count: tiny: " not in said  # the one model's own log line alone

    cold = copy_repo(tmp_path / "cold")
    _set_params(cold, data)
    dvc("repro", cwd=cold)
    assert _outputs(cold) == _outputs(repo), "a sweep grown by one model must equal a cold run, byte for byte"
    assert (cold / "dvc.lock").read_text() == (repo / "dvc.lock").read_text()


def test_dvc_exp_run_composes_a_sweep_with_an_override(repo):
    proc = dvc("exp", "run", "-S", "sweep=gpt2-tied-vs-untied", "-S", "models.gpt2.architecture.n_layer=6", cwd=repo)
    assert "Running stage 'count'" in proc.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert list(params["models"]) == ["gpt2", "gpt2-untied"]
    summary = pd.read_csv(repo / "results/summary.csv").set_index("model")
    # GPT-2 small minus 6 blocks of 12d² + 13d (d = 768)
    assert summary.loc["gpt2", "total"] == 124_439_808 - 6 * (12 * 768**2 + 13 * 768)
    assert summary.loc["gpt2-untied", "total"] == 163_037_184


def test_dvc_exp_run_rejects_an_impossible_architecture(repo):
    proc = dvc(
        "exp", "run", "-S", "sweep=gpt2-small", "-S", "models.gpt2.architecture.n_embd=100", cwd=repo, check=False
    )
    assert proc.returncode != 0
    assert (
        "error: model 'gpt2': architecture.n_embd=100 is not divisible by architecture.n_head=12"
        in proc.stderr + proc.stdout
    )


def test_queued_sweeps_run_in_parallel_workers(repo):
    dvc("exp", "run", "--queue", "-S", "sweep=gpt2-small,gpt2-tied-vs-untied", cwd=repo)
    dvc("queue", "start", "-j", "2", cwd=repo)
    deadline = time.time() + 300
    while time.time() < deadline:
        status = dvc("queue", "status", cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(shown)
    assert "163037184" in text  # gpt2-untied's total, from the tied-vs-untied sweep


def test_every_shipped_family_through_dvc_exp_run(repo):
    from tests.model.test_families import PUBLISHED

    dvc("exp", "run", "-S", "sweep=all-families", cwd=repo)
    summary = pd.read_csv(repo / "results/summary.csv").set_index("model")
    for name, total in PUBLISHED.items():
        assert summary.loc[name, "total"] == total, name
    conventions = pd.read_csv(repo / "results/conventions.csv")
    assert set(conventions["model"]) == set(summary.index)
    assert "Why every tool prints a different number" in (repo / "reports/report.md").read_text()


def test_dense_vs_moe_sweep_through_dvc_exp_run(repo):
    dvc("exp", "run", "-S", "sweep=dense-vs-moe", cwd=repo)
    summary = pd.read_csv(repo / "results/summary.csv").set_index("model")
    assert summary.loc["mixtral-8x7b", "n_experts"] == 8 and summary.loc["mixtral-8x7b", "experts_per_token"] == 2
    assert (summary["active"] <= summary["total"]).all()
    assert (
        summary.loc[summary["n_experts"].isna(), "active"] == summary.loc[summary["n_experts"].isna(), "total"]
    ).all()
    text = (repo / "reports/report.md").read_text()
    assert "## Total versus active" in text and "figures/total_active.png" in text
    assert (repo / "reports/figures/total_active.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("rounded as stated") == 5  # one sentence per mixture of experts, each total reconciled
