"""Real published config.json files, as their repositories on the Hugging Face Hub hold them, count as they are.

Each file in tests/support/published_configs/ is `<owner>--<name>.json`, the config.json of
https://huggingface.co/<owner>/<name> (main), written out with every field, legacy and bookkeeping keys
included (GPT-2's n_ctx, BART's classif_dropout, Falcon's auto_map, transformers_version, torch_dtype,
_name_or_path). Each is counted twice, through the pipeline's own path (download stage's materialise, count
stage's count_folder): as a model file's `architecture` block and as its `config_path`.

Oracles: the class the file names (`architectures[0]`) built by transformers itself on the meta device
(sum(p.numel()) of its unique parameters), and, where one exists, a closed form of pipeline/model/formulas.py
or a published total, each cited below.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.model import formulas
from pipeline.model.count import count_folder

CONFIGS = Path(__file__).parents[1] / "support" / "published_configs"
FILES = sorted(CONFIGS.glob("*.json"))

# Published totals, each with its source.
PUBLISHED = {
    # the course ("CodeChallenge: How Many Parameters"): GPT-2 small holds 124,439,808
    "openai-community--gpt2": 124_439_808,
    # Biderman et al. 2023, Pythia, Table 1: 70,426,624 parameters for Pythia-70M
    "EleutherAI--pythia-70m": 70_426_624,
}


def _closed_form(name: str, cfg: dict) -> int | None:
    """A closed form of pipeline/model/formulas.py, for the families it covers."""
    if cfg["model_type"] == "gpt2":
        return formulas.gpt2_params_from_config(cfg)
    if cfg["architectures"] == ["LlamaForCausalLM"] or cfg["model_type"] == "mistral":
        return formulas.llama_params_from_config(cfg)
    if cfg["model_type"] == "gpt_neox":
        d = cfg["hidden_size"]
        return formulas.gpt_neox_params(cfg["vocab_size"], d, cfg["num_hidden_layers"], cfg["intermediate_size"])
    if cfg["model_type"] == "mixtral":
        return formulas.mixtral_params(
            cfg["vocab_size"],
            cfg["hidden_size"],
            cfg["num_hidden_layers"],
            cfg["num_attention_heads"],
            cfg["num_key_value_heads"],
            cfg["intermediate_size"],
            cfg["num_local_experts"],
        )
    return None


def _transformers_total(cfg: dict) -> int:
    """The oracle: the class the file names, built by transformers from the file's fields, unique parameters."""
    import torch
    import transformers

    config = transformers.CONFIG_MAPPING[cfg["model_type"]](**{k: v for k, v in cfg.items() if k != "model_type"})
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = getattr(transformers, cfg["architectures"][0])._from_config(config)
    return sum(p.numel() for p in model.parameters())


def _count(entry: dict, tmp_path: Path) -> dict:
    spec = params.model_spec("m", entry)
    out = tmp_path / "m"
    out.mkdir(parents=True)
    record = sources.materialise(spec, out, hashes=False)
    (out / "provenance.json").write_text(json.dumps(record))
    return count_folder(spec, out).row


def test_the_corpus_spans_many_families():
    families = {json.loads(f.read_text())["model_type"] for f in FILES}
    assert len(FILES) >= 25 and len(families) >= 20, sorted(families)


@pytest.mark.parametrize("how", ["architecture", "config_path"])
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_published_config_counts_as_it_is(path, how, tmp_path):
    cfg = json.loads(path.read_text())
    entry = {"source": "config", "architecture": cfg} if how == "architecture" else {"config_path": str(path)}
    row = _count(entry, tmp_path)
    assert row["model_class"] == cfg["architectures"][0] and row["class_from"] == "architectures"
    assert row["total"] == _transformers_total(cfg)
    closed = _closed_form(path.stem, cfg)
    assert closed is None or row["total"] == closed
    assert path.stem not in PUBLISHED or row["total"] == PUBLISHED[path.stem]


def test_undeclared_fields_are_kept_and_listed_once_unless_the_model_reads_them(tmp_path):
    # GPT-2's published n_ctx is declared by no field of GPT2Config in transformers 5: kept, listed, not refused
    gpt2 = json.loads((CONFIGS / "openai-community--gpt2.json").read_text())
    row = _count({"source": "config", "architecture": gpt2}, tmp_path / "a")
    assert "n_ctx" in row["ignored_fields"].split(";")
    # GLM-4.5's head_dim is not declared by Glm4MoeConfig either, but its attention reads it: not listed
    glm = json.loads((CONFIGS / "zai-org--GLM-4.5.json").read_text())
    row = _count({"config_path": str(CONFIGS / "zai-org--GLM-4.5.json")}, tmp_path / "b")
    assert "head_dim" not in row["ignored_fields"].split(";")
    # ...and it is what the model uses: 96 heads of 128, not 5120 / 96
    assert row["total"] == _transformers_total(glm)


def test_a_near_name_beside_the_field_it_resembles_is_a_second_field_not_a_typo(tmp_path):
    """n_embdd next to a set n_embd: kept and listed (the issue's rule); next to none, it is refused."""
    gpt2 = json.loads((CONFIGS / "openai-community--gpt2.json").read_text())
    row = _count({"source": "config", "architecture": {**gpt2, "n_embdd": 768}}, tmp_path / "a")
    assert row["total"] == 124_439_808 and "n_embdd" in row["ignored_fields"].split(";")
    without = {k: v for k, v in gpt2.items() if k != "n_embd"}
    with pytest.raises(
        PipelineError, match=r"architecture\.n_embdd is not a field of GPT2Config \(did you mean n_embd"
    ):
        _count({"source": "config", "architecture": {**without, "n_embdd": 768}}, tmp_path / "b")


def test_a_config_files_unknown_keys_are_listed_never_refused(tmp_path):
    """A file someone downloaded is not a typo (issue 27): its keys are listed, and only keys typed in an
    architecture block are checked for typos."""
    gpt2 = json.loads((CONFIGS / "openai-community--gpt2.json").read_text())
    odd = tmp_path / "config.json"
    odd.write_text(json.dumps({**{k: v for k, v in gpt2.items() if k != "n_layer"}, "n_layre": 6}))
    row = _count({"config_path": str(odd)}, tmp_path / "m")
    # n_layre is not read: GPT-2 keeps its default 12 layers, 124,439,808 (the course's figure)
    assert row["total"] == 124_439_808 and "n_layre" in row["ignored_fields"].split(";")
    # the same key typed in the architecture block over that file is a typo
    with pytest.raises(
        PipelineError, match=r"architecture\.n_layre is not a field of GPT2Config \(did you mean n_layer"
    ):
        _count({"config_path": str(odd), "architecture": {"n_layre": 6}}, tmp_path / "t")


@pytest.mark.parametrize(
    ("stem", "auto_class", "expected"),
    [
        # no `architectures`: BERT's causal-LM class is its encoder rewired as a decoder, so auto takes masked LM
        ("google-bert--bert-base-uncased", "auto", "BertForMaskedLM"),
        ("google-bert--bert-base-uncased", "base", "BertModel"),
        ("openai-community--gpt2", "auto", "GPT2LMHeadModel"),
    ],
)
def test_the_class_counted_without_architectures(stem, auto_class, expected, tmp_path):
    cfg = {k: v for k, v in json.loads((CONFIGS / f"{stem}.json").read_text()).items() if k != "architectures"}
    row = _count({"source": "config", "architecture": cfg, "auto_class": auto_class}, tmp_path)
    assert row["model_class"] == expected


def test_an_encoder_decoder_is_never_counted_as_its_decoder(tmp_path):
    """BartForCausalLM holds 254,084,096 of bart-large's 406,291,456 (NOTES.md): it must never stand in."""
    bart = {k: v for k, v in json.loads((CONFIGS / "facebook--bart-large.json").read_text()).items()}
    with pytest.raises(PipelineError, match="BartConfig is an encoder-decoder; auto_class: causal_lm would count"):
        _count({"source": "config", "architecture": bart, "auto_class": "causal_lm"}, tmp_path / "a")
    del bart["architectures"]
    row = _count({"source": "config", "architecture": bart}, tmp_path / "b")  # auto: seq2seq, the whole model
    assert (row["model_class"], row["class_from"]) == ("BartForConditionalGeneration", "fallback:seq2seq_lm")
    # 406,291,456: bart-large as people download it (the issue's figure, transformers' own sum(p.numel()))
    assert row["total"] == _transformers_total({**bart, "architectures": ["BartForConditionalGeneration"]})
    assert row["total"] == 406_291_456 != 254_084_096


def test_a_class_transformers_lacks_is_built_as_its_auto_classes_build_the_config(tmp_path):
    """A file naming a class of its repository's own over a model_type transformers has (Kimi-K2.5): transformers'
    auto classes build their own class for the config, and so does the count, saying so (issue 27)."""
    gpt2 = json.loads((CONFIGS / "openai-community--gpt2.json").read_text())
    downloaded = tmp_path / "config.json"
    downloaded.write_text(json.dumps({**gpt2, "architectures": ["GPT2Turbo"]}))
    row = _count({"config_path": str(downloaded)}, tmp_path / "a")
    assert (row["model_class"], row["class_from"]) == ("GPT2LMHeadModel", "fallback:causal_lm:named:GPT2Turbo")
    assert row["total"] == 124_439_808  # the course's GPT-2 small
    # the same name typed in an architecture block is a person's typo: refused, with the nearest class
    with pytest.raises(
        PipelineError, match=r"architecture\.architectures names the class GPT2Turbo, which transformers"
    ):
        _count({"source": "config", "architecture": {**gpt2, "architectures": ["GPT2Turbo"]}}, tmp_path / "t")
    # a class transformers has, for another config, over a file transformers read as it is: a contradiction
    with pytest.raises(PipelineError, match="names the class LlamaForCausalLM, which takes a LlamaConfig"):
        _count({"source": "config", "architecture": {**gpt2, "architectures": ["LlamaForCausalLM"]}}, tmp_path / "b")


@pytest.mark.parametrize(
    ("arch", "head"),
    [
        # Mistral-Small-3.1 and InternVL3 publish text_config.tie_word_embeddings false and store lm_head apart;
        # transformers 5.24's from-config build ties the head by the top-level config
        (
            {
                "model_type": "mistral3",
                "architectures": ["Mistral3ForConditionalGeneration"],
                "text_config": {"model_type": "mistral", "num_hidden_layers": 1, "tie_word_embeddings": False},
                "vision_config": {"model_type": "pixtral", "num_hidden_layers": 1},
            },
            "lm_head.weight",
        ),
        # mT5 publishes tie_word_embeddings false; MT5Config ties whatever it is given
        (
            {
                "model_type": "mt5",
                "architectures": ["MT5ForConditionalGeneration"],
                "num_layers": 1,
                "tie_word_embeddings": False,
            },
            "lm_head.weight",
        ),
    ],
    ids=["mistral3", "mt5"],
)
def test_the_tie_follows_the_config_that_owns_the_head(arch, head, tmp_path):
    row = _count({"source": "config", "architecture": arch}, tmp_path)
    assert not row["structural_tied"] and not row["declared_tied"]
    assert "is false but transformers' build ties the head: counted untied" in row["tie_note"]
    # the count is the tied build's plus the head's own vocabulary × width matrix
    assert row["total"] == _transformers_total(arch) + row["head_params"]
    assert row["output_embedding"] == head
