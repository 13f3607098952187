"""Hub analysis without full downloads: headers and embedding byte ranges over HTTP Range, from a local
server on 127.0.0.1 that counts the bytes it serves."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from pipeline.formats import remote, safetensors_file
from tests.conftest import TINY, run_module, tiny_params
from tests.support.checkpoints import (
    GPT2_SMALL,
    gpt2_config,
    gpt2_hub_entries,
    tiny_checkpoint,
    write_sparse_safetensors,
)
from tests.support.http_range_server import RangeServer

SHA = "fedcba9876543210fedcba9876543210fedcba98"


def _params(workdir, models):
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(models), sort_keys=False))


def _env(server) -> dict:
    return {"HF_ENDPOINT": server.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _range_model(**extra) -> dict:
    return {"source": "hub", "hub_id": "org/model", "revision": SHA, "fetch": "range", **extra}


def _pipeline(workdir, server, names):
    for name in names:
        proc = run_module("pipeline.stages.download", name, cwd=workdir, env=_env(server))
        assert proc.returncode == 0, proc.stderr
    for stage in ("count", "ties", "bias", "report"):
        proc = run_module(f"pipeline.stages.{stage}", cwd=workdir, env=_env(server))
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("tied", [True, False])
def test_range_reads_count_and_tie_from_a_fraction_of_the_file(workdir, tied):
    upstream = tiny_checkpoint(workdir / "upstream", tied=tied, seed=7)
    _params(workdir, {"m": _range_model()})
    with RangeServer(upstream, "org/model", SHA) as server:
        _pipeline(workdir, server, ["m"])
        served = server.bytes_served
    size = (upstream / "model.safetensors").stat().st_size
    prov = json.loads((workdir / "data/models/m/provenance.json").read_text())
    config_bytes = (upstream / "config.json").stat().st_size
    # what the download stage says it fetched is what the server sent, and far less than the file
    assert prov["bytes_fetched"] == served
    assert prov["checkpoint_bytes"] == size and prov["revision"] == SHA and prov["fetch"] == "range"
    emb = TINY["vocab_size"] * TINY["n_embd"] * 4
    header = prov["bytes_fetched_by_file"]["model.safetensors"] - emb * (1 if tied else 2)
    assert 8 < header < 4096  # 8 bytes of length, then exactly the header
    assert served == config_bytes + header + emb * (1 if tied else 2)
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert summary.loc["m", "bytes_fetched"] == served
    assert summary.loc["m", "checkpoint_tensors"] > summary.loc["m", "total"]  # the masks are buffers
    t = pd.read_csv(workdir / "results/ties.csv").set_index("model")
    if tied:
        assert t.loc["m", "pearson_r"] == 1.0 and "tie_weights()" in t.loc["m", "method"]
    else:
        assert abs(t.loc["m", "pearson_r"]) < 0.05 and "range reads" in t.loc["m", "method"]
    assert pd.read_csv(workdir / "results/distributions.csv").empty  # no values were fetched beyond the embeddings
    assert "fetched" in (workdir / "reports/report.md").read_text()


def test_counting_gpt2_small_from_headers_fetches_under_a_megabyte(workdir, hub_online):
    upstream = workdir / "upstream"
    write_sparse_safetensors(
        upstream / "model.safetensors", gpt2_hub_entries(vocab=50257, positions=1024, d=768, layers=12)
    )
    (upstream / "config.json").write_text(json.dumps(gpt2_config(**GPT2_SMALL)))
    with RangeServer(upstream, "org/model", SHA) as server:
        rf = remote.RangeFile(f"{server.endpoint}/org/model/resolve/{SHA}/model.safetensors")
        data_start, header = remote.read_header(rf)
        assert rf.bytes_fetched == data_start < 1_000_000
        assert server.bytes_served == data_start
    entries = safetensors_file.entries_from_header(header, data_start, "model.safetensors", rf.size)
    assert sum(e.numel for e in entries) == 137_022_720  # GPT-2 small plus its 12 causal masks


def test_sharded_checkpoint_by_range_reads(workdir):
    upstream = tiny_checkpoint(workdir / "upstream", tied=False, shards=3, seed=8)
    _params(workdir, {"m": _range_model()})
    with RangeServer(upstream, "org/model", SHA) as server:
        _pipeline(workdir, server, ["m"])
    prov = json.loads((workdir / "data/models/m/provenance.json").read_text())
    assert set(prov["bytes_fetched_by_file"]) == {
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    }
    local = workdir / "local"
    shutil.copytree(upstream, local)
    _params(workdir, {"m": _range_model(), "local": {"source": "path", "path": str(local)}})
    with RangeServer(upstream, "org/model", SHA) as server:
        _pipeline(workdir, server, ["local"])
    summary = pd.read_csv(workdir / "results/summary.csv").set_index("model")
    assert summary.loc["m", "total"] == summary.loc["local", "total"]
    assert summary.loc["m", "checkpoint_tensors"] == summary.loc["local", "checkpoint_tensors"]
    t = pd.read_csv(workdir / "results/ties.csv").set_index("model")
    # float32 kernels round differently with the data's alignment in each file: agree to 1e-7 (pipeline/values/)
    assert t.loc["m", "pearson_r"] == pytest.approx(t.loc["local", "pearson_r"], abs=1e-7)


def test_range_reads_refused_offline_and_on_a_missing_file(workdir):
    _params(workdir, {"m": _range_model()})
    proc = run_module("pipeline.stages.download", "m", cwd=workdir, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "HF_HUB_OFFLINE is set (offline mode) and fetch: range reads" in proc.stderr
    empty = workdir / "empty"
    empty.mkdir()
    with RangeServer(empty, "org/model", SHA) as server:
        proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=_env(server))
    assert proc.returncode == 1 and "config.json not found on the Hub" in proc.stderr
    assert not (workdir / "data").exists()


def test_a_server_that_ignores_range_is_refused(workdir, hub_online):
    """Never fall back to downloading a whole file by accident."""
    import http.server
    import threading

    (workdir / "big.bin").write_bytes(b"x" * 10_000)

    class Whole(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(workdir), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Whole)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        rf = remote.RangeFile(f"http://127.0.0.1:{httpd.server_address[1]}/big.bin")
        with pytest.raises(remote.PipelineError, match="ignored the Range request"):
            rf.read(0, 8)
    finally:
        httpd.shutdown()
        httpd.server_close()
