"""Shared fixtures. Tiny architectures (2 layers, width 32) keep the suite fast; nothing touches the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Belt and braces: no test may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {
    "model_type": "gpt2",
    "vocab_size": 100,
    "n_positions": 16,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "tie_word_embeddings": True,
    "bos_token_id": 99,  # GPT-2's 50256 would lie outside the tiny vocabulary
    "eos_token_id": 99,
}


# A 2-layer, width-32 Llama-style decoder with grouped-query attention (2 KV heads for 4 query heads).
TINY_LLAMA = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
}


def tiny_gpt2(device: str = "meta", **overrides):
    """A 2-layer, width-32 GPT-2 built from a config (on the meta device unless told otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    arch = {**TINY, **overrides}
    arch.pop("model_type")
    with torch.device(device):
        return AutoModelForCausalLM.from_config(GPT2Config(**arch))


@pytest.fixture
def tiny_model():
    return tiny_gpt2()


@pytest.fixture
def tiny_untied():
    return tiny_gpt2(tie_word_embeddings=False)


def tiny_params(models: dict | None = None) -> dict:
    """A params mapping with tiny models, paths as in conf/config.yaml."""
    from pipeline.core import compose

    data = compose.compose(["sweep=gpt2-tied-vs-untied"], conf_dir=ROOT / "conf")
    if models is None:
        models = {
            "tiny": {"source": "config", "stated_size": "20K", "architecture": dict(TINY)},
            "tiny-untied": {"source": "config", "architecture": {**TINY, "tie_word_embeddings": False}},
        }
    data["models"] = models
    data.pop("sweep")  # these models are not that sweep's: nothing to compare them with (compose.what_if)
    data["whatif"].update({"n_layer": [1, 2], "n_embd": [64, 128]})  # a small grid keeps the stages fast
    return data


def compose_model(name: str) -> dict:
    """conf/model/<name>.yaml as composed by Hydra, alone."""
    from pipeline.core import compose

    extra = [] if name == "gpt2" else ["~models.gpt2", f"+model@models.{name}={name}"]
    data = compose.compose(["sweep=gpt2-small", *extra], conf_dir=ROOT / "conf")
    return data["models"][name]


def run_pipeline(workdir: Path, monkeypatch, models: dict | None = None) -> Path:
    """Write params.yaml for models (tiny_params' defaults when None), then run every stage in process."""
    from pipeline.stages import bias, count, download, report, ties

    data = tiny_params(models)
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for name in data["models"]:
        monkeypatch.setattr(sys, "argv", ["download", name])
        download.main()
    for stage in (count, ties, bias, report):
        stage.main()
    return workdir / "reports"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A workspace where run_pipeline ran once, on tiny_params' defaults, shared by every test that asks.

    Read it in place; copy it (copy_workspace) before running anything in it.
    """
    wd = tmp_path_factory.mktemp("tiny-run")
    shutil.copytree(ROOT / "conf", wd / "conf")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(wd)
        run_pipeline(wd, mp)
    return wd


def copy_workspace(source: Path, dest: Path) -> Path:
    """A copy of a workspace (links kept as links), to run stages in without touching the shared one."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub's client may make requests in this process (HF_HUB_OFFLINE is set above for safety,
    and the client refuses every request while it is): for tests that talk to a server on 127.0.0.1 only."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding conf/ (stages resolve paths against the current directory)."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` the way dvc.yaml does, with this repository importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# --- running under pytest-xdist (make test) ---------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Under xdist, the slow tests (real DVC, the larger-than-RAM checkpoint) first: none is left to start last."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


def pytest_configure(config):
    if getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput"):
        config.pluginmanager.register(FileProgress(config), "hmp-file-progress")


class FileProgress:
    """Under xdist the terminal shows only dots: print a line for each test file as its last test ends."""

    def __init__(self, config):
        self.config = config
        self.total: Counter | None = None
        self.done, self.seconds, self.outcome = Counter(), Counter(), {}
        self.counts: dict[str, Counter] = {}

    def pytest_xdist_node_collection_finished(self, node, ids):
        if self.total is None:
            self.total = Counter(nodeid.split("::")[0] for nodeid in ids)

    def pytest_runtest_logreport(self, report):
        file = report.nodeid.split("::")[0]
        self.seconds[file] += report.duration
        if report.failed:
            self.outcome[report.nodeid] = "failed" if report.when == "call" else "error"
        elif report.skipped and report.nodeid not in self.outcome:
            self.outcome[report.nodeid] = "skipped"
        if report.when != "teardown":
            return
        self.counts.setdefault(file, Counter())[self.outcome.pop(report.nodeid, "passed")] += 1
        self.done[file] += 1
        if self.total is None or self.done[file] != self.total[file] or self.config.option.verbose > 0:
            return
        tr = self.config.pluginmanager.getplugin("terminalreporter")
        if tr is None:
            return
        counts = ", ".join(f"{n} {what}" for what, n in sorted(self.counts[file].items()))
        if tr._tw.width_of_current_line:  # after the dots of the line being written
            tr._tw.line()
        tr._tw.line(f"{file}: {counts} ({self.seconds[file]:.0f} s of test time)")
