"""A load test of hmp serve: hundreds of mixed valid and hostile requests, eight at a time, every answer checked
against the library's own answer (computed here, in this process), every refusal one line with a 4xx status, the
server's memory bounded and still answering afterwards."""

from __future__ import annotations

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT
from tests.serve.server import Server

pytestmark = pytest.mark.slow
CORPUS = ROOT / "tests" / "support" / "config_corpus"
CONFIGS = ["openai-community--gpt2", "Qwen--Qwen3-0.6B", "meta-llama--Llama-3.2-1B-Instruct", "google--flan-t5-base",
           "state-spaces--mamba-2.8b-hf", "deepseek-ai--DeepSeek-V2-Lite"]  # fmt: skip
QUESTIONS = [("count", ()), *(("fit", (("context", c), ("engine", e))) for c in (256, 1024) for e in ("transformers",
             "vllm")), *(("flops", (("context", c),)) for c in (128, 512))]  # fmt: skip
HOSTILE = [
    (b"{not json", ()),
    (b"[]", ()),
    (b"\x00\xff", ()),
    (b"[" * 3000 + b"]" * 3000, ()),
    (b'{"model_type": "gpt2", "n_embd": 1000000000, "n_layer": 1000000}', ()),
    (b'{"model_type": "gpt2", "n_head": -4}', ()),
    (b'{"model_type": "llama", "hidden_size": "wide"}', ()),
    (b'{"model_type": "not-a-model"}', ()),
    (b'{"model_type": "gpt2"}', (("context", "-5"),)),
    (b'{"model_type": "gpt2"}', (("batch", "many"),)),
    (b'{"model_type": "gpt2"}', (("engine", "rocket"),)),
    (b'{"model_type": "gpt2"}', (("no-such-option", "1"),)),
    (b"x" * (1 << 21), ()),
]
NAMED = ["/etc/passwd", "../../etc", "tests/support/published_configs", "nobody/not-cached", "a\x00b"]


def expected(config: str, question: str, options: tuple) -> dict:
    """The library's answer for the same config and options."""
    from pipeline.answers import arguments

    args = arguments.from_query(question, str(CORPUS / f"{config}.json"), list(options))
    try:
        return comparable(arguments.answer(question, args))
    except Exception as exc:  # noqa: BLE001 - a refusal is an answer too
        return {"refused": str(exc)}


def comparable(answer: dict) -> dict:
    """The answer but where it came from and the name it is shown under (a posted config's is its model_type)."""
    out = {k: v for k, v in answer.items() if k not in ("source", "model")}
    return {k: {n: x for n, x in v.items() if n != "model"} if isinstance(v, dict) else v for k, v in out.items()}


def test_hundreds_of_mixed_requests_eight_at_a_time():
    server = Server(timeout=240)
    try:
        valid = [(c, q, o) for c in CONFIGS for q, o in QUESTIONS]
        oracle = {v: expected(*v) for v in valid}
        assert not [v for v, answer in oracle.items() if "refused" in answer], oracle  # every one of them answers
        rng = random.Random(30)
        jobs = [("valid", v) for v in valid * 3] + [("hostile", h) for h in HOSTILE * 11]
        jobs += [("named", n) for n in NAMED * 10]
        rng.shuffle(jobs)
        assert len(jobs) >= 300
        before = server.rss_mib()

        def one(job):
            kind, what = job
            if kind == "valid":
                config, question, options = what
                status, _, text = server.request(f"/api/{question}", (CORPUS / f"{config}.json").read_bytes(),
                                                 **dict(options))  # fmt: skip
                return kind, what, status, text
            if kind == "hostile":
                body, options = what
                status, _, text = server.request("/api/fit", body, **dict(options))
                return kind, what, status, text
            status, _, text = server.request("/api/count", source=what)
            return kind, what, status, text

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, jobs))
        for kind, what, status, text in results:
            answer = json.loads(text)
            if kind == "valid":
                want = oracle[what]
                if "refused" in want:
                    assert status in (400, 404) and set(answer) == {"error"}, (what, answer)
                else:
                    assert status == 200 and comparable(answer) == want, what
            else:
                assert 400 <= status < 500 and set(answer) == {"error"}, (kind, what[:1], status, answer)
                assert answer["error"] and "\n" not in answer["error"]
        grown = server.rss_mib() - before
        assert grown < 600, f"the server grew by {grown:.0f} MiB over {len(jobs)} requests"
        status, r = server.json("/api/count", (CORPUS / "openai-community--gpt2.json").read_bytes())
        assert status == 200 and r["summary"]["total"] == 124_439_808  # still answering, and right
        assert {s for _, _, s, _ in results} <= {200, 400, 403, 404, 413}
        assert sum(1 for _ in itertools.filterfalse(lambda r: r[0] != "valid", results)) == len(valid) * 3
    finally:
        status, stderr = server.stop()
    assert status == 0 and "Traceback" not in stderr, stderr[-2000:]
