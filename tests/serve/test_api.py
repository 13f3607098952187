"""hmp serve's JSON API on a real uvicorn on 127.0.0.1: its answers are the CLI's --json byte for byte, bad input is
one line with a 4xx status, it reads only what it may, the CLI uses it and falls back without it, Ctrl-C stops it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.serve.server import Server, free_port

SUPPORT = ROOT / "tests" / "support"
GPT2 = SUPPORT / "published_configs" / "openai-community--gpt2.json"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allowed")
    (folder / "gpt2").mkdir()
    (folder / "gpt2" / "config.json").write_bytes(GPT2.read_bytes())
    return folder


@pytest.fixture(scope="module")
def server(allowed):
    s = Server(allow_dir=allowed)
    yield s
    s.stop()


def cli(*argv: str) -> str:
    """What `hmp ...` prints, run in this process (the CLI's own code, without a server)."""
    from pipeline.cli.hmp import main

    out = io.StringIO()
    old = os.environ.pop("HMP_SERVER", None)
    try:
        with contextlib.redirect_stdout(out):
            main(list(argv))
    finally:
        if old is not None:
            os.environ["HMP_SERVER"] = old
    return out.getvalue()


def sweep() -> list[str]:
    """The models of the default sweep (params.yaml)."""
    return list(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])


@pytest.mark.parametrize("question, options", [("count", {}), ("fit", {"context": 512, "engine": "vllm"}),
                                               ("flops", {"context": 256})])  # fmt: skip
def test_answers_equal_the_cli_json_byte_for_byte_for_the_default_sweep(server, question, options, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in sweep():
        status, media, body = server.get(f"/api/{question}", source=name, **options)
        assert status == 200 and media.startswith("application/json"), body
        argv = [question, name, "--json", *(f"--{k}={v}" for k, v in options.items())]
        assert body + "\n" == cli(*argv), (question, name)


def test_a_posted_config_and_the_text_form(server):
    status, r = server.json("/api/count", GPT2.read_bytes())
    assert status == 200 and r["summary"]["total"] == 124_439_808  # the course's GPT-2 small
    assert r["weights_and_biases"]["bias"] == 102_144
    status, _, text = server.request("/api/flops", GPT2.read_bytes(), context=1024, format="text")
    assert status == 200 and "284,812,800" in text  # 2·(12·12·768² + 768·50,257) + 12·4·1,024·768
    status, r = server.json("/api/fit", GPT2.read_bytes(), context=1024, batch=4, **{"gpu-memory": "24GB"})
    assert status == 200 and r["batch"] == 4 and r["gpu_memory_bytes"] == 24 * 10**9


@pytest.mark.parametrize(
    "name_or_path, shown",
    [("openai-community/gpt2", "gpt2"), ("/content/drive/Modelos/gpt2-spanish/", "gpt2-spanish"), (".", "gpt2"),
     ("tmp/", "tmp"), ("output a/b c/", "b-c"), ("", "gpt2"), ("..", "gpt2"), ("C:\\models\\mine", "mine")],
)  # fmt: skip
def test_a_posted_config_is_named_by_its_name_or_path_whatever_its_form(server, name_or_path, shown):
    """Published files carry _name_or_path as their trainer left it: a Hub id, a folder with a trailing slash, '.'
    (the corpus has each); the model is named after its last part, else its model_type."""
    config = json.loads(GPT2.read_text()) | {"_name_or_path": name_or_path}
    status, r = server.json("/api/count", json.dumps(config).encode())
    assert status == 200 and r["summary"]["total"] == 124_439_808, r
    assert r["model"] == shown


@pytest.mark.parametrize(
    "body, query, status, words",
    [
        (b"{not json", {}, 400, "not a JSON document"),
        (b"[1, 2]", {}, 400, "not a config.json object"),
        (b"\xff\xfe", {}, 400, "not a JSON document"),
        (b"[" * 5000 + b"]" * 5000, {}, 400, "not a JSON document"),
        (b'{"model_type": "gpt2", "n_embd": -3}', {}, 400, ""),
        (b'{"model_type": "no-such-type"}', {}, 400, "no-such-type"),
        (b'{"model_type": "gpt2"}', {"context": 0}, 400, "--context 0"),
        (b'{"model_type": "gpt2"}', {"contxt": 5}, 400, "contxt: not an option of hmp fit"),
        (b'{"model_type": "gpt2"}', {"format": "xml"}, 400, "format='xml'"),
        (b"{" + b'"a":1,' * 300_000 + b'"b":2}', {}, 413, "more than the 1,048,576 bytes a config.json may be"),
    ],
)
def test_bad_input_is_one_line_with_a_4xx_status(server, body, query, status, words):
    got, r = server.json("/api/fit", body, **query)
    assert got == status and set(r) == {"error"} and "\n" not in r["error"] and words in r["error"], r


def test_code_that_comes_with_a_config_never_runs(server):
    """auto_map names repository code (trust_remote_code): the server builds transformers' own class instead."""
    body = json.dumps({**json.loads(GPT2.read_text()), "auto_map": {"AutoModelForCausalLM": "evil.Model"}})
    status, r = server.json("/api/count", body.encode())
    assert status == 200 and r["summary"]["total"] == 124_439_808 and r["summary"]["model_class"] == "GPT2LMHeadModel"


def test_it_reads_only_what_it_may(server, allowed, tmp_path):
    assert server.json("/api/count", source=str(allowed / "gpt2"))[1]["summary"]["total"] == 124_439_808
    outside = tmp_path / "gpt2"
    outside.mkdir()
    (outside / "config.json").write_bytes(GPT2.read_bytes())
    for source, status in [(str(outside), 403), ("tests/support", 403), (str(allowed / ".." / ".." ), 403),
                           ("/etc/passwd", 403), ("no-owner/not-cached-anywhere", 404)]:  # fmt: skip
        got, r = server.json("/api/count", source=source)
        assert got == status and "\n" not in r["error"], (source, r)
    link = allowed / "escape"
    link.mkdir()
    (link / "config.json").symlink_to(outside / "config.json")
    got, r = server.json("/api/count", source=str(link))
    assert got == 403 and "links out of the allowed folders" in r["error"]


def test_openapi_describes_the_questions_and_their_options(server):
    status, spec = server.json("/openapi.json")
    assert status == 200 and {"/api/count", "/api/fit", "/api/flops"} <= set(spec["paths"])
    names = {p["name"] for p in spec["paths"]["/api/fit"]["get"]["parameters"]}
    assert {"source", "context", "batch", "gpu-memory", "engine", "lora-rank", "format"} <= names


def test_the_cli_uses_a_running_server_without_importing_torch(server, tmp_path):
    code = ("import sys; from pipeline.cli.hmp import main; main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'")  # fmt: skip
    env = {**os.environ, "HMP_SERVER": server.url}
    run = subprocess.run([sys.executable, "-c", code, "count", str(GPT2)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr

    def but_where(text: str) -> list[str]:  # a posted config is read from the server's copy: its path differs
        return [line for line in text.splitlines() if not line.strip().startswith("from ")]

    assert "124,439,808 parameters" in run.stdout and but_where(run.stdout) == but_where(cli("count", str(GPT2)))
    bad = tmp_path / "broken.json"
    bad.write_text('{"model_type": "gpt2", "n_layer": 0.5}')
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.hmp", "count", str(bad)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1 and "n_layer=0.5" in lines[0], run.stderr
    assert str(bad) in lines[0] and "hmp-serve" not in lines[0]  # the user's file, not the server's copy


def test_without_a_server_the_cli_counts_in_process(tmp_path):
    env = {**os.environ, "HMP_SERVER": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.hmp", "count", str(GPT2), "--json"], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0 and json.loads(run.stdout)["summary"]["total"] == 124_439_808


def test_ctrl_c_stops_it_cleanly():
    s = Server()
    assert s.json("/api/count", GPT2.read_bytes())[0] == 200
    status, stderr = s.stop()
    assert status == 0 and "Traceback" not in stderr, stderr
