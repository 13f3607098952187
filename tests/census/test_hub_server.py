"""tests/support/hub.py's LocalHub through huggingface_hub's real client, and hub_population's repositories counted
by the project's own counter against their closed-form totals. Everything is on 127.0.0.1: nothing touches the
network.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported, so in this process the
`client` fixture points its constants at the hub (tests/conftest.py sets HF_HUB_OFFLINE=1 for safety); what runs
in a subprocess gets them in its environment instead.
"""

from __future__ import annotations

import http.client
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import hub_population as hp
from tests.support.hub import LocalHub, Repo, Sparse, resolve_url

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
BIG = 3 * (1 << 20) + 17  # a Sparse file longer than one served chunk


def _repos() -> list[Repo]:
    config = b'{"model_type": "llama"}\n'
    files = {"config.json": config, "model.safetensors": Sparse(b"HEADER-BYTES", BIG), "sub/notes.txt": b"hello\n"}
    return [
        Repo("org/model", SHA, files, api_total=123, api_parameters={"F32": 123}, branches={"main": SHA, "v1": OTHER}),
        Repo("org/gated", OTHER, {"config.json": config}, gated=True),
    ]


@pytest.fixture
def client(monkeypatch, tmp_path):
    """huggingface_hub in this process, pointed at a LocalHub with _repos() (online, a fresh cache)."""
    from huggingface_hub import constants

    with LocalHub(_repos()) as hub:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"  # hf_hub_url's, fixed at import
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / ".agent_harnesses.json"))
        yield hub


def _get(url: str, **headers):
    """A streamed GET through huggingface_hub's own client and backoff, as the census reads; (status, headers, body)."""
    from huggingface_hub.utils import http_stream_backoff

    headers = {"Accept-Encoding": "identity", **headers}
    with http_stream_backoff("GET", url, headers=headers, retry_on_status_codes=()) as r:
        return r.status_code, r.headers, r.read()


def _env(endpoint: str, tmp_path: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "HF_TOKEN": "",
    }


# --- files: Range, whole, HEAD ----------------------------------------------------------------------


def test_range_requests_get_206_with_the_exact_content_range(client):
    from huggingface_hub import hf_hub_url

    url = hf_hub_url("org/model", "model.safetensors", revision=SHA)
    assert url == resolve_url(client.endpoint, "org/model", SHA, "model.safetensors")
    status, headers, body = _get(url, Range="bytes=0-7")
    assert (status, headers["Content-Range"], body) == (206, f"bytes 0-7/{BIG}", b"HEADER-B")
    assert headers["Content-Length"] == "8" and headers["X-Repo-Commit"] == SHA and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(url, Range=f"bytes={BIG - 5}-")
    assert (status, headers["Content-Range"], body) == (206, f"bytes {BIG - 5}-{BIG - 1}/{BIG}", bytes(5))
    status, headers, body = _get(url, Range=f"bytes=10-{BIG + 100}")  # the end is clamped to the file's
    assert headers["Content-Range"] == f"bytes 10-{BIG - 1}/{BIG}" and body == b"ES" + bytes(BIG - 12)
    status, headers, body = _get(url, Range="bytes=-3")
    assert (status, body) == (206, bytes(3))


def test_no_range_is_the_whole_file_and_a_range_past_the_end_is_416(client):
    from huggingface_hub import hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url("org/model", "model.safetensors", revision="main")
    status, headers, body = _get(url)
    assert status == 200 and "Content-Range" not in headers and len(body) == BIG
    assert body[:12] == b"HEADER-BYTES" and body[12:] == bytes(BIG - 12)  # Sparse: the prefix, then zeros
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    with http_stream_backoff("GET", url, headers={"Range": f"bytes={BIG}-{BIG + 9}"}, retry_on_status_codes=()) as r:
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{BIG}"
        with pytest.raises(HfHubHTTPError):
            hf_raise_for_status(r)


def test_head_answers_what_get_hf_file_metadata_reads(client):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url("org/model", "model.safetensors", revision="v1"))
    assert meta.commit_hash == OTHER and meta.size == BIG and len(meta.etag) == 64
    again = get_hf_file_metadata(hf_hub_url("org/model", "model.safetensors", revision=SHA))
    assert again.etag == meta.etag and again.commit_hash == SHA
    resolved = {p: n for p, n in client.stats()["per_path"].items() if "/resolve/" in p}
    assert sorted(resolved.values()) == [1, 1] and client.stats()["per_method"]["HEAD"] == 2


def test_a_sparse_file_is_served_without_being_held():
    huge = Sparse(b"\x01\x02", 1 << 40)  # a terabyte of zeros
    assert huge.read(0, 4) == b"\x01\x02\0\0" and huge.read((1 << 40) - 2, 1 << 41) == bytes(2)
    with LocalHub([Repo("org/huge", SHA, {"model.safetensors": huge})]) as hub:
        conn = http.client.HTTPConnection("127.0.0.1", hub.port)
        conn.request("GET", f"/org/huge/resolve/{SHA}/model.safetensors", headers={"Range": "bytes=1099511627770-"})
        r = conn.getresponse()
        assert r.status == 206 and r.read() == bytes(6)
        conn.close()


def test_connections_are_kept_alive(client):
    conn = http.client.HTTPConnection("127.0.0.1", client.port)
    sockets = []
    for revision in (SHA, "main", "v1"):
        conn.request("GET", f"/org/model/resolve/{revision}/config.json")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b'{"model_type": "llama"}\n' and r.version == 11
        sockets.append(conn.sock)
    conn.close()
    assert sockets[0] is not None and sockets == [sockets[0]] * 3  # one connection for every request


def test_stopping_ends_the_kept_alive_connections():
    hub = LocalHub(_repos())
    hub.start()
    conn = http.client.HTTPConnection("127.0.0.1", hub.port)
    conn.request("GET", f"/org/model/resolve/{SHA}/config.json")
    assert conn.getresponse().read()
    hub.stop()
    conn.sock.settimeout(5)
    assert conn.sock.recv(1) == b""  # closed by the hub, not left waiting
    conn.close()


def test_parallel_clients_are_counted_exactly(client):
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import hf_hub_url

    url = hf_hub_url("org/model", "model.safetensors", revision=SHA)
    client.latency = 0.01
    client.reset_stats()

    def reads(i: int) -> int:
        return sum(len(_get(url, Range=f"bytes={k}-{k + i}")[2]) for k in range(10))

    with ThreadPoolExecutor(8) as pool:
        received = sum(pool.map(reads, range(1, 33)))
    stats = client.stats()
    assert stats["requests"] == 320 and stats["per_status"] == {206: 320}
    assert stats["bytes_served"] == received == sum(10 * (i + 1) for i in range(1, 33))


# --- errors: each the Hub's code, each huggingface_hub's class ----------------------------------------


@pytest.mark.parametrize(
    ("repo", "revision", "file", "status", "error"),
    [
        ("org/absent", "main", "config.json", 401, "RepositoryNotFoundError"),
        ("org/gated", "main", "config.json", 403, "GatedRepoError"),
        ("org/model", "no-such-branch", "config.json", 404, "RevisionNotFoundError"),
        ("org/model", SHA, "absent.json", 404, "RemoteEntryNotFoundError"),
    ],
)
def test_each_error_maps_to_huggingface_hubs_class(client, repo, revision, file, status, error):
    from huggingface_hub import errors, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    with http_stream_backoff("GET", hf_hub_url(repo, file, revision=revision), retry_on_status_codes=()) as r:
        assert r.status_code == status
        with pytest.raises(getattr(errors, error)):
            hf_raise_for_status(r)
    with pytest.raises(getattr(errors, error)):
        hf_hub_download(repo, file, revision=revision)


def test_model_info_parses(client):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(endpoint=client.endpoint)
    info = api.model_info("org/model", revision="main")
    assert info.id == "org/model" and info.sha == SHA and info.private is False and info.gated is False
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors", "sub/notes.txt"]
    assert info.safetensors.total == 123 and info.safetensors.parameters == {"F32": 123}
    assert info.config == {"model_type": "llama"}
    assert api.model_info("org/model", revision="v1").sha == OTHER
    assert api.model_info("org/model").sha == SHA and HfApi().model_info("org/model", revision=SHA).sha == SHA
    gated = api.model_info("org/gated")  # the Hub describes a gated repository; its files are what it refuses
    assert gated.gated == "manual" and gated.safetensors is None
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/absent")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="nope")


def test_hf_hub_download_and_snapshot_download(client, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    path = Path(hf_hub_download("org/model", "sub/notes.txt", revision="main"))
    assert path.read_bytes() == b"hello\n" and SHA in str(path) and str(tmp_path / "hf-cache") in str(path)
    folder = Path(snapshot_download("org/model", revision="main", allow_patterns=["*.json", "*.txt"]))
    assert folder.name == SHA and sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/notes.txt",
    ]
    api = HfApi(endpoint=client.endpoint)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("org/model", revision=SHA)}
    assert top == {"sub": "RepoFolder", "config.json": "RepoFile", "model.safetensors": "RepoFile"}
    every = {e.path for e in api.list_repo_tree("org/model", revision=SHA, recursive=True)}
    assert every == {"sub", "sub/notes.txt", "config.json", "model.safetensors"}


# --- latency and statistics -------------------------------------------------------------------------


def test_latency_is_applied_and_settable_while_serving(client):
    from huggingface_hub import hf_hub_url

    url = hf_hub_url("org/model", "config.json", revision=SHA)
    _get(url)  # the connection is open: what follows is the latency, not a connect
    client.latency = 0.25
    start = time.monotonic()
    for _ in range(2):
        _get(url, Range="bytes=0-3")
    slow = time.monotonic() - start
    client.latency = 0.0
    start = time.monotonic()
    for _ in range(2):
        _get(url, Range="bytes=0-3")
    fast = time.monotonic() - start
    assert slow >= 0.5 and fast < 0.2, (slow, fast)


def test_stats_count_requests_bytes_and_paths(client):
    from huggingface_hub import HfApi, hf_hub_url

    client.reset_stats()
    _get(hf_hub_url("org/model", "model.safetensors", revision=SHA), Range="bytes=0-99")
    _get(hf_hub_url("org/model", "model.safetensors", revision=SHA), Range="bytes=100-199")
    HfApi(endpoint=client.endpoint).model_info("org/model")
    stats = client.stats()
    assert stats["requests"] == 3 and stats["per_status"] == {206: 2, 200: 1}
    assert stats["per_path"][f"/org/model/resolve/{SHA}/model.safetensors"] == 2
    assert stats["per_path"]["/api/models/org/model"] == 1
    assert stats["bytes_served"] > 200  # the two ranges and model_info's JSON


def test_the_hub_as_a_process_writes_its_endpoint_and_serves_until_killed(tmp_path):
    port_file = tmp_path / "hub.port"
    listed = tmp_path / "list.csv"
    args = ["--population", "30", "--seed", "1", "--latency", "0.01", "--port-file", str(port_file)]
    args += ["--list", str(listed)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hub", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        endpoint = port_file.read_text().strip()
        host, port = endpoint.removeprefix("http://").split(":")
        repo = hp.population(30, seed=1)[0]
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("GET", f"/api/models/{repo.repo_id}")
        info = json.loads(conn.getresponse().read())
        assert info["sha"] == repo.sha and info["id"] == repo.repo_id
        conn.request("GET", "/_hub/latency?seconds=0")
        assert json.loads(conn.getresponse().read()) == {"latency": 0.0}
        conn.request("GET", "/_hub/stats")
        stats = json.loads(conn.getresponse().read())
        assert stats["requests"] == 1 and stats["latency"] == 0.0
        conn.close()
        assert listed.read_text().startswith("source,revision,hub_total\n")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


# --- the population ---------------------------------------------------------------------------------

DIGEST = """
import hashlib, sys, time
start = time.monotonic()
from tests.support import hub_population as hp
repos = hp.population(int(sys.argv[1]), int(sys.argv[2]))
took = time.monotonic() - start
h = hashlib.sha256()
for r in repos:
    h.update(repr((r.repo_id, r.sha, r.listed, r.gated, r.served, r.api_total, sorted(r.branches.items()))).encode())
    for name, data in sorted(r.files.items()):
        h.update(name.encode() + (data.prefix + str(data.size).encode() if isinstance(data, hp.Sparse) else data))
print(h.hexdigest(), took)
"""


def test_population_is_deterministic_and_built_in_seconds():
    def digest(n: int, seed: int) -> tuple[str, float]:
        proc = subprocess.run(
            [sys.executable, "-c", DIGEST, str(n), str(seed)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        value, took = proc.stdout.split()
        return value, float(took)

    first, took = digest(2000, 0)
    assert took < 10, f"population(2000) took {took:.1f} s"
    assert digest(2000, 0)[0] == first and digest(2000, 1)[0] != first


def test_population_holds_every_family_and_crafted_kind():
    repos = hp.population(2000)
    assert len(repos) == 2000 and len({r.repo_id for r in repos}) == 2000
    families = {hp.expected(r)["family"] for r in repos}
    assert families == {*hp.FAMILIES, "crafted"}
    kinds = [r.meta["kind"] for r in repos if r.meta["family"] == "crafted"]
    assert sorted(set(kinds)) == sorted(hp.CRAFTED) and all(kinds.count(k) == 4 for k in hp.CRAFTED)
    crafted = [hp.expected(r) for r in repos if r.meta["family"] == "crafted"]
    assert all(e["refused"] and e["total"] is None and e["reason"] == hp.CRAFTED[e["kind"]] for e in crafted)
    counted = [hp.expected(r) for r in repos if not hp.expected(r)["refused"]]
    assert all(isinstance(e["total"], int) and e["total"] > 0 and e["active"] <= e["total"] for e in counted)
    # fine-tune variants: config.json shared byte for byte under other names, dtypes and shard splits
    by_config: dict[bytes, list[Repo]] = {}
    for r in repos:
        if r.meta["family"] not in ("crafted", "gguf"):
            by_config.setdefault(r.files["config.json"], []).append(r)
    shared = [rs for rs in by_config.values() if len(rs) > 1]
    assert len(shared) > 50
    assert any(len({r.meta["dtype"] for r in rs}) > 1 and len({r.meta["shards"] for r in rs}) > 1 for rs in shared)
    assert sum(r.meta["api_total_matches"] is False for r in repos) >= 20  # wrong Hub figures, GPT-2's buffers too
    sharded = [r for r in repos if "model.safetensors.index.json" in r.files]
    index = json.loads(sharded[0].files["model.safetensors.index.json"])
    assert set(index["metadata"]) == {"total_parameters", "total_size"} and len(set(index["weight_map"].values())) > 1


def test_published_sizes_follow_their_releases():
    by_id = {r.repo_id: hp.expected(r) for r in hp.published_repos(0)}
    assert by_id["openai-community/gpt2"]["total"] == 124_439_808
    assert by_id["openai-community/gpt2"]["api_total"] == 124_439_808 + 12 * 1024 * 1024  # the Hub counts attn.bias
    assert by_id["meta-llama/Llama-2-7b-hf"]["total"] == 6_738_415_616
    assert by_id["TinyLlama/TinyLlama-1.1B-Chat-v1.0"]["total"] == 1_100_048_384
    mixtral = by_id["mistralai/Mixtral-8x7B-v0.1"]
    assert (mixtral["total"], mixtral["active"], mixtral["api_total"]) == (46_702_792_704, 12_879_925_248, 333_312)
    qwen = by_id["Qwen/Qwen1.5-MoE-A2.7B"]
    assert (qwen["total"], qwen["active"]) == (14_315_784_192, 2_689_173_504)


def test_write_list_text_and_csv(tmp_path):
    import csv

    repos = hp.population(60)
    text = hp.write_list(tmp_path / "list.txt", repos, "text").read_text().splitlines()
    entries = [line for line in text if line and not line.startswith("#")]
    assert entries == [f"{r.repo_id}@{r.listed}" for r in repos] and text[0].startswith("#")
    assert any(e.endswith("@no-such-branch") for e in entries) and any(e.endswith("@main") for e in entries)
    with open(hp.write_list(tmp_path / "list.csv", repos, "csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["source", "revision", "hub_total"] and len(rows) == len(repos)
    totals = [row["hub_total"] for row in rows]
    assert "" in totals and any(t.isdigit() for t in totals)


def test_crafted_headers_claim_what_they_say():
    repos = {r.meta.get("kind"): r for r in hp.population(40) if r.meta["family"] == "crafted"}
    data = repos["header-length-2**60"].files["model.safetensors"]
    assert struct.unpack("<Q", data.prefix[:8])[0] == 2**60
    data = repos["shape-overflow"].files["model.safetensors"]
    header = json.loads(data.prefix[8 : 8 + struct.unpack("<Q", data.prefix[:8])[0]])
    assert header["lm_head.weight"]["shape"] == [2**40, 2**40]
    data = repos["offsets-past-end"].files["model.safetensors"]
    n = struct.unpack("<Q", data.prefix[:8])[0]
    assert max(t["data_offsets"][1] for k, t in json.loads(data.prefix[8 : 8 + n]).items() if k != "__metadata__") > (
        data.size - 8 - n
    )
    index = json.loads(repos["index-total-inf"].files["model.safetensors.index.json"])
    assert index["metadata"]["total_parameters"] == 1.8e308
    assert "missing-repo" in repos and not repos["missing-repo"].served and repos["gated"].gated
    with pytest.raises(json.JSONDecodeError):
        json.loads(repos["config-not-json"].files["config.json"])


# --- the project's counter on every family ------------------------------------------------------------


def _count(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.hmp", "count", str(folder), "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _first_of_each_family() -> dict[str, Repo]:
    out: dict[str, Repo] = {}
    for r in hp.population(40):
        out.setdefault(r.meta["family"], r)
    return out


@pytest.mark.parametrize("family", hp.FAMILIES)
def test_every_family_counts_to_its_formula(family, tmp_path):
    """The repository's files written out (sparse files truncated to size) and counted by `hmp count`."""
    repo = _first_of_each_family()[family]
    folder = hp.write_repo(repo, tmp_path / "repo")
    want = hp.expected(repo)
    proc = _count(folder / want["count_file"] if want["count_file"] else folder)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["total"] == want["total"]


@pytest.mark.slow
@pytest.mark.parametrize("repo_id", ["openai-community/gpt2", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"])
def test_published_sizes_count_to_their_formula(repo_id, tmp_path):
    repo = next(r for r in hp.published_repos(0) if r.repo_id == repo_id)
    proc = _count(hp.write_repo(repo, tmp_path / "repo"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["total"] == hp.expected(repo)["total"]


def test_a_repository_counted_through_the_hub_as_the_census_reads_it(tmp_path):
    """In a subprocess with HF_ENDPOINT at the hub: model_info resolves main, the safetensors header comes by two
    Range requests through huggingface_hub's client, and `hmp count org/name` counts the repository from it."""
    repo = _first_of_each_family()["llama"]
    script = f"""
import json, struct
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff
sha = HfApi().model_info({repo.repo_id!r}, revision="main").sha
def read(a, b):
    with http_stream_backoff("GET", hf_hub_url({repo.repo_id!r}, "model.safetensors", revision=sha),
                             headers={{"Range": f"bytes={{a}}-{{b}}"}}) as r:
        hf_raise_for_status(r)
        assert r.status_code == 206
        return r.read()
n = struct.unpack("<Q", read(0, 7))[0]
print(json.dumps({{"sha": sha, "keys": len(json.loads(read(8, 7 + n))) - 1}}))
"""
    with LocalHub([repo]) as hub:
        env = _env(hub.endpoint, tmp_path)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        keys = hp.llama_tensors(json.loads(repo.files["config.json"]), "F32")
        assert got["sha"] == repo.sha and got["keys"] == len(keys)
        counted = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.hmp", "count", repo.repo_id, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout)["summary"]["total"] == hp.expected(repo)["total"]
