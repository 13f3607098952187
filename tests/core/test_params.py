"""conf/ composes for every sweep and model, params.yaml equals its composition, and bad input is refused."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline.core import compose, params, schema, sizes
from pipeline.core.errors import PipelineError
from tests.conftest import ROOT, TINY, compose_model, tiny_params

CONF = ROOT / "conf"
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
EXPECTED_SWEEPS = {
    "gpt2-family": ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"],
    "gpt2-small": ["gpt2"],
    "gpt2-tied-vs-untied": ["gpt2", "gpt2-untied"],
    "tied-vs-untied": ["gpt2", "gpt2-untied", "opt-125m", "pythia-160m", "tinyllama-1_1b"],
    "biased-vs-bias-free": ["gpt2", "opt-125m", "bert-base-uncased", "tinyllama-1_1b", "llama-2-7b"],
    "dense-vs-moe": [
        "llama-2-7b",
        "tinyllama-1_1b",
        "mixtral-8x7b",
        "qwen1_5-moe-a2_7b",
        "olmoe-1b-7b",
        "deepseek-v3",
        "gpt-oss-20b",
    ],
}


def test_committed_params_yaml_equals_the_composition_of_conf():
    """dvc repro never recomposes; a drift here means `make params` was forgotten."""
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose.compose(conf_dir=CONF), "params.yaml differs from conf/: run `make params`"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_into_valid_models(sweep):
    data = compose.compose([f"sweep={sweep}"], conf_dir=CONF)
    cfg = params.from_dict(data)
    assert cfg.sweep == sweep  # recorded under its own file name: dvc exp show tells experiments apart by it
    assert compose.what_if(cfg, CONF) == {}  # composed without overrides: no model is a what-if variant
    if sweep in EXPECTED_SWEEPS:
        assert list(cfg.models) == EXPECTED_SWEEPS[sweep]
    for spec in cfg.models.values():
        assert spec.source == "config"  # the shipped sweeps need no network
        assert spec.architecture["model_type"]


def test_shipped_sweeps_exist():
    assert set(EXPECTED_SWEEPS) <= set(SWEEPS)
    assert compose.compose(conf_dir=CONF)["models"].keys() == set(EXPECTED_SWEEPS["gpt2-family"])


@pytest.mark.parametrize("model", MODELS)
def test_every_model_file_composes_and_validates(model):
    entry = compose_model(model)
    spec = params.model_spec(model, entry)
    assert set(schema.MODEL_FIELDS) <= set(entry)  # the public keys are all spelled out
    if spec.hub_id:
        assert re.fullmatch(r"[0-9a-f]{40}", spec.revision), "a hub model pins a full commit sha"


def test_gpt2_models_carry_the_paper_sizes():
    data = compose.compose(conf_dir=CONF)["models"]
    # GPT-2 paper, Table 2 (Radford et al. 2019).
    assert {k: v["stated_size"] for k, v in data.items()} == {
        "gpt2": "117M",
        "gpt2-medium": "345M",
        "gpt2-large": "762M",
        "gpt2-xl": "1542M",
    }


def test_architecture_override_reaches_the_model():
    data = compose.compose(["models.gpt2.architecture.n_layer=6"], conf_dir=CONF)
    assert data["models"]["gpt2"]["architecture"]["n_layer"] == 6


def test_untied_model_changes_only_the_tie():
    data = compose.compose(["sweep=gpt2-tied-vs-untied"], conf_dir=CONF)["models"]
    tied, untied = data["gpt2"]["architecture"], data["gpt2-untied"]["architecture"]
    assert {k for k in tied if tied[k] != untied[k]} == {"tie_word_embeddings"}
    assert untied["tie_word_embeddings"] is False


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_every_config_key_is_commented(path):
    lines = path.read_text().splitlines()
    key_lines = [ln for ln in lines if re.match(r"^\s*[A-Za-z_][\w.-]*\s*:", ln)]
    list_lines = [ln for ln in lines if re.match(r"^\s*- ", ln)]
    undocumented = [
        ln for ln in key_lines + list_lines if "#" not in ln and ln.strip() not in ("defaults:", "architecture:")
    ]
    # a block key (defaults:, architecture:) may be explained by the comment above it
    assert not undocumented, f"{path.name}: lines without a comment: {undocumented}"


def test_unknown_model_in_a_sweep_is_named(tmp_path):
    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(CONF, conf)
    (conf / "sweep" / "bad.yaml").write_text("# @package _global_\ndefaults:\n  - /model@models.gpt3: gpt3\n")
    with pytest.raises(PipelineError, match="model/gpt3") as err:
        compose.compose(["sweep=bad"], conf_dir=conf)
    assert "\n" not in str(err.value)


def _model(**over):
    return {"source": "config", "architecture": dict(TINY), **over}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            _model(architecture={**TINY, "n_embd": 30}),
            r"'m': architecture\.n_embd=30 is not divisible by architecture\.n_head=4",
        ),
        (_model(architecture={**TINY, "n_layer": 0}), r"'m': architecture\.n_layer=0 must be a whole number from 1 to"),
        (_model(architecture={**TINY, "vocab_size": -5}), r"'m': architecture\.vocab_size=-5"),
        (_model(architecture={**TINY, "n_head": 2.5}), r"'m': architecture\.n_head=2\.5"),
        (
            _model(architecture={k: v for k, v in TINY.items() if k != "model_type"}),
            r"'m': architecture\.model_type is missing",
        ),
        (_model(architecture=None), r"'m': source: config needs an architecture block or a config_path"),
        (_model(architecture=[1]), r"'m': architecture must be a mapping"),
        (
            _model(auto_class="seq2seq"),
            r"'m': auto_class='seq2seq' must be one of auto, causal_lm, image_text_to_text, seq2seq_lm, "
            r"speech_seq2seq, masked_lm, base",
        ),
        (_model(config_path="/nonexistent/config.json"), r"'m': config_path: /nonexistent/config.json is missing"),
        (_model(source="ftp"), r"'m': source='ftp' must be one of config, path, hub"),
        (_model(source="path"), r"'m': source: path needs the field path"),
        (_model(archtecture={}), r"'m': unknown field 'archtecture'"),
        (_model(stated_size="lots"), r"'m': stated_size='lots'"),
    ],
)
def test_bad_models_get_one_line_naming_model_and_field(entry, message):
    with pytest.raises(PipelineError, match=message) as err:
        params.model_spec("m", entry)
    assert "\n" not in str(err.value)


def test_model_names_with_dots_are_refused():
    with pytest.raises(PipelineError, match=r"'gpt2\.5'"):
        params.from_dict(tiny_params({"gpt2.5": _model()}))


@pytest.mark.parametrize(
    ("text", "value"), [("117M", 117_000_000), ("1542M", 1_542_000_000), ("1.5B", 1_500_000_000), ("20K", 20_000)]
)
def test_stated_sizes_parse_exactly(text, value):
    assert sizes.parse_size(text, "m") == value


def test_an_override_that_changes_a_model_is_told_apart_from_its_sweep():
    overrides = ["models.gpt2.architecture.n_layer=6", "models.gpt2-xl.revision=abc", "models.gpt2-large.source=hub"]
    data = compose.compose(["sweep=gpt2-family", *overrides], CONF)
    marked = compose.what_if(params.from_dict(data), CONF)
    # gpt2 is another model now; gpt2-xl at another revision and gpt2-large from the Hub are the same models
    assert marked == {"gpt2": "architecture.n_layer=6 (conf/: 12)"}
    data["sweep"] = "no-such-sweep"  # a recorded sweep that no longer composes marks nothing (and raises nothing)
    assert compose.what_if(params.from_dict(data), CONF) == {}


def test_a_what_if_note_names_fields_never_a_python_repr():
    """The README's `-S '~models.gpt2.architecture'` on a folder model: the note says what changed, in words."""
    data = compose.compose(["sweep=gpt2-small"], CONF)
    block = data["models"]["gpt2"]["architecture"]
    data["models"]["gpt2"].update(architecture=None, source="path", path="/models/gpt2")
    note = compose.what_if(params.from_dict(data), CONF)["gpt2"]
    assert note == f"architecture=none (conf/: a block of {len(block)} fields)"
