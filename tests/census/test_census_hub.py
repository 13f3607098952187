"""hmp census against the local hub (tests/support/hub.py): every family and crafted kind of hub_population, each
count exact against the population's closed forms (hub_population.expected, never the pipeline's code); a census
killed half way and run again ends with the same bytes; offline from a pre-filled cache; on a Dask scheduler
that was already running. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import hub_population as hp
from tests.support.checkpoints import prefill_hub_cache
from tests.support.hub import LocalHub

# Counted, but the index's own figure is absurd: flagged, never taken as the count (issue 22).
FLAGGED = {"index-total-inf", "index-total-1e20"}


def _env(endpoint: str, home: Path, offline: bool = False) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN": "",
    }


def _census(list_path: Path, out: Path, env: dict, *args: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli.hmp", "census", str(list_path), "-o", str(out), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    if kw.get("background"):
        return proc
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:  # where it waits: hmp prints every thread's stack on SIGUSR1
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hmp census took over 900 s; its threads:\n{err.decode(errors='replace')[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(out.read_text())))


@pytest.fixture(scope="module")
def population():
    return hp.population(130, seed=3)  # one of each family and crafted kind, the published sizes, then variants


@pytest.fixture(scope="module")
def census(population, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("census-hub")
    hp.write_list(tmp / "list.csv", population, "csv")
    with LocalHub(population, latency=0.005) as hub:
        proc = _census(tmp / "list.csv", tmp / "out.csv", _env(hub.endpoint, tmp / "hf"), "--threads", "4")
        served = hub.stats()
    assert proc.returncode == 0, proc.stderr
    return _rows(tmp / "out.csv"), proc.stdout, served


def test_every_repository_is_a_row_counted_exactly_or_refused_with_a_reason(population, census):
    rows, _, _ = census
    assert [r["source"] for r in rows] == [r.repo_id for r in population]
    kinds = set()
    for repo, row in zip(population, rows, strict=True):
        want = hp.expected(repo)
        kinds.add(want.get("kind") or want["family"])
        if want.get("kind") in FLAGGED:
            assert row["error"] == "" and "index_absurd_claim" in row["flags"], row
            assert int(row["total"]) == want["tensors_total"]
        elif want["refused"]:
            assert row["error"] and row["total"] == "" and "\n" not in row["error"], (repo.repo_id, row)
            assert row["flags"].startswith("refused_at_"), row
            gone = want.get("kind") in ("gated", "missing-repo", "missing-revision")
            assert row["flags"].endswith(";unavailable" if gone else ";invalid"), row
        else:
            assert row["error"] == "", (repo.repo_id, row["error"])
            assert int(row["total"]) == want["total"], repo.repo_id
            assert int(row["active"]) == (want["active"] or want["total"]), repo.repo_id
            assert int(row["bytes_fetched"]) > 0 and int(row["requests"]) > 0
    assert set(hp.FAMILIES) <= kinds and set(hp.CRAFTED) <= kinds  # the list really held every kind


def test_the_published_sizes(census):
    rows, _, _ = census
    by = {r["source"]: r for r in rows}
    # Mixtral-8x7B: 46,702,792,704 total, 12,879,925,248 active (Mistral AI's release); GPT-2 small: the course
    assert int(by["mistralai/Mixtral-8x7B-v0.1"]["total"]) == 46_702_792_704
    assert int(by["mistralai/Mixtral-8x7B-v0.1"]["active"]) == 12_879_925_248
    assert int(by["openai-community/gpt2"]["total"]) == 124_439_808
    mixtral = by["mistralai/Mixtral-8x7B-v0.1"]
    assert "hub_implausible_claim" in mixtral["flags"]  # its API figure here is 333,312 (huggingface_hub #4221)
    # headers only: the 93 GB of a bf16 Mixtral are never read, a few hundred kB of headers are
    assert int(mixtral["bytes_fetched"]) < 2e6 < int(mixtral["checkpoint_bytes"]) / 1e4


def test_the_hub_claims_are_explained(census):
    rows, _, _ = census
    gpt2 = next(r for r in rows if r["source"] == "openai-community/gpt2")
    # its header stores 12 causal masks [1, 1, 1024, 1024] beside the 124,439,808 parameters (NOTES.md)
    assert int(gpt2["checkpoint_buffers"]) == 12 * 1024 * 1024
    assert int(gpt2["checkpoint_tensors"]) == 124_439_808 + 12 * 1024 * 1024
    explained = [r for r in rows if r["hub_explained"] and not r["hub_explained"].startswith("unexplained")]
    assert any("buffers stored as tensors" in r["hub_explained"] for r in explained)
    assert all(r["hub_explained"] == "agrees" for r in rows if r["hub_vs_exact"] == "0")


def test_each_architecture_is_built_once(census):
    rows, stdout, _ = census
    built = int(stdout.split(" architectures built")[0].rsplit(" ", 1)[1].replace(",", ""))
    counted = [r for r in rows if not r["error"]]
    assert built < len(counted)  # fine-tunes shared their base's build
    assert built >= len({r["architecture"] for r in counted})


def test_only_headers_were_asked_for(census):
    _, _, served = census
    paths = served["per_path"]
    assert all(("resolve" not in p) or p.rsplit("/", 1)[-1].endswith((".json", ".safetensors", ".gguf")) for p in paths)


@pytest.mark.slow
def test_a_killed_census_resumes_to_the_same_bytes(tmp_path):
    repos = hp.population(160, seed=5)
    hp.write_list(tmp_path / "list.txt", repos, "text")
    with LocalHub(repos, latency=0.03) as hub:
        env = _env(hub.endpoint, tmp_path / "hf")
        whole = _census(tmp_path / "list.txt", tmp_path / "whole.csv", env, "--workers", "1", "--threads", "2")
        assert whole.returncode == 0, whole.stderr
        out = tmp_path / "killed.csv"
        proc = _census(tmp_path / "list.txt", out, env, "--workers", "1", "--threads", "2", background=True)
        journal = out.with_name(out.name + ".partial")
        deadline = time.monotonic() + 600
        while not list(journal.glob("rows-*.jsonl")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the census ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its workers, at once
        proc.wait()
        assert not out.exists()  # no CSV until the census is whole
        kept = sum(len(p.read_text().splitlines()) for p in journal.glob("rows-*.jsonl"))
        assert 0 < kept < len(repos)
        again = _census(tmp_path / "list.txt", out, env, "--workers", "1", "--threads", "2")
    assert again.returncode == 0, again.stderr
    assert f"{kept:,} kept from the interrupted run" in again.stdout
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert not journal.exists()


def test_offline_the_census_reads_the_cache(population, tmp_path):
    small = [r for r in population if hp.expected(r)["family"] == "llama" and not hp.expected(r)["refused"]][:2]
    home = tmp_path / "hf"
    for repo in small:
        folder = hp.write_repo(repo, tmp_path / "files" / repo.repo_id.replace("/", "--"))
        prefill_hub_cache(home / "hub", repo.repo_id, repo.sha, folder)
    (tmp_path / "list.txt").write_text("".join(f"{r.repo_id}@{r.sha}\n" for r in small) + "someone/not-cached@main\n")
    proc = _census(tmp_path / "list.txt", tmp_path / "out.csv", _env("http://127.0.0.1:9", home, offline=True))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(tmp_path / "out.csv")
    for repo, row in zip(small, rows, strict=False):
        assert int(row["total"]) == hp.expected(repo)["total"] and row["revision"] == repo.sha
    assert "HF_HUB_OFFLINE is set" in rows[-1]["error"] and "not in the cache" in rows[-1]["error"]


CLUSTER = """
import os, sys, time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=1, threads_per_worker=4, host="127.0.0.1", dashboard_address=None)
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(cluster.scheduler_address)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
"""


@pytest.mark.slow
def test_the_same_census_on_a_running_scheduler(population, tmp_path):
    """A cluster started apart (its workers without the `counter` resource: they count under a lock) gives the
    same CSV as the local cluster. Its workers read the Hub from their own environment, as a real cluster's do."""
    few = population[:12]
    hp.write_list(tmp_path / "list.csv", few, "csv")
    address = tmp_path / "scheduler"
    with LocalHub(population) as hub:
        env = _env(hub.endpoint, tmp_path / "hf")
        cluster = subprocess.Popen([sys.executable, "-c", CLUSTER, str(address)], env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not address.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            local = _census(tmp_path / "list.csv", tmp_path / "local.csv", env)
            remote = _census(tmp_path / "list.csv", tmp_path / "remote.csv", env, "--scheduler", address.read_text())
        finally:
            os.killpg(cluster.pid, signal.SIGKILL)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert "on 1 workers" in remote.stdout
    assert (tmp_path / "remote.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()


def test_a_scheduler_that_is_not_there_is_one_line(tmp_path):
    (tmp_path / "list.txt").write_text(f"{tmp_path}\n")  # a local folder: no Hub asked
    proc = _census(
        tmp_path / "list.txt",
        tmp_path / "out.csv",
        _env("http://127.0.0.1:9", tmp_path),
        "--scheduler",
        "tcp://127.0.0.1:9",
    )
    assert proc.returncode != 0 and "--scheduler tcp://127.0.0.1:9: cannot connect" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.csv").exists()


def test_every_request_has_an_overall_deadline(population, tmp_path):
    """A hub that sends config.json (and the API's answer) one byte a second, with no Content-Length: each request is
    cut at its deadline (HMP_RANGE_MIN_SECONDS plus what arrived at HMP_RANGE_MIN_RATE), not read for minutes."""
    repo = next(r for r in population if hp.expected(r)["family"] == "llama" and not hp.expected(r)["refused"])
    (tmp_path / "list.txt").write_text(f"{repo.repo_id}@{repo.sha}\n{repo.repo_id}@main\n")
    with LocalHub(population) as hub:
        hub.drip = {"/config.json": 1.0, f"/api/models/{repo.repo_id}/revision/main": 1.0}
        env = {**_env(hub.endpoint, tmp_path / "hf"), "HMP_RANGE_MIN_SECONDS": "2"}
        start = time.monotonic()
        proc = _census(tmp_path / "list.txt", tmp_path / "out.csv", env)
        took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    pinned, branch = _rows(tmp_path / "out.csv")
    assert "past this request's deadline" in pinned["error"] and "config.json" in pinned["error"]
    assert "cannot resolve" in branch["error"] and "past this request's deadline" in branch["error"]
    assert took < 60, took  # two answers of hundreds of bytes each at a byte a second would take minutes
