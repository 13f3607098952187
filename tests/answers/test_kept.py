"""A process that answers many questions (hmp serve) builds each model once: the counted model is kept by its entry
and its files' content (pipeline.answers.source.counted), its fake-tensor runner and the sizes it measured by the
model (pipeline.cost.prefill.runner). A kept model answers exactly as a fresh one, and every published config of
the corpus gets a plan and a FLOPs answer or its one line, never a crash (issue 31)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.answers import arguments
from pipeline.answers import source as sources
from pipeline.core.errors import PipelineError
from pipeline.cost import prefill
from pipeline.model import build
from tests.support.calls import counting

CORPUS = Path(__file__).parents[1] / "support" / "config_corpus"
FILES = sorted(p for p in CORPUS.glob("*.json") if p.name != "SOURCES.json")
QUESTIONS = [
    ("count", []),
    ("fit", [("context", "32")]),
    ("flops", [("context", "32")]),
    ("fit", [("context", "16"), ("batch", "3")]),
    ("fit", [("context", "32"), ("gpu-memory", "1GB")]),
]


def _answer(question: str, path: Path, query: list[tuple[str, str]]) -> str:
    try:
        return json.dumps(arguments.answer(question, arguments.from_query(question, str(path), query)))
    except PipelineError as exc:
        return f"refused: {exc}"


def test_every_published_config_is_planned_and_counted_in_flops_or_refused_in_one_line():
    crashed, refused = [], []
    for path in FILES:
        for question in ("fit", "flops"):
            try:
                arguments.answer(question, arguments.from_query(question, str(path), [("context", "32")]))
            except PipelineError as exc:
                assert "\n" not in str(exc)
                refused.append(f"{path.stem} {question}: {exc}")
            except Exception as exc:  # noqa: BLE001 - what the test is for: a crash on a real file
                crashed.append(f"{path.stem} {question}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not crashed, "\n".join(crashed)
    # what is refused is a class that takes no text (speech-to-speech), not a config that could not be read
    assert len(refused) <= 3, "\n".join(refused)


@pytest.mark.parametrize("path", FILES[::12], ids=lambda p: p.stem)
def test_a_kept_model_answers_exactly_as_a_fresh_one(path):
    fresh = []
    for question, query in QUESTIONS:
        sources._kept.clear()
        fresh.append(_answer(question, path, query))
    kept_backwards = [_answer(q, path, query) for q, query in reversed(QUESTIONS)][::-1]
    kept_again = [_answer(q, path, query) for q, query in QUESTIONS]
    assert kept_backwards == fresh and kept_again == fresh


def test_count_fit_and_flops_of_one_config_build_it_once_and_fake_it_once(monkeypatch, tmp_path):
    path = tmp_path / "config.json"
    config = json.loads((CORPUS / "meta-llama--Llama-3.1-8B.json").read_text()) | {"num_hidden_layers": 5}
    path.write_text(json.dumps(config))
    built = counting(monkeypatch, build, "build_meta_reading")
    runners = counting(monkeypatch, prefill.Runner, "__init__")
    first = [_answer(q, path, query) for q, query in QUESTIONS]
    assert len(built) == 1, f"built {len(built)} times"
    assert len(runners) == 2, "one runner for the plans (sdpa), one for FlopCounterMode"
    path.write_text(json.dumps(config | {"num_hidden_layers": 6}))  # other bytes: another model
    assert _answer("count", path, []) != first[0] and len(built) == 2


def test_a_tensor_parallel_degree_divides_every_layers_heads():
    """Gemma 4 has per-layer KV heads (transformers' heterogeneous config raises on the global value): sliding
    layers num_key_value_heads 8, full-attention layers num_global_key_value_heads 2, 16 query heads."""
    gemma4 = CORPUS / "google--gemma-4-26B-A4B.json"
    text = json.loads(gemma4.read_text())["text_config"]
    kv = {text["num_key_value_heads"], text["num_global_key_value_heads"]}
    for tp in (1, 2, 4, 8):
        query = [("context", "32"), ("tp", str(tp)), ("gpus", "8")]
        got = _answer("fit", gemma4, query)
        if all(k % tp == 0 for k in kv):
            assert json.loads(got)["tp"] == tp
        else:
            assert got.endswith(f"--tp {tp} does not divide its {min(kv)} key/value heads"), got
