"""Checkpoints of the families beyond text decoders, through every stage: saved by save_pretrained (real
safetensors), reconciled with the architecture, their values read, ties checked, biases split, reported.

Oracles: transformers' own sum(p.numel()) of the saved model, its own parameter values (the value pass's
count of values and the tie's r, from the tensors as torch holds them), and `.bias` names from named_parameters().
"""

from __future__ import annotations

import shutil
import warnings

import pandas as pd
import pytest

from tests.conftest import ROOT, run_pipeline
from tests.support.families import FAMILIES, tiny_family

# save_pretrained writes llava-hf's published layout (language_model.model.*, vision_tower.*); the same
# checkpoint in transformers 5's own module layout (model.language_model.*) must count the same
LAYOUTS = {
    "language_model.model.": "model.language_model.",
    "vision_tower.": "model.vision_tower.",
    "multi_modal_projector.": "model.multi_modal_projector.",
    "language_model.lm_head.": "lm_head.",
}


def _relaid_llava(src, dst):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    renamed = {}
    for key, value in tensors.items():
        prefix = next((p for p in LAYOUTS if key.startswith(p)), None)
        renamed[LAYOUTS[prefix] + key[len(prefix) :] if prefix else key] = value
    assert set(renamed) != set(tensors)
    save_file(renamed, dst / "model.safetensors", metadata={"format": "pt"})


@pytest.fixture(scope="module")
def families_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("families")
    shutil.copytree(ROOT / "conf", wd / "conf")
    oracles = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in FAMILIES:
            model = tiny_family(name)
            model.save_pretrained(wd / "src" / name)
            params = dict(model.named_parameters())
            oracles[name] = {
                "total": sum(p.numel() for p in model.parameters()),
                "bias": sum(p.numel() for n, p in params.items() if n.endswith(".bias")),
            }
    _relaid_llava(wd / "src" / "llava", wd / "src" / "llava-legacy")
    oracles["llava-legacy"] = oracles["llava"]
    models = {name: {"source": "path", "path": str(wd / "src" / name)} for name in [*FAMILIES, "llava-legacy"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(wd)
        run_pipeline(wd, mp, models)
    return wd, oracles


def test_every_family_reconciles_its_checkpoint(families_run):
    wd, oracles = families_run
    summary = pd.read_csv(wd / "results" / "summary.csv").set_index("model")
    for name, (_, model_class, _) in [*FAMILIES.items(), ("llava-legacy", FAMILIES["llava"])]:
        row = summary.loc[name]
        assert row["total"] == oracles[name]["total"], name
        assert row["model_class"] == model_class and row["class_from"] == "architectures"
        assert row["checkpoint_tensors"] >= row["total"]  # every parameter found in the file (buffers on top)
        assert row["bias_named"] == oracles[name]["bias"]


def test_the_value_pass_reads_every_parameter_of_every_family(families_run):
    wd, oracles = families_run
    stats = pd.read_csv(wd / "results" / "distributions.csv")
    whole = stats[stats["by"] == "all"].set_index("model")
    for name in FAMILIES:
        assert whole.loc[name, "count"] == oracles[name]["total"], name


def test_ties_of_every_family(families_run):
    wd, _ = families_run
    ties = pd.read_csv(wd / "results" / "ties.csv").set_index("model")
    # tied by transformers' defaults: T5, Whisper and Mamba share the token embedding with the head
    for name in ("t5", "whisper", "mamba"):
        assert ties.loc[name, "structural_tied"] and ties.loc[name, "pearson_r"] == pytest.approx(1.0)
    assert not ties.loc["jamba", "structural_tied"]
    assert "no token embedding" in ties.loc["vit", "method"]


def test_the_report_speaks_of_each_family_in_its_terms(families_run):
    wd, _ = families_run
    text = (wd / "reports" / "report.md").read_text()
    assert "encoder stack" in text and "vision tower" in text and "state-space" in text
    inv = pd.read_csv(wd / "results" / "inventory" / "whisper.csv")
    assert {"encoder", "decoder"} <= set(inv["tower"].dropna())
