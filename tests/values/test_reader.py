"""A checkpoint larger than this machine's RAM goes through the whole pipeline in bounded memory (slow).

The file is sparse: its data is a hole, which reads as zeros at memory speed and takes no disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, tiny_params
from tests.support.checkpoints import gpt2_config, gpt2_hub_entries, write_sparse_safetensors

pytestmark = pytest.mark.slow

# A GPT-2-shaped model of width 4096 and 36 blocks: 7.46e9 float32 values, 29.8 GB, more than the 24 GiB here.
SHAPE = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 4096, "n_layer": 36, "n_head": 32}


def _peak_rss_mb(args: list[str], cwd) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    result = subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), out, err)
    return usage.ru_maxrss / 1024, result


def test_a_checkpoint_larger_than_ram(workdir):
    folder = workdir / "huge"
    entries = gpt2_hub_entries(SHAPE["vocab_size"], SHAPE["n_positions"], SHAPE["n_embd"], SHAPE["n_layer"])
    size = write_sparse_safetensors(folder / "model.safetensors", entries)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert size > ram, f"the checkpoint ({size / 1e9:.1f} GB) must be larger than RAM ({ram / 1e9:.1f} GB)"
    (folder / "config.json").write_text(json.dumps(gpt2_config(**SHAPE)))
    data = tiny_params({"huge": {"source": "path", "path": str(folder)}})
    data["values"]["bins"] = 10
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    peaks = {}
    for stage in ("download", "count", "ties", "bias"):
        args = [sys.executable, "-m", f"pipeline.stages.{stage}"] + (["huge"] if stage == "download" else [])
        peaks[stage], proc = _peak_rss_mb(args, workdir)
        assert proc.returncode == 0, proc.stderr
    # bounded by torch's own footprint plus chunk buffers and the page window, not by the file
    print("peaks", peaks)
    assert peaks["bias"] < 1500, peaks
    assert peaks["count"] < 1500, peaks
    stats = pd.read_csv(workdir / "results/distributions.csv").set_index(["by", "group"])
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert stats.loc[("all", "all"), "count"] == summary.loc["huge", "total"]
    assert stats.loc[("all", "all"), "max"] == 0.0  # a hole reads as zeros
