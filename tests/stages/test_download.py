"""Real checkpoints: local folders and the Hub (through a pre-filled cache), reconciled with the architecture;
ties and value distributions from the weights. Every checkpoint here is built by the test."""

from __future__ import annotations

import hashlib
import json
import re
import sys

import pandas as pd
import pytest
import torch
import yaml
from safetensors import safe_open

from pipeline.core.errors import PipelineError
from pipeline.formats import safetensors_file
from pipeline.model import build, reconcile
from pipeline.stages import bias, count, download, report, ties
from tests.conftest import TINY, run_module, tiny_params
from tests.support.checkpoints import (
    GPT2_SMALL,
    gpt2_config,
    gpt2_hub_entries,
    prefill_hub_cache,
    tiny_checkpoint,
    write_sparse_safetensors,
)

# GPT-2 small: 124,439,808 parameters (published total; see tests/model/test_formulas.py). Its Hub checkpoint also
# stores 12 causal masks of 1024 × 1024 = 1,048,576 values, so a naive header sum gives 137,022,720: the
# "137M" the Hub's model page shows.
GPT2_PARAMS = 124_439_808
GPT2_CHECKPOINT = 137_022_720
D, V = TINY["n_embd"], TINY["vocab_size"]


def _write_params(models: dict) -> None:
    with open("params.yaml", "w") as fh:
        yaml.safe_dump(tiny_params(models), fh, sort_keys=False)


def _run(monkeypatch, models: dict) -> None:
    _write_params(models)
    for name in models:
        monkeypatch.setattr(sys, "argv", ["download", name])
        download.main()
    for stage in (count, ties, bias, report):
        stage.main()


def _path_model(folder, **extra) -> dict:
    return {"source": "path", "path": str(folder), **extra}


def test_hub_layout_gpt2_small_counts_its_parameters_not_its_masks(workdir, monkeypatch):
    folder = workdir / "gpt2-hub"
    size = write_sparse_safetensors(folder / "model.safetensors", gpt2_hub_entries(**_gpt2_shape()))
    (folder / "config.json").write_text(json.dumps(gpt2_config(**GPT2_SMALL, n_ctx=1024)))
    _write_params({"gpt2": _path_model(folder)})
    monkeypatch.setattr(sys, "argv", ["download", "gpt2"])
    download.main()
    count.main()
    summary = pd.read_csv("results/summary.csv").set_index("model")
    assert summary.loc["gpt2", "total"] == GPT2_PARAMS
    assert summary.loc["gpt2", "checkpoint_tensors"] == GPT2_CHECKPOINT
    assert summary.loc["gpt2", "checkpoint_buffers"] == 12 * 1024 * 1024
    assert summary.loc["gpt2", "source"] == "path"
    inv = pd.read_csv("results/inventory/gpt2.csv", keep_default_na=False)
    buffers = inv[inv["kind"] == "buffer"]
    assert len(buffers) == 12 and set(buffers["shape"]) == {"1x1x1024x1024"}
    assert set(buffers["component"]) == {"attention"}
    assert buffers["checkpoint_key"].str.fullmatch(r"h\.\d+\.attn\.bias").all()
    params = inv[inv["kind"] == "parameter"]
    assert params.set_index("name").loc["transformer.h.3.mlp.c_fc.weight", "checkpoint_key"] == "h.3.mlp.c_fc.weight"
    assert (workdir / "data/models/gpt2/model.safetensors").stat().st_size == size


def _gpt2_shape() -> dict:
    return {"vocab": 50257, "positions": 1024, "d": 768, "layers": 12}


@pytest.fixture
def tied_and_untied(workdir):
    return {
        "tied": tiny_checkpoint(workdir / "ck-tied", tied=True, seed=1),
        "untied": tiny_checkpoint(workdir / "ck-untied", tied=False, seed=2),
        "tied-twice": tiny_checkpoint(workdir / "ck-twice", tied=True, store_tied_twice=True, seed=3),
    }


def test_ties_from_the_values(workdir, monkeypatch, tied_and_untied):
    _run(monkeypatch, {name: _path_model(folder) for name, folder in tied_and_untied.items()})
    t = pd.read_csv("results/ties.csv").set_index("model")
    # tied, stored once: the course's check through transformers gives exactly 1
    assert t.loc["tied", "structural_tied"] and not t.loc["tied", "stored_separately"]
    assert t.loc["tied", "pearson_r"] == 1.0 and t.loc["tied", "max_abs_diff"] == 0.0
    assert "course" in t.loc["tied", "method"]
    # tied but stored under both names: streamed from the file, still 1
    assert t.loc["tied-twice", "stored_separately"] and t.loc["tied-twice", "pearson_r"] == pytest.approx(
        1.0, abs=1e-12
    )
    assert "streamed" in t.loc["tied-twice", "method"]
    # untied with independently initialised matrices: r near 0
    assert not t.loc["untied", "structural_tied"] and t.loc["untied", "stored_separately"]
    assert abs(t.loc["untied", "pearson_r"]) < 0.05
    assert t.loc["untied", "max_abs_diff"] > 0
    # oracle: torch.corrcoef on the two matrices read whole
    with safe_open(str(tied_and_untied["untied"] / "model.safetensors"), "pt") as f:
        x, y = f.get_tensor("wte.weight").double().flatten(), f.get_tensor("lm_head.weight").double().flatten()
    # float32 chunk kernels with float64 accumulation: about 6 significant digits (pipeline/values/)
    assert t.loc["untied", "pearson_r"] == pytest.approx(float(torch.corrcoef(torch.stack([x, y]))[0, 1]), abs=1e-6)
    assert t.loc["untied", "max_abs_diff"] == pytest.approx(float((x - y).abs().max()), rel=1e-6)
    text = (workdir / "reports/report.md").read_text()
    assert "r = 1.000000" in text and "the matrices are unrelated" in text
    summary = pd.read_csv("results/summary.csv").set_index("model")
    assert summary.loc["tied-twice", "total"] == summary.loc["tied", "total"]


def test_value_distributions_match_an_oracle(workdir, monkeypatch, tied_and_untied):
    _run(monkeypatch, {"tied": _path_model(tied_and_untied["tied"])})
    stats = pd.read_csv("results/distributions.csv")
    hists = pd.read_csv("results/histograms.csv")
    # Oracle: every parameter tensor read whole (each tied tensor once), grouped by hand.
    with safe_open(str(tied_and_untied["tied"] / "model.safetensors"), "pt") as f:
        tensors = {
            k: f.get_tensor(k).double().flatten() for k in f.keys() if not re.fullmatch(r"h\.\d+\.attn\.bias", k)
        }
    groups = {
        "biases": [t for k, t in tensors.items() if k.endswith(".bias")],
        "norm_gains": [t for k, t in tensors.items() if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))],
        "weights": [t for k, t in tensors.items() if not k.endswith(".bias") and "ln_" not in k],
    }
    everything = torch.cat(list(tensors.values()))
    got = stats.set_index(["by", "group"])
    every = int(hists["every"].iloc[0])
    assert every == tiny_params()["values"]["hist_every"] > 1 and (hists["every"] == every).all()
    for group, parts in groups.items():
        values = torch.cat(parts)
        row = got.loc[("group", group)]
        assert row["count"] == values.numel()
        assert row["mean"] == pytest.approx(float(values.mean()), rel=1e-5, abs=1e-9)
        assert row["std"] == pytest.approx(float(values.std(unbiased=False)), rel=1e-5, abs=1e-9)
        assert row["min"] == pytest.approx(float(values.min()), rel=1e-9)
        assert row["max"] == pytest.approx(float(values.max()), rel=1e-9)
        assert row["l2"] == pytest.approx(float(values.norm()), rel=1e-6)
        # histograms: every `every`-th value of each tensor, from its first (pipeline/values/ Histogram)
        picked = torch.cat([t[::every] for t in parts]).float()
        tops = pd.Series((picked.numpy().view("uint32") >> 16).astype("uint32")).value_counts()
        h = hists[hists["group"] == group]
        assert h["count"].sum() == len(picked) == sum(-(-t.numel() // every) for t in parts)
        assert sorted(h["count"]) == sorted(tops)  # the same buckets, each as full as the oracle's
    assert got.loc[("all", "all"), "count"] == everything.numel() == pd.read_csv("results/summary.csv")["total"][0]
    assert (workdir / "reports/figures/distributions.png").exists()


def test_sharded_checkpoint_and_masked_bias_scalars(workdir, monkeypatch):
    folder = tiny_checkpoint(workdir / "ck", shards=3, masked_bias=True)
    _run(monkeypatch, {"sharded": _path_model(folder)})
    summary = pd.read_csv("results/summary.csv").set_index("model")
    p = TINY["n_positions"]
    assert summary.loc["sharded", "checkpoint_buffers"] == TINY["n_layer"] * (p * p + 1)
    assert summary.loc["sharded", "checkpoint_tensors"] == summary.loc["sharded", "total"] + TINY["n_layer"] * (
        p * p + 1
    )
    names = sorted(x.name for x in (workdir / "data/models/sharded").iterdir())
    assert "model.safetensors.index.json" in names and "model-00003-of-00003.safetensors" in names


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints(workdir, monkeypatch, dtype):
    folder = tiny_checkpoint(workdir / "ck", tied=False, dtype=dtype, seed=4)
    _run(monkeypatch, {"half": _path_model(folder)})
    t = pd.read_csv("results/ties.csv").set_index("model")
    assert abs(t.loc["half", "pearson_r"]) < 0.05
    stats = pd.read_csv("results/distributions.csv").set_index(["by", "group"])
    assert stats.loc[("all", "all"), "count"] == pd.read_csv("results/summary.csv")["total"][0]


def test_pickle_is_refused_unless_allowed(workdir, monkeypatch):
    folder = workdir / "ck-bin"
    src = tiny_checkpoint(workdir / "ck-src")
    folder.mkdir()
    (folder / "config.json").write_bytes((src / "config.json").read_bytes())
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        torch.save({k: f.get_tensor(k) for k in f.keys()}, folder / "pytorch_model.bin")
    _write_params({"pickled": _path_model(folder)})
    proc = run_module("pipeline.stages.download", "pickled", cwd=workdir)
    assert proc.returncode == 1
    assert "pytorch_model.bin: pickle checkpoint refused" in proc.stderr and "allow_pickle: true" in proc.stderr
    assert not (workdir / "data/models/pickled").exists()

    _run(monkeypatch, {"pickled": _path_model(folder, allow_pickle=True)})
    prov = json.loads((workdir / "data/models/pickled/provenance.json").read_text())
    assert prov["converted_from_pickle"] == ["pytorch_model.bin"]
    summary = pd.read_csv("results/summary.csv").set_index("model")
    assert summary.loc["pickled", "checkpoint_buffers"] == TINY["n_layer"] * TINY["n_positions"] ** 2


def _error(proc) -> str:
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def test_bad_checkpoints_fail_with_one_line_and_no_output(workdir):
    good = tiny_checkpoint(workdir / "good")
    cases = {}
    # a missing config.json
    f = workdir / "no-config"
    f.mkdir()
    (f / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    cases["no-config"] = (f, "config.json is missing")
    # an index listing a shard that is not there
    f = tiny_checkpoint(workdir / "lost-shard", shards=2)
    (f / "model-00002-of-00002.safetensors").unlink()
    cases["lost-shard"] = (f, "lists shard model-00002-of-00002.safetensors, which is missing")
    # a missing folder
    cases["no-folder"] = (workdir / "nowhere", "is not a folder")
    # a weights file that is not safetensors
    f = workdir / "garbage"
    f.mkdir()
    (f / "config.json").write_bytes((good / "config.json").read_bytes())
    (f / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    cases["garbage"] = (f, "not a safetensors file")
    _write_params({name: _path_model(folder) for name, (folder, _) in cases.items()})
    for name, (_, message) in cases.items():
        line = _error(run_module("pipeline.stages.download", name, cwd=workdir))
        assert message in line, line
        assert not (workdir / "data/models" / name).exists()


def test_architecture_disagreement_is_named(workdir):
    folder = tiny_checkpoint(workdir / "ck")
    _write_params({"m": _path_model(folder, architecture={**TINY, "n_layer": 3})})
    line = _error(run_module("pipeline.stages.download", "m", cwd=workdir))
    assert "architecture.n_layer=3" in line and "says 2" in line


def _reconcile(folder, **arch_over):
    from transformers import AutoConfig

    config = AutoConfig.for_model(**{**TINY, **arch_over})
    model = build.build_meta(config, "m")
    files, _ = safetensors_file.weight_files(folder)
    return reconcile.reconcile(model, safetensors_file.read_checkpoint(folder, files), "m")


def test_reconcile_names_mismatched_missing_and_unexpected_keys(workdir):
    folder = tiny_checkpoint(workdir / "ck")
    with pytest.raises(
        PipelineError, match=r"shape mismatch: wte\.weight \[100, 32\] vs transformer\.wte\.weight \[101, 32\]"
    ):
        _reconcile(folder, vocab_size=101)
    with pytest.raises(PipelineError, match=r"missing keys: transformer\.h\.2\.ln_1\.weight"):
        _reconcile(folder, n_layer=3)
    rec = _reconcile(folder)
    assert rec.entry_values - sum(e.numel for e, _ in rec.buffers) == sum(
        p.numel() for p in build.build_meta(__import__("transformers").AutoConfig.for_model(**TINY), "m").parameters()
    )
    # an extra tensor in a module that does not exist is unexpected, never a silent buffer
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["h.0.adapter.weight"] = torch.zeros(4, 4)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(PipelineError, match=r"unexpected keys: h\.0\.adapter\.weight"):
        _reconcile(folder)


def _with(folder, **tensors):
    """The checkpoint in folder with tensors added (real safetensors, rewritten whole)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state.update(tensors)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_a_parameter_stored_twice_is_refused_unless_it_is_a_tie(workdir):
    """Only a parameter with several names in the built model (a tie) may be stored under more than one."""
    from transformers import AutoConfig

    model = build.build_meta(AutoConfig.for_model(**TINY), "m")
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]  # the oracle: the model's own names
    assert names.count("transformer.h.0.attn.c_attn.weight") == 1
    assert "transformer.wte.weight" in names and "lm_head.weight" in names  # tied: one tensor, two names
    # an untied parameter under its Hub name and its full name, different values: which one counts?
    folder = tiny_checkpoint(workdir / "untied-twice")
    _with(folder, **{"transformer.h.0.attn.c_attn.weight": torch.randn(32, 96)})
    with pytest.raises(PipelineError) as err:
        _reconcile(folder)
    assert (
        "stored twice: h.0.attn.c_attn.weight and transformer.h.0.attn.c_attn.weight both hold "
        "transformer.h.0.attn.c_attn.weight, a parameter with no other name"
    ) in str(err.value)
    # the same values under both names are still two tensors for one name
    folder = tiny_checkpoint(workdir / "same-twice")
    _with(folder, **{"transformer.ln_f.weight": torch.ones(32)})
    with pytest.raises(PipelineError, match=r"stored twice: ln_f\.weight and transformer\.ln_f\.weight both hold"):
        _reconcile(folder)
    # a tie under both its names: accepted, the second copy counted apart (old GPT-2 files)
    rec = _reconcile(tiny_checkpoint(workdir / "tied-twice", store_tied_twice=True))
    assert rec.key_of["transformer.wte.weight"] == "lm_head.weight;wte.weight"
    assert rec.tied_copies == TINY["vocab_size"] * TINY["n_embd"]
    # a tie under one of its names twice: refused like any other
    folder = _with(
        tiny_checkpoint(workdir / "tied-thrice", store_tied_twice=True),
        **{"transformer.wte.weight": torch.randn(TINY["vocab_size"], TINY["n_embd"])},
    )
    with pytest.raises(PipelineError, match=r"stored twice: transformer\.wte\.weight and wte\.weight both hold "):
        _reconcile(folder)


def test_count_stage_fails_on_a_checkpoint_that_does_not_match(workdir):
    folder = tiny_checkpoint(workdir / "ck")
    _write_params({"m": _path_model(folder)})
    assert run_module("pipeline.stages.download", "m", cwd=workdir).returncode == 0
    cfg = json.loads((workdir / "data/models/m/config.json").read_text())
    (workdir / "data/models/m/config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    line = _error(run_module("pipeline.stages.count", cwd=workdir))
    assert "model 'm': checkpoint does not match the architecture: missing keys: transformer.h.2" in line
    assert not (workdir / "results").exists()


# --- the Hub, through the real huggingface_hub code and a pre-filled cache --------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_env(cache) -> dict:
    return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent)}


def test_hub_source_from_a_prefilled_cache(workdir):
    source = tiny_checkpoint(workdir / "upstream", seed=5)
    (source / "README.md").write_text("not fetched: allow_patterns takes only config.json and safetensors")
    cache = workdir / "hf" / "hub"
    prefill_hub_cache(cache, "org/tiny-gpt2", COMMIT, source)
    models = {
        "pinned": {"source": "hub", "hub_id": "org/tiny-gpt2", "revision": COMMIT},
        "branch": {"source": "hub", "hub_id": "org/tiny-gpt2", "revision": "main"},
    }
    _write_params(models)
    for name in models:
        proc = run_module("pipeline.stages.download", name, cwd=workdir, env=_hub_env(cache))
        assert proc.returncode == 0, proc.stderr
        prov = json.loads((workdir / "data/models" / name / "provenance.json").read_text())
        assert prov["revision"] == COMMIT  # a branch is resolved, and the sha recorded
        assert prov["revision_requested"] == models[name]["revision"]
        files = {f["name"]: f for f in prov["files"]}
        assert set(files) == {"config.json", "model.safetensors"}
        data = (source / "model.safetensors").read_bytes()
        assert files["model.safetensors"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert files["model.safetensors"]["bytes"] == len(data)
    proc = run_module("pipeline.stages.count", cwd=workdir, env=_hub_env(cache))
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert summary.loc["pinned", "revision"] == COMMIT and summary.loc["pinned", "source"] == "hub"
    assert summary.loc["pinned", "total"] == summary.loc["branch", "total"]


def test_hub_unreachable_without_a_cache(workdir):
    cache = workdir / "hf" / "hub"
    cache.mkdir(parents=True)
    _write_params({"m": {"source": "hub", "hub_id": "org/absent", "revision": COMMIT}})
    line = _error(run_module("pipeline.stages.download", "m", cwd=workdir, env=_hub_env(cache)))
    assert "model 'm'" in line and "org/absent" in line and "HF_HUB_OFFLINE is set (offline mode)" in line
    assert "HF_HUB_OFFLINE=1 works from a pre-filled cache" in line and "or use source: config" in line
    assert not (workdir / "data").exists()


def test_hub_endpoint_that_refuses_connections(workdir):
    """Online mode against a port on 127.0.0.1 where nothing listens: a clear error, quickly."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends, so connections are refused
    cache = workdir / "hf" / "hub"
    cache.mkdir(parents=True)
    _write_params({"m": {"source": "hub", "hub_id": "org/absent", "revision": COMMIT}})
    env = {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0"}
    proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=env)
    line = _error(proc)
    assert "model 'm'" in line and "cannot be reached" in line and "HF_HUB_OFFLINE=1" in line, line
    assert "Retrying" not in proc.stderr  # one probe, not huggingface_hub's ~25 s of backoff
