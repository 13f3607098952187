"""Under the real `dvc repro`: a stage that fails or is killed leaves the last good results in place (slow)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.model import formulas
from tests.conftest import TINY, tiny_params
from tests.support.repo_copy import ENV, copy_repo, dvc

pytestmark = pytest.mark.slow


def _outputs(repo: Path) -> dict[str, bytes]:
    paths = [*(repo / "results").rglob("*"), *(repo / "reports").rglob("*")]
    return {str(p.relative_to(repo)): p.read_bytes() for p in paths if p.is_file() and not p.name.endswith(".tmp")}


def _temps(repo: Path) -> list[Path]:
    return [p for folder in ("results", "reports") for p in (repo / folder).rglob(".*.tmp")]


@pytest.fixture(scope="module")
def built_once(tmp_path_factory) -> Path:
    """A copy of this repository with the tiny sweep built by `dvc repro`, once for the module: never changed."""
    repo = copy_repo(tmp_path_factory.mktemp("built") / "repo")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    dvc("repro", cwd=repo)
    return repo


@pytest.fixture
def built(built_once, tmp_path) -> Path:
    """A test's own copy of that built repository (git history, DVC cache and lock, outputs): one build, many runs."""
    repo = shutil.copytree(built_once, tmp_path / "repo", symlinks=True)
    assert _stale(repo) == [], "the copy must be as up to date as the build"
    return repo


def _stale(repo: Path) -> list[str]:
    return list(yaml.safe_load(dvc("status", "--json", cwd=repo).stdout or "{}"))


def test_a_stage_killed_mid_write_leaves_the_old_results(built):
    before = _outputs(built)
    data = tiny_params()
    data["report"]["dpi"] = 60
    (built / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=built,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _temps(built) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _temps(built), "the report stage never started writing"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs, mid-write
    proc.wait()
    assert _outputs(built) == before, "a killed stage must leave the last good report and figures"
    assert "report" in _stale(built), "DVC must still see the report stage as changed"

    dvc("repro", cwd=built)
    assert not _temps(built), "the next run removes what the killed one left"
    after = _outputs(built)
    assert after["reports/report.md"] == before["reports/report.md"]
    assert after["reports/figures/totals.png"] != before["reports/figures/totals.png"]  # now at dpi 60
    assert _stale(built) == []


def test_a_failing_stage_leaves_the_old_results(built):
    before = _outputs(built)
    data = tiny_params()
    data["models"]["typo"] = {"source": "config", "architecture": {**TINY, "model_type": "gpt-2"}}
    (built / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = dvc("repro", cwd=built, check=False)
    assert proc.returncode != 0
    assert "error: model 'typo': model_type='gpt-2' is not built into transformers" in proc.stderr + proc.stdout
    assert _outputs(built) == before, "results/ and reports/ must survive a failed count"
    assert "count" in _stale(built)


def test_dvc_repro_refuses_a_params_yaml_that_conf_no_longer_composes(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    gpt2 = repo / "conf/model/gpt2.yaml"
    gpt2.write_text(gpt2.read_text().replace("n_layer: 12 ", "n_layer: 6 "))
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "params.yaml is not the composition of conf/" in out and "models.gpt2.architecture.n_layer" in out
    assert "make params" in out
    subprocess.run([sys.executable, "-m", "pipeline.core.compose"], cwd=repo, env=ENV, check=True)
    dvc("repro", cwd=repo)
    summary = pd.read_csv(repo / "results/summary.csv").set_index("model")
    # GPT-2 small's closed form with 6 blocks: 124,439,808 − 6 · (12d² + 13d) = 81,912,576
    assert summary.loc["gpt2", "total"] == formulas.gpt2_params(vocab=50257, positions=1024, d=768, layers=6)
