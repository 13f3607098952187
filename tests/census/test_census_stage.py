"""The census stage: census.list in params.yaml, results/census.csv, and the report's census section and figure."""

from __future__ import annotations

import json

import pandas as pd
import yaml

from tests.conftest import copy_workspace, run_module
from tests.support.checkpoints import GPT2_SMALL, gpt2_config, gpt2_hub_entries, write_sparse_safetensors

GPT2_SMALL_TOTAL = 124_439_808  # the course's figure
MASKS = 12 * 1024 * 1024  # the Hub file's 12 causal masks [1, 1, 1024, 1024] (NOTES.md)


def _folder(path, claim):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(gpt2_config(**GPT2_SMALL)))
    entries = gpt2_hub_entries(50257, 1024, 768, 12)
    write_sparse_safetensors(path / "model-00001-of-00001.safetensors", entries)
    weight_map = {key: "model-00001-of-00001.safetensors" for key, *_ in entries}
    index = {"metadata": {"total_parameters": claim}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_the_census_stage_and_its_report_section(tiny_run, tmp_path):
    wd = copy_workspace(tiny_run, tmp_path / "wd")
    _folder(wd / "repos" / "masks-counted", GPT2_SMALL_TOTAL + MASKS)
    _folder(wd / "repos" / "agrees", GPT2_SMALL_TOTAL)
    (wd / "conf" / "census").mkdir(exist_ok=True)
    (wd / "conf" / "census" / "mine.csv").write_text(
        "source,revision,hub_total\nrepos/masks-counted,,333312\nrepos/agrees,,\n./repos/missing,,\n"
    )
    data = yaml.safe_load((wd / "params.yaml").read_text())
    data["census"] |= {"list": "conf/census/mine.csv", "workers": 1, "threads": 2}
    (wd / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_module("pipeline.stages.census", cwd=wd)
    assert proc.returncode == 0, proc.stderr
    census = pd.read_csv(wd / "results/census.csv", keep_default_na=False)
    assert list(census["source"]) == ["repos/masks-counted", "repos/agrees", "./repos/missing"]
    assert list(census["total"][:2]) == [str(GPT2_SMALL_TOTAL)] * 2
    assert census["error"][2] == "no such file or folder"
    proc = run_module("pipeline.stages.report", cwd=wd)
    assert proc.returncode == 0, proc.stderr
    report = (wd / "reports/report.md").read_text()
    section = report.split("## Census")[1].split("\n## ")[0]
    assert "`conf/census/mine.csv` lists 3 sources; 2 were counted" in section
    assert "3 claims were set beside the exact count; 1 agree" in section
    assert f"counts buffers stored as tensors ({MASKS:,})" in section
    assert section.index("333,312") < section.index(f"{GPT2_SMALL_TOTAL + MASKS:,}")  # the worst claim first
    assert (wd / "reports/figures/census.png").stat().st_size > 0
    assert (wd / "reports/data/census.csv").read_bytes() == (wd / "results/census.csv").read_bytes()


def test_no_list_no_census(tiny_run, tmp_path):
    wd = copy_workspace(tiny_run, tmp_path / "wd")
    proc = run_module("pipeline.stages.census", cwd=wd)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_csv(wd / "results/census.csv").empty
    assert "no census" in proc.stderr.lower() or "census.list is empty" in proc.stderr


def test_a_bad_census_setting_is_one_line(tiny_run, tmp_path):
    wd = copy_workspace(tiny_run, tmp_path / "wd")
    data = yaml.safe_load((wd / "params.yaml").read_text())
    data["census"]["workers"] = 0
    (wd / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = run_module("pipeline.stages.census", cwd=wd)
    assert proc.returncode != 0 and "census.workers=0" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
