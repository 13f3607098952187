"""`hmp count` and `hmp add`, run as the installed console script on real files, a real GGUF and a pre-filled Hub cache.

Oracles: the closed forms of pipeline/model/formulas.py (GPT-2: V·d + P·d + L·(12d² + 13d) + 2d; Llama:
formulas.llama_params) and the course's published GPT-2 small figures (124,439,808 parameters,
102,144 of them biases; 163,037,184 with an untied head).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.model import formulas
from tests.conftest import ROOT, TINY
from tests.support.checkpoints import prefill_hub_cache, tiny_checkpoint
from tests.support.quantized import llama_total

HMP = shutil.which("hmp", path=str(Path(sys.executable).parent))
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def hmp(*args: str, cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    done = subprocess.run([HMP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def tiny_total(tied: bool = True) -> int:
    t = TINY
    return formulas.gpt2_params(t["vocab_size"], t["n_positions"], t["n_embd"], t["n_layer"], tied=tied)


def test_the_console_script_is_installed():
    assert HMP, "make setup installs hmp (pyproject [project.scripts])"


def test_count_a_config_json_gives_gpt2_smalls_published_figures(tmp_path):
    config = tmp_path / "gpt2" / "config.json"
    config.parent.mkdir()
    arch = yaml.safe_load((ROOT / "conf/model/gpt2.yaml").read_text())["architecture"]
    config.write_text(json.dumps(arch))
    out = hmp("count", str(config), "--json", cwd=tmp_path).stdout
    got = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))  # strict: no NaN or Infinity
    assert [b["layer"] for b in got["blocks"]] == [None, None, *range(12), None]
    assert got["model"] == "gpt2" and got["summary"]["total"] == 124_439_808  # the course's figure
    conv = {c["convention"]: c["params"] for c in got["conventions"]}
    assert conv["untied_head"] == conv["torchinfo"] == 163_037_184
    assert got["weights_and_biases"] == {"weight": 124_439_808 - 102_144, "bias": 102_144}
    assert got["tie"]["declared_tied"] and got["tie"]["structural_tied"] and got["tie"]["pearson_r"] is None
    text = hmp("count", str(config), "--per-layer", cwd=tmp_path).stdout
    assert text.startswith("gpt2: 124,439,808 parameters (124.4M), model type gpt2, shapes only, no weights")
    assert "torchinfo summary()" in text and "163,037,184" in text and "0.0821 %" in text
    # --per-layer: 12 blocks of 12d² + 13d = 7,087,872 at d = 768, the last running total the whole model
    blocks = [line for line in text.splitlines() if line.startswith("transformer.h.")]
    assert len(blocks) == 12 and all("7,087,872" in line for line in blocks)
    assert text.rstrip().splitlines()[-1].split()[-1] == "124,439,808"


def test_a_name_of_conf_model_counts_as_that_entry_and_names_keep_their_spelling(tmp_path):
    """hmp count gpt2, offline: the project's own conf/model/gpt2.yaml (issue 27); a file's name as it is written."""
    done = hmp("count", "gpt2", "--json", cwd=tmp_path)  # no conf/ here: the project hmp was installed from
    got = json.loads(done.stdout)
    assert got["summary"]["total"] == 124_439_808 and got["source"]["conf"].endswith("conf/model/gpt2.yaml")
    assert "as " in hmp("count", "gpt2", cwd=tmp_path).stdout.splitlines()[1]
    named = tmp_path / "meta-llama__Llama-3.1-8B.json"
    named.write_text((PUBLISHED / "meta-llama--Meta-Llama-3-8B.json").read_text())
    assert json.loads(hmp("count", str(named), "--json", cwd=tmp_path).stdout)["model"] == "meta-llama__Llama-3.1-8B"
    version = hmp("--version", cwd=tmp_path).stdout
    assert version.startswith("hmp 0.") and "transformers 5." in version


def test_count_a_safetensors_folder_with_weights(tmp_path):
    folder = tiny_checkpoint(tmp_path / "tiny-gpt2", tied=False, seed=3)
    got = json.loads(hmp("count", str(folder), "--json", cwd=tmp_path).stdout)
    assert got["summary"]["total"] == tiny_total(tied=False)
    assert got["summary"]["checkpoint_tensors"] is not None  # reconciled with the file
    tie = got["tie"]
    assert not tie["declared_tied"] and tie["stored_separately"] and abs(tie["pearson_r"]) < 0.2  # two matrices
    assert sum(b["params"] for b in got["blocks"]) == tiny_total(tied=False)
    text = hmp("count", str(folder), cwd=tmp_path).stdout
    assert f"{tiny_total(tied=False):,} parameters" in text and "with weights" in text
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # left as it was


def test_count_a_gguf_file(tmp_path):
    from tests.formats.test_gguf_file import write_gguf

    path = write_gguf(tmp_path / "tiny-llama-q8.gguf", "Q8_0")
    got = json.loads(hmp("count", str(path), "--json", cwd=tmp_path).stdout)
    assert got["model"] == "tiny-llama-q8" and got["summary"]["total"] == llama_total()
    assert got["summary"]["model_type"] == "llama"


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_count_a_tied_gguf_file(tmp_path, qtype):
    """No output.weight (Llama-3.2-1B, Qwen2.5-0.5B, Gemma as llama.cpp writes them): it ended in a traceback."""
    from tests.formats.test_gguf_file import write_gguf
    from tests.support.quantized import LLAMA

    path = write_gguf(tmp_path / f"tied-{qtype}.gguf", qtype, drop="output.weight")
    done = hmp("count", str(path), "--json", cwd=tmp_path)
    assert "Traceback" not in done.stderr
    got = json.loads(done.stdout)
    assert got["summary"]["total"] == formulas.llama_params_from_config({**LLAMA, "tie_word_embeddings": True})
    tie = got["tie"]
    assert tie["declared_tied"] and tie["structural_tied"] and not tie["stored_separately"]
    assert tie["pearson_r"] == 1.0 and tie["max_abs_diff"] == 0.0  # the stored embedding, re-tied by transformers
    text = hmp("count", str(path), cwd=tmp_path).stdout
    assert f"{got['summary']['total']:,} parameters" in text and "r = 1.000000" in text


def test_a_folder_with_config_json_and_a_gguf_is_ambiguous(tmp_path):
    """It was counted from config.json alone (22,688 parameters where the GGUF holds 41,248), without a word."""
    from tests.formats.test_gguf_file import write_gguf

    folder = tmp_path / "both"
    write_gguf(folder / "tiny.gguf", "Q8_0")
    (folder / "config.json").write_text(json.dumps(TINY))
    done = hmp("count", str(folder), cwd=tmp_path, ok=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and done.stdout == "" and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {folder}: holds config.json and tiny.gguf but no safetensors")
    assert f"name the .gguf file ({folder / 'tiny.gguf'}) or the config.json" in lines[0]
    assert (
        json.loads(hmp("count", str(folder / "tiny.gguf"), "--json", cwd=tmp_path).stdout)["summary"]["total"]
        == llama_total()
    )  # named, the GGUF counts


def test_count_a_hub_id_from_the_local_cache(tmp_path):
    cache = tmp_path / "hf" / "hub"
    prefill_hub_cache(cache, "org/tiny-gpt2", COMMIT, tiny_checkpoint(tmp_path / "upstream", seed=5))
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    got = json.loads(hmp("count", "org/tiny-gpt2", "--json", cwd=tmp_path, env=env).stdout)
    assert got["summary"]["total"] == tiny_total() and got["source"]["revision"] == COMMIT and got["from_cache"]
    assert got["tie"]["pearson_r"] == 1.0  # one tensor: the course's check on the loaded model
    text = hmp("count", "org/tiny-gpt2", cwd=tmp_path, env=env).stdout
    assert f"from org/tiny-gpt2 @ {COMMIT[:12]} (from the local Hub cache" in text
    missing = hmp("count", "org/not-cached", cwd=tmp_path, env=env, ok=False)
    assert missing.returncode == 1 and missing.stdout == ""
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model 'not-cached':") and "not in the cache" in line and "HF_HUB_OFFLINE" in line
    assert line.endswith("or use its config.json instead") and "source: config" not in line  # advice for hmp users


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./nowhere", "./nowhere: no such file or folder, and not a Hub id (owner/name)"),
        ("a/b/c", "a/b/c: no such file or folder, and not a Hub id (owner/name)"),
        ("notes.txt", "notes.txt: not a config.json, a .gguf file or a checkpoint folder"),
        ("empty", "empty: a checkpoint folder needs its config.json"),
        ("bad.json", "model 'bad': {tmp}/bad.json: n_layer='twelve' must be a whole number from 1 to 1,024"),
    ],
)
def test_bad_sources_are_one_line(tmp_path, source, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.json").write_text('{"model_type": "gpt2", "n_layer": "twelve"}')
    done = hmp("count", source, cwd=tmp_path, ok=False)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message.format(tmp=tmp_path)}"), done.stderr


@pytest.mark.slow  # a real dvc repro
def test_add_then_dvc_repro_counts_the_new_model(repo_copy):
    folder = tiny_checkpoint(repo_copy.parent / "my-ckpt", seed=2)
    out = hmp("add", "mine", str(folder), "--sweep", "gpt2-small", cwd=repo_copy).stdout
    assert out.startswith("added mine: wrote conf/model/mine.yaml, conf/sweep/gpt2-small.yaml, params.yaml")
    entry = yaml.safe_load((repo_copy / "conf/model/mine.yaml").read_text())
    assert entry == {"source": "path", "path": str(folder)}
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert list(data["models"]) == ["gpt2", "mine"] and data["sweep"] == "gpt2-small"
    again = hmp("add", "mine", str(folder), "--sweep", "gpt2-small", cwd=repo_copy, ok=False)
    assert again.stderr.strip() == "error: conf/model/mine.yaml exists already; pick another name or edit it"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "repro", "--quiet"], cwd=repo_copy, env=env, check=True, timeout=600)
    metrics = json.loads((repo_copy / "results/metrics.json").read_text())
    assert metrics == {"gpt2": 124_439_808, "mine": tiny_total()}
    linked = repo_copy / "data/models/mine/model.safetensors"
    assert linked.stat().st_ino == (folder / "model.safetensors").stat().st_ino or linked.is_symlink()  # not copied


@pytest.fixture
def repo_copy(tmp_path):
    """A git clone of this repository's committed state plus the working tree's changes, as a new user has it."""
    from tests.support.repo_copy import copy_repo

    return copy_repo(tmp_path / "repo")


def test_add_a_hub_id_pins_the_commit_it_resolved(repo_copy):
    cache = repo_copy.parent / "hf" / "hub"
    prefill_hub_cache(cache, "org/tiny-gpt2", COMMIT, tiny_checkpoint(repo_copy.parent / "upstream", seed=5))
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    hmp("add", "tiny-hub", "org/tiny-gpt2", "--stated-size", "20K", cwd=repo_copy, env=env)
    entry = yaml.safe_load((repo_copy / "conf/model/tiny-hub.yaml").read_text())
    # main in the cache's refs resolves to the commit, pinned so `dvc repro` reads the same files later
    assert entry == {"source": "hub", "hub_id": "org/tiny-gpt2", "revision": COMMIT, "stated_size": "20K"}
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert data["sweep"] == "gpt2-family" and "tiny-hub" in data["models"]  # the sweep params.yaml records
    assert "- /model@models.tiny-hub: tiny-hub" in (repo_copy / "conf/sweep/gpt2-family.yaml").read_text()
    bad = hmp("add", "x.y", "org/tiny-gpt2", cwd=repo_copy, env=env, ok=False)
    assert bad.stderr.strip().startswith("error: name 'x.y': a model name is 1 to 64 letters")
    unknown = hmp("add", "other", "org/tiny-gpt2", "--sweep", "nope", cwd=repo_copy, env=env, ok=False)
    assert unknown.stderr.strip() == "error: --sweep nope: no conf/sweep/nope.yaml"
    assert not (repo_copy / "conf/model/other.yaml").exists()  # nothing half-written


def test_hostile_arguments_are_one_line_and_write_nothing(repo_copy, tmp_path):
    """Cases a hostile-input review found: names and sweeps that are paths, YAML in a path, over-long paths."""
    conf_before = {p: p.read_bytes() for p in (repo_copy / "conf").rglob("*") if p.is_file()}
    params_before = (repo_copy / "params.yaml").read_bytes()
    config = tmp_path / "tiny" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"model_type": "gpt2", **{k: v for k, v in TINY.items() if k != "model_type"}}))
    cases = [
        (["count", str(config), "--name", "../../escape"], "error: --name '../../escape': a model name is"),
        (["add", "ok1", str(config), "--sweep", "../../../tmp/outside"], "error: --sweep '../../../tmp/outside':"),
        (["count", "a" * 300], "error: " + "a" * 40),  # a file name too long for the file system: no traceback
        (["count", "~no-such-user-xyz/config.json"], "error: ~no-such-user-xyz/config.json: not a usable path"),
        (["add", "ok2", "org/model", "--revision", "../refs/main"], "error: --revision ../refs/main: not a branch"),
    ]
    unknown = tmp_path / "unknown" / "config.json"  # a model hmp count refuses: hmp add must refuse it too
    unknown.parent.mkdir()
    unknown.write_text('{"model_type": "no-such-type"}')
    cases.append((["add", "ok3", str(unknown)], "error: model 'ok3':"))
    for args, start in cases:
        done = hmp(*args, cwd=repo_copy, ok=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and done.stdout == "" and len(lines) == 1 and lines[0].startswith(start), args
    assert not (tmp_path.parent / "escape").exists() and not Path("/tmp/outside.yaml").exists()
    # a path with a newline and YAML in it: stays a path, never becomes model-file keys
    evil = tmp_path / "x\nallow_pickle: true\nstated_size: 999B\n#"
    evil.mkdir()
    shutil.copy(config, evil / "config.json")
    hmp("add", "evil", str(evil), "--sweep", "gpt2-small", cwd=repo_copy)
    written = yaml.safe_load((repo_copy / "conf/model/evil.yaml").read_text())
    assert written == {"source": "path", "path": str(evil), "config_only": True}
    assert "allow_pickle" not in (repo_copy / "conf/sweep/gpt2-small.yaml").read_text()
    # a sweep whose defaults are a flow-style list: refused before anything is written
    subprocess.run(["git", "checkout", "-q", "--", "conf", "params.yaml"], cwd=repo_copy, check=True)
    (repo_copy / "conf/model/evil.yaml").unlink()
    flow = repo_copy / "conf/sweep/flow.yaml"
    flow.write_text("# @package _global_\ndefaults: [{/model@models.gpt2: gpt2}]\nsweep: flow\n")
    done = hmp("add", "ok4", str(config), "--sweep", "flow", cwd=repo_copy, ok=False)
    assert done.stderr.strip().startswith("error: conf/sweep/flow.yaml: its defaults list is not in the block style")
    flow.unlink()
    assert {p: p.read_bytes() for p in (repo_copy / "conf").rglob("*") if p.is_file()} == conf_before
    assert (repo_copy / "params.yaml").read_bytes() == params_before


PUBLISHED = ROOT / "tests" / "support" / "published_configs"


def test_the_class_counted_is_always_said(tmp_path):
    """BERT's published config names BertForMaskedLM: its count, and the class, are printed (never unsaid)."""
    bert = PUBLISHED / "google-bert--bert-base-uncased.json"
    got = json.loads(hmp("count", str(bert), "--json", cwd=tmp_path).stdout)
    assert got["summary"]["model_class"] == "BertForMaskedLM" and got["summary"]["class_from"] == "architectures"
    text = hmp("count", str(bert), cwd=tmp_path).stdout
    assert "  counted as BertForMaskedLM (the class config.json names in architectures)" in text
    # GPT-2's published file: its n_ctx is kept, and said once
    text = hmp("count", str(PUBLISHED / "openai-community--gpt2.json"), cwd=tmp_path).stdout
    assert "124,439,808 parameters" in text and "config.json fields the model never reads: n_ctx" in text


def test_an_encoder_decoder_is_counted_as_its_own_class_never_as_its_decoder(tmp_path):
    done = hmp("count", str(PUBLISHED / "facebook--bart-large.json"), "--json", cwd=tmp_path)
    result = json.loads(done.stdout)
    s = result["summary"]
    assert (s["model_class"], s["class_from"]) == ("BartModel", "architectures")  # the class the file names
    assert s["total"] != 254_084_096  # the decoder alone (NOTES.md) is never the answer
    parts = {c["convention"]: c["params"] for c in result["conventions"]}
    # both stacks, and the embedding they share, add up to the whole model
    assert parts["encoder_stack"] + parts["decoder_stack"] + parts["shared_between_stacks"] == s["total"]


def _pickle_folder(folder: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    source = tiny_checkpoint(folder.parent / "src", seed=4)
    folder.mkdir()
    shutil.copy(source / "config.json", folder / "config.json")
    torch.save(load_file(source / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def test_a_pickle_checkpoint_needs_allow_pickle_which_hmp_can_pass(tmp_path):
    folder = _pickle_folder(tmp_path / "pickled")
    refused = hmp("count", str(folder), cwd=tmp_path, ok=False)
    assert refused.returncode == 1 and "pickle checkpoint refused" in refused.stderr
    assert "pass --allow-pickle" in refused.stderr and "allow_pickle: true" not in refused.stderr
    got = json.loads(hmp("count", str(folder), "--allow-pickle", "--json", cwd=tmp_path).stdout)
    assert got["summary"]["total"] == tiny_total() and got["summary"]["checkpoint_tensors"] is not None


@pytest.mark.parametrize("command", ["count", "add"])
def test_a_folder_cannot_plant_files_through_remote_headers(command, repo_copy, tmp_path):
    """Issue 18's file-planting attack, through hmp: refused in one line, the target never created."""
    from tests.stages.test_hostile import plant_remote_headers

    folder = tiny_checkpoint(tmp_path / "evil")
    target = tmp_path / "site-packages" / "planted.pth"
    target.parent.mkdir()
    plant_remote_headers(folder, target)
    args = ["count", str(folder)] if command == "count" else ["add", "evil", str(folder)]
    done = hmp(*args, cwd=repo_copy, ok=False)
    lines = done.stderr.strip().splitlines()
    assert (
        done.returncode == 1 and len(lines) == 1 and "remote_headers.json: this file is the pipeline's own" in lines[0]
    )
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert not (repo_copy / "conf/model/evil.yaml").exists()


def test_hmp_add_refuses_a_path_hydra_would_interpolate(repo_copy, tmp_path):
    folder = tmp_path / "${oc.env:HOME}"
    folder.mkdir()
    shutil.copy(tiny_checkpoint(tmp_path / "src") / "config.json", folder / "config.json")
    before = (repo_copy / "params.yaml").read_bytes()
    done = hmp("add", "interp", str(folder), cwd=repo_copy, ok=False)
    assert done.returncode == 1 and "Hydra would read '${' or '\\' in it as an interpolation" in done.stderr
    assert not (repo_copy / "conf/model/interp.yaml").exists() and (repo_copy / "params.yaml").read_bytes() == before


def test_an_output_that_cannot_be_written_is_an_error_and_a_closed_pipe_is_quiet(tmp_path):
    config = PUBLISHED / "openai-community--gpt2.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open("/dev/full", "w") as full:
        done = subprocess.run([HMP, "count", str(config)], stdout=full, stderr=subprocess.PIPE, text=True, env=env)
    assert done.returncode == 1 and done.stderr.strip().startswith("error: cannot write the answer to stdout")
    # `true` exits at once, reading nothing: the pipe is closed long before hmp has its answer to write
    command = f"set -o pipefail; '{HMP}' count '{config}' --per-layer | true"
    piped = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)
    assert (
        piped.returncode == 141
        and piped.stderr == ""
        and "Traceback" not in piped.stderr
        and "BrokenPipe" not in piped.stderr
    ), piped.stderr


# Root reads every folder whatever its mode: hmp runs without the capabilities that allow it (setpriv).
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


@pytest.mark.skipif(bool(NO_DAC) and not shutil.which("setpriv"), reason="root without setpriv reads any folder")
def test_a_folder_that_cannot_be_read_is_one_line(tmp_path):
    folder = tiny_checkpoint(tmp_path / "locked")
    os.chmod(folder, 0)
    try:
        done = subprocess.run(
            [*NO_DAC, HMP, "count", str(folder)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        os.chmod(folder, 0o755)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {folder}") and "Permission denied" in lines[0]
