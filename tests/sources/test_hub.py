"""The Hub through huggingface_hub's own HTTP client, against a local server on 127.0.0.1 (never the network).

Range reads and full downloads carry the library's token and user agent, are retried by its backoff on a
transient 5xx (each of its log lines printed once), refuse a server that ignores Range, and count
exactly the body bytes. Offline mode and an endpoint that cannot be reached are each one line, naming
the model and the case, within seconds.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import yaml

from pipeline.core.errors import PipelineError
from pipeline.formats import remote
from tests.conftest import run_module, tiny_params
from tests.support.checkpoints import tiny_checkpoint
from tests.support.http_range_server import RangeServer

SHA = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "hf_localtesttoken"


def _params(workdir, **models) -> None:
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params(models), sort_keys=False))


def _hub_model(**extra) -> dict:
    return {"source": "hub", "hub_id": "org/model", "revision": SHA, **extra}


def _env(endpoint: str, workdir, **extra) -> dict:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_CACHE": str(workdir / "hf" / "hub"),
        "HF_HOME": str(workdir / "hf"),
        "HF_TOKEN": "",
        **extra,
    }


@pytest.fixture
def upstream(workdir):
    return tiny_checkpoint(workdir / "upstream", tied=False, seed=3)


def _url(server, name="model.safetensors") -> str:
    return f"{server.endpoint}/org/model/resolve/{SHA}/{name}"


# --- RangeFile, in process --------------------------------------------------------------------------


def test_bytes_fetched_is_exactly_the_body_bytes(upstream, hub_online):
    data = (upstream / "model.safetensors").read_bytes()
    with RangeServer(upstream, "org/model", SHA) as server:
        rf = remote.RangeFile(_url(server))
        assert rf.read(0, 8) == data[:8] and rf.read(100, 1000) == data[100:1100]
        assert rf.read(len(data) - 5, 5) == data[-5:] and rf.size == len(data)
        config = remote.RangeFile(_url(server, "config.json"))
        assert config.read_all() == (upstream / "config.json").read_bytes()
        assert rf.bytes_fetched == 8 + 1000 + 5
        assert rf.bytes_fetched + config.bytes_fetched == server.bytes_served
        sent = server.headers_of("GET")
    assert [h["range"] for h in sent[:3]] == ["bytes=0-7", "bytes=100-1099", f"bytes={len(data) - 5}-{len(data) - 1}"]
    assert all(h["accept-encoding"] == "identity" for h in sent)  # ranges of the file itself, never of a gzip of it


def test_a_server_that_ignores_range_is_refused_before_its_body_is_read(upstream, hub_online):
    with RangeServer(upstream, "org/model", SHA) as server:
        server.ignore_range = True
        rf = remote.RangeFile(_url(server))
        with pytest.raises(PipelineError, match=r"ignored the Range request \(HTTP 200\)"):
            rf.read(0, 8)
    assert rf.bytes_fetched == 0


def test_a_transient_5xx_is_retried_by_huggingface_hub(upstream, hub_online):
    data = (upstream / "model.safetensors").read_bytes()
    with RangeServer(upstream, "org/model", SHA) as server:
        server.fail_next = [503]
        rf = remote.RangeFile(_url(server))
        assert rf.read(0, 64) == data[:64]
        assert server.failures == 1 and len(server.headers_of("GET")) == 2
    assert rf.bytes_fetched == 64  # the failed answer's body is not counted (it had none)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, r"HTTP 403 Forbidden; set HF_TOKEN to a token that may read it$"),
        (401, r"HTTP 401 Unauthorized; set HF_TOKEN"),
        (400, r"HTTP 400 Bad Request"),
    ],
)
def test_other_errors_are_one_line_naming_the_url(upstream, hub_online, status, expected):
    with RangeServer(upstream, "org/model", SHA) as server:
        server.fail_next = [status]
        rf = remote.RangeFile(_url(server))
        with pytest.raises(PipelineError) as err:
            rf.read(0, 8)
        assert server.failures == 1 and len(server.headers_of("GET")) == 1  # a client error is not retried
    line = str(err.value)
    assert line.startswith(_url(server) + ": ") and "\n" not in line
    assert rf.bytes_fetched == 0 and re.search(expected, line), line


def test_a_missing_file_is_file_not_found(upstream, hub_online):
    with RangeServer(upstream, "org/model", SHA) as server:
        with pytest.raises(FileNotFoundError):
            remote.RangeFile(_url(server, "absent.json")).read_all()


def test_a_stalled_answer_times_out_and_is_retried(upstream, hub_online):
    data = (upstream / "model.safetensors").read_bytes()
    with RangeServer(upstream, "org/model", SHA) as server:
        server.stall_next = [1.0]  # the first answer comes after the client's timeout
        rf = remote.RangeFile(_url(server), timeout=0.3)
        assert rf.read(0, 64) == data[:64]
        assert len(server.headers_of("GET")) == 2
    assert rf.bytes_fetched == 64


def test_a_body_that_stalls_is_one_line(upstream, hub_online):
    """Headers, then silence: the timeout ends the transfer as one line (not a retry inside the library's block)."""
    with RangeServer(upstream, "org/model", SHA) as server:
        server.stall_body_next = [1.0]
        rf = remote.RangeFile(_url(server), timeout=0.3)
        with pytest.raises(PipelineError, match=r"the transfer broke off after 0 bytes \(") as err:
            rf.read(0, 64)
    assert str(err.value).startswith(_url(server)) and rf.bytes_fetched == 0


def test_a_trickling_answer_is_cut_at_its_deadline(upstream, hub_online, monkeypatch):
    """A byte every 20 ms never trips the per-read timeout; the request's own deadline ends it, as one line."""
    monkeypatch.setattr(remote, "MIN_SECONDS", 0.5)
    monkeypatch.setattr(remote, "MIN_RATE", 10**9)  # the bytes add nothing: a deadline of 0.5 s
    with RangeServer(upstream, "org/model", SHA) as server:
        server.trickle_next = [0.02]  # 4,096 bytes would take 80 s
        rf = remote.RangeFile(_url(server))
        start = time.monotonic()
        with pytest.raises(PipelineError) as err:
            rf.read(0, 4096)
        elapsed = time.monotonic() - start
        served = server.bytes_served
        assert rf.read(0, 8) == (upstream / "model.safetensors").read_bytes()[:8]  # the next request is served
    line = str(err.value)
    got = re.fullmatch(
        re.escape(_url(server)) + r": ([\d,]+) of 4,096 bytes received in ([\d.]+) s, past this request's deadline "
        r"of 0\.5 s \(HMP_RANGE_MIN_SECONDS plus the bytes at HMP_RANGE_MIN_RATE bytes a second\)",
        line,
    )
    assert got, line
    received = int(got.group(1).replace(",", ""))
    assert 0 < received < 4096 and received <= served  # the server counts each byte before sending it
    assert rf.bytes_fetched == received + 8
    assert 0.5 <= float(got.group(2)) and elapsed < 3, f"{elapsed:.1f} s"


@pytest.mark.parametrize(("rate", "cut"), [(50, False), (2000, True)])
def test_the_deadline_grows_with_the_bytes_asked_for(rate, cut, upstream, hub_online, monkeypatch):
    """200 bytes at about 500 bytes a second: within 0.1 s + 200 B at 50 B/s (4.1 s), past 0.1 s + 0.1 s."""
    monkeypatch.setenv("HMP_RANGE_MIN_SECONDS", "0.1")  # the environment, as a DVC stage would be given it
    monkeypatch.setenv("HMP_RANGE_MIN_RATE", str(rate))
    data = (upstream / "model.safetensors").read_bytes()
    with RangeServer(upstream, "org/model", SHA) as server:
        server.trickle_next = [0.002]
        rf = remote.RangeFile(_url(server))
        if cut:
            with pytest.raises(PipelineError, match=r"of 200 bytes received in .* deadline of 0\.2 s"):
                rf.read(100, 200)
        else:
            assert rf.read(100, 200) == data[100:300]


@pytest.mark.parametrize("value", ["fast", "0", "-5", "inf", "nan"])
def test_a_deadline_setting_that_is_no_positive_number_is_one_line(value, monkeypatch):
    monkeypatch.setenv("HMP_RANGE_MIN_RATE", value)
    with pytest.raises(PipelineError, match=rf"^HMP_RANGE_MIN_RATE='{value}' must be a positive number$"):
        remote.deadline(100)


def test_a_file_that_changes_size_between_requests_is_refused(upstream, hub_online):
    size = (upstream / "model.safetensors").stat().st_size
    with RangeServer(upstream, "org/model", SHA) as server:
        rf = remote.RangeFile(_url(server))
        rf.read(0, 8)
        assert rf.size == size
        server.grow_by = 16  # replaced on the server by a longer file
        with pytest.raises(PipelineError) as err:
            rf.read(8, 8)
    assert str(err.value) == (
        f"{_url(server)}: the file is {size + 16:,} bytes in this answer but was {size:,} in an earlier one; "
        "it changed between requests"
    )


# --- the download stage, as DVC runs it -------------------------------------------------------------


def test_range_reads_carry_the_token_and_retry_a_5xx_logging_each_line_once(workdir, upstream):
    _params(workdir, m=_hub_model(fetch="range"))
    with RangeServer(upstream, "org/model", SHA) as server:
        server.fail_next = [503]
        proc = run_module(
            "pipeline.stages.download",
            "m",
            cwd=workdir,
            env=_env(server.endpoint, workdir, HF_TOKEN=TOKEN, HMP_PROGRESS="1"),
        )
        assert proc.returncode == 0, proc.stderr
        served, gets = server.bytes_served, server.headers_of("GET")
    assert server.failures == 1
    assert gets and all(h.get("authorization") == f"Bearer {TOKEN}" for h in gets)
    assert "HTTP Request:" not in proc.stderr  # the HTTP client's request log stays at debug level
    assert all(h["user-agent"].startswith("how-many-params/None; hf_hub/") for h in gets)
    # huggingface_hub's retry is logged, each line once (its logger does not also propagate to ours)
    assert proc.stderr.count("HTTP Error 503 thrown while requesting GET") == 1, proc.stderr
    assert proc.stderr.count("Retrying in 1s [Retry 1/5]") == 1, proc.stderr
    assert "m: embeddings" in proc.stderr  # the range reads' progress bar (forced on: stderr is not a terminal)
    prov = json.loads((workdir / "data/models/m/provenance.json").read_text())
    assert prov["bytes_fetched"] == served  # the failed answer had no body; every byte received is counted


def test_range_reads_from_a_trickling_server_stop_at_the_deadline(workdir, upstream):
    """The download stage with the deadline from its environment: one line within seconds, nothing written."""
    _params(workdir, m=_hub_model(fetch="range"))
    with RangeServer(upstream, "org/model", SHA) as server:
        server.trickle_next = [0.02]  # config.json, its first file: about a kilobyte, 20 s at this pace
        env = _env(server.endpoint, workdir, HMP_RANGE_MIN_SECONDS="0.5", HMP_RANGE_MIN_RATE="1000000000")
        start = time.monotonic()
        proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=env)
        elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: model 'm': {_url(server, 'config.json')}: "), lines[0]
    assert "bytes received in" in lines[0] and "deadline of 0.5 s" in lines[0], lines[0]
    assert elapsed < 15, f"{elapsed:.1f} s"
    assert not (workdir / "data").exists()


def test_full_download_through_snapshot_download(workdir, upstream, monkeypatch):
    """fetch: download online: huggingface_hub lists, downloads and caches the files, with the token, its own
    retries and its own progress bars (none of ours around them). Its file downloads retry 408 and 429 (and
    resume a broken transfer), not 5xx: that is the library's policy, and a 429 here is retried."""
    monkeypatch.delenv("HMP_PROGRESS", raising=False)
    _params(workdir, m=_hub_model())
    with RangeServer(upstream, "org/model", SHA) as server:
        server.fail_next = [429]
        env = _env(server.endpoint, workdir, HF_TOKEN=TOKEN, HMP_PROGRESS="1")
        proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=env)
        assert proc.returncode == 0, proc.stderr
        seen = list(server.seen)
        # unforced, on a pipe, none of the library's bars is drawn, "Fetching 2 files" included (a fresh cache)
        env = _env(server.endpoint, workdir, HF_TOKEN=TOKEN, HF_HUB_CACHE=str(workdir / "other-cache"))
        quiet = run_module("pipeline.stages.download", "m", cwd=workdir, env=env)
    assert quiet.returncode == 0 and "Fetching" not in quiet.stderr and "%|" not in quiet.stderr, quiet.stderr
    assert server.failures == 1 and proc.stderr.count("Retrying in 1s") == 1, proc.stderr
    assert any(path.startswith(f"/api/models/org/model/tree/{SHA}") for _, path, _ in seen)
    hub_requests = [{k.lower(): v for k, v in h.items()} for _, p, h in seen if p != "/"]  # the probe aside
    assert all(h.get("authorization") == f"Bearer {TOKEN}" for h in hub_requests)
    assert all(h["user-agent"].startswith("how-many-params/None; hf_hub/") for h in hub_requests)
    prov = json.loads((workdir / "data/models/m/provenance.json").read_text())
    assert prov["revision"] == SHA and {f["name"] for f in prov["files"]} >= {"config.json", "model.safetensors"}
    assert (workdir / "hf/hub/models--org--model/snapshots" / SHA / "model.safetensors").is_file()
    assert "Fetching 2 files" in proc.stderr  # huggingface_hub's own bar, forced on by HMP_PROGRESS=1
    assert "HTTP Request:" not in proc.stderr


# --- offline mode and an unreachable endpoint: one line each, within seconds ---------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


@pytest.mark.parametrize("fetch", ["download", "range"])
@pytest.mark.parametrize("case", ["offline", "unreachable"])
def test_no_hub_is_one_line_within_seconds(workdir, fetch, case):
    _params(workdir, m=_hub_model(hub_id="org/absent", fetch=fetch))
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = _env(endpoint, workdir, HF_HUB_OFFLINE="1" if case == "offline" else "0")
    start = time.monotonic()
    proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=env)
    elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert line.startswith("error: model 'm': ") and "org/absent" in line and "HF_HUB_OFFLINE=1" in line, line
    if case == "offline":
        assert "HF_HUB_OFFLINE is set (offline mode)" in line and "cannot be reached" not in line, line
    else:
        assert f"the Hub at {endpoint} cannot be reached (" in line and "offline mode" not in line, line
    assert "pre-filled cache" in line or "pre-fill the cache" in line, line
    assert elapsed < 15, f"{elapsed:.1f} s"  # a process start and one refused probe, not the library's retries
    assert not (workdir / "data").exists()


def test_an_endpoint_that_never_answers_is_reported_after_the_probe(workdir):
    """A listener that accepts and stays silent: the probe's timeout, not huggingface_hub's backoff, ends it."""
    from pipeline.sources.hub import PROBE_TIMEOUT

    _params(workdir, m=_hub_model(hub_id="org/absent"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        proc = run_module("pipeline.stages.download", "m", cwd=workdir, env=_env(endpoint, workdir))
        elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert f"the Hub at {endpoint} cannot be reached (" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0], lines[0]
    assert PROBE_TIMEOUT <= elapsed < PROBE_TIMEOUT + 10, f"{elapsed:.1f} s"
