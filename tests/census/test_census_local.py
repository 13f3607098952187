"""hmp census on local folders: exact counts, one build per architecture, claims explained, bad lines as rows.

Oracles: GPT-2 small's 124,439,808 parameters (the course's figure, the GPT-2 layout's closed form in
pipeline-independent form below) and the Hub's published GPT-2 safetensors file, whose header also
stores one causal mask h.N.attn.bias of [1, 1, 1024, 1024] per layer (NOTES.md): 12 × 1024² = 12,582,912
values that are not parameters, so a header sum of 137,022,720, the "137M" the Hub shows for gpt2.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.census import explain, listing, run
from pipeline.census import journal as journal_
from pipeline.census import rows as rows_
from tests.support.checkpoints import GPT2_SMALL, gpt2_config, gpt2_hub_entries, write_sparse_safetensors

V, P, D, L = 50257, 1024, 768, 12
GPT2_SMALL_TOTAL = V * D + P * D + L * (12 * D * D + 13 * D) + 2 * D  # wte, wpe, blocks, ln_f
MASKS = L * P * P


def test_the_closed_form_is_the_course_figure():
    assert GPT2_SMALL_TOTAL == 124_439_808  # the course (and the report's first finding)


def _gpt2_folder(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**gpt2_config(**GPT2_SMALL), "_name_or_path": name}))
    write_sparse_safetensors(folder / "model.safetensors", gpt2_hub_entries(V, P, D, L))
    return folder


def _sharded(folder: Path, claimed: object) -> Path:
    """GPT-2 small in two shards with an index whose metadata claims `claimed` parameters."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(gpt2_config(**GPT2_SMALL)))
    entries = gpt2_hub_entries(V, P, D, L)
    half = len(entries) // 2
    weight_map = {}
    for i, part in enumerate((entries[:half], entries[half:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        write_sparse_safetensors(folder / name, part)
        weight_map |= {key: name for key, _, _ in part}
    index = {"metadata": {"total_parameters": claimed}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    """One census (a real Dask local cluster, via the hmp command) over a list of every kind of line."""
    root = tmp_path_factory.mktemp("census")
    for i in range(3):  # fine-tunes: one config (but for _name_or_path), three repositories
        _gpt2_folder(root / f"ft{i}", f"someone/ft{i}")
    _sharded(root / "sharded", GPT2_SMALL_TOTAL + MASKS)
    _sharded(root / "absurd", 1.8e308)
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    lines = [
        "source,revision,hub_total",
        f"{root / 'ft0'},,{GPT2_SMALL_TOTAL + MASKS}",
        f"{root / 'ft1'},,333312",
        f"{root / 'ft2'},,",
        f"{root / 'sharded'},,",
        f"{root / 'absurd'},,",
        f"{root / 'broken'},,",
        f"{root / 'missing'},,",
        "not a repo id,,",
        f"{root / 'ft0'},main,",
    ]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    out = root / "out.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.hmp", "census", str(root / "list.csv"), "-o", str(out), "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    return root, rows, proc.stdout, out


def test_one_row_per_listed_source_in_the_list_order(census):
    root, rows, _, _ = census
    assert [r["source"] for r in rows] == [
        *(str(root / f"ft{i}") for i in range(3)),
        str(root / "sharded"),
        str(root / "absurd"),
        str(root / "broken"),
        str(root / "missing"),
        "not a repo id",
        str(root / "ft0"),
    ]
    assert list(rows[0]) == rows_.COLUMNS


def test_every_counted_row_is_exact(census):
    _, rows, _, _ = census
    for r in rows[:5]:
        assert r["error"] == ""
        assert int(r["total"]) == GPT2_SMALL_TOTAL
        assert int(r["active"]) == GPT2_SMALL_TOTAL
        assert int(r["checkpoint_tensors"]) == GPT2_SMALL_TOTAL + MASKS
        assert int(r["checkpoint_buffers"]) == MASKS
        assert r["model_class"] == "GPT2LMHeadModel" and r["format"] == "safetensors"
        assert int(r["bytes_fetched"]) > 0


def test_fine_tunes_share_one_build(census):
    _, rows, stdout, _ = census
    assert len({r["architecture"] for r in rows[:3]}) == 1  # _name_or_path is not part of the architecture
    assert rows[3]["architecture"] == rows[0]["architecture"]  # the sharded copy of the same config, too
    assert "architectures built" in stdout
    built = int(stdout.split(" architectures built")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert built == len({r["architecture"] for r in rows if r["architecture"]})


def test_claims_are_explained_or_flagged(census):
    _, rows, _, _ = census
    assert rows[0]["hub_explained"] == f"counts buffers stored as tensors ({MASKS:,})"
    assert int(rows[0]["hub_vs_exact"]) == MASKS
    assert "unexplained" in rows[1]["hub_explained"] and "hub_implausible_claim" in rows[1]["flags"]
    assert rows[3]["index_explained"] == f"counts buffers stored as tensors ({MASKS:,})"
    assert "index_absurd_claim" in rows[4]["flags"] and int(rows[4]["total"]) == GPT2_SMALL_TOTAL


def test_a_bad_source_is_a_row_with_its_reason(census):
    _, rows, _, _ = census
    broken, missing, bad, revision = rows[5:]
    assert broken["total"] == "" and "config.json" in broken["error"] and broken["flags"] == "refused_at_count;invalid"
    assert missing["error"] == "no such file or folder" and missing["flags"] == "refused_at_list;unavailable"
    assert "not a Hub id" in bad["error"]
    assert "revision applies to a Hub id" in revision["error"]
    assert all("\n" not in r["error"] for r in rows)


def test_the_journal_is_gone_once_the_csv_is_written(census):
    _, _, _, out = census
    assert not out.with_name(out.name + journal_.SUFFIX).exists()


# --- the pieces, without a cluster -----------------------------------------------------------


def test_list_formats(tmp_path):
    text = tmp_path / "list.txt"
    text.write_text("# a comment\n\nopenai-community/gpt2@607a30d783dfa663caf39e06633721c8d4cfcd7e\nowner/name\n")
    got = listing.read(text)
    assert [(s.hub_id, s.revision, s.line) for s in got] == [
        ("openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e", 3),
        ("owner/name", "main", 4),
    ]
    gguf = listing.source(1, "owner/name/sub/model-Q4_K_M.gguf")
    assert (gguf.kind, gguf.hub_id, gguf.file) == ("hub", "owner/name", "sub/model-Q4_K_M.gguf")
    assert listing.source(1, "owner/name/../../etc.gguf").kind == "bad"
    assert listing.source(1, "owner/name", hub_total="lots").kind == "bad"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("source,revisions\nowner/name,main\n")
    with pytest.raises(Exception, match="unknown column 'revisions'"):
        listing.read(bad_csv)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(Exception, match="not UTF-8"):
        listing.read(binary)


def test_claims_read_as_written():
    assert listing.claim("124439808") == 124_439_808
    assert listing.claim("1.5e9") == 1_500_000_000
    assert listing.claim("1.8e308") == 1.8e308
    assert listing.claim("1e400") == float("inf")
    assert listing.claim("") is None


@pytest.mark.parametrize(
    ("claim", "words"),
    [
        (1000, "agrees"),
        (1100, "counts buffers stored as tensors (100)"),
        (
            1150,
            "counts buffers stored as tensors (100), stored blocks the class does not build, such as MTP layers or "
            "extra heads (50)",
        ),
        (700, "leaves out the embeddings (300)"),
        (800, "counts buffers stored as tensors (100); leaves out the embeddings (300)"),
        (400, "counts only the active parameters (experts per token)"),
    ],
)
def test_explain_finds_the_combination(claim, words):
    row = {"total": 1000, "active": 400, "checkpoint_buffers": 100, "checkpoint_extra": 50, "embedding": 300}
    assert explain.explain(claim, row)[1] == words


def test_explain_flags_what_cannot_be_true():
    row = {"total": 7_615_616_512, "active": 7_615_616_512}
    diff, words, flag = explain.explain(333_312, row)  # huggingface_hub #4221's figure for a 7.6B model
    assert flag == "implausible_claim" and words.startswith("unexplained")
    assert explain.explain(1.8e308, row)[2] == "absurd_claim"
    assert explain.explain(10**15, row)[2] == "absurd_claim"


def test_csv_is_the_same_bytes_for_the_same_rows():
    rows = [rows_.complete({"source": "a", "total": 5, "bits_per_param": 16.0}), rows_.complete({"source": "b"})]
    assert rows_.to_csv(rows) == rows_.to_csv(json.loads(json.dumps(rows)))
    assert rows_.to_csv(rows).splitlines()[1].startswith("a,,5,,")


# --- hostile lists and folders, without a cluster --------------------------------------------


def test_a_list_that_never_ends_is_cut(tmp_path):
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    with pytest.raises(Exception, match="more than .* bytes; split it"):
        listing.read(tmp_path / "zero.txt")


def test_a_line_the_system_cannot_look_up_is_a_bad_row(tmp_path):
    (tmp_path / "list.txt").write_text(f"a/b\n{'x' * 10_000}\n~nosuchuser-hmp/x\n{'y' * 300}/z\n")
    got = listing.read(tmp_path / "list.txt")
    assert [s.kind for s in got] == ["hub", "bad", "bad", "bad"]
    assert all(len(s.source) <= listing.MAX_SOURCE + 1 for s in got)


def test_csv_lists_as_spreadsheets_write_them(tmp_path):
    (tmp_path / "a.csv").write_text('# my census\n"source","revision","hub_total"\n"a/b","main","12"\n')
    (got,) = listing.read(tmp_path / "a.csv")
    assert (got.hub_id, got.revision, got.hub_total) == ("a/b", "main", "12")
    (tmp_path / "b.csv").write_text('source,revision\n"a/b,main\nc/d,main\n')
    with pytest.raises(Exception, match="line 2: a quote is opened and not closed"):
        listing.read(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("source,source\na/b,c/d\n")
    with pytest.raises(Exception, match="named twice"):
        listing.read(tmp_path / "c.csv")
    (tmp_path / "d.txt").write_text("a/b@main # the base\nc/d\u2028e/f\n")
    assert [(s.source, s.revision) for s in listing.read(tmp_path / "d.txt")][0] == ("a/b", "main")


def test_a_claim_that_is_not_a_number_is_flagged_not_fatal():
    assert listing.claim("abc") == "abc"
    diff, words, flag = explain.explain("abc", {"total": 10})
    assert diff is None and flag == "absurd_claim" and "not a count" in words


def test_weights_that_are_not_regular_files_are_refused(tmp_path):
    import os

    from pipeline.census import fetch

    folder = _gpt2_folder(tmp_path / "m", "m")
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(Exception, match="not a regular file"):
        fetch.fetch(listing.source(1, str(folder)))
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to("/dev/zero")
    with pytest.raises(Exception, match="not a regular file"):
        fetch.fetch(listing.source(1, str(folder)))


def test_an_index_naming_a_file_outside_is_refused_in_words(tmp_path):
    from pipeline.census import fetch

    folder = _gpt2_folder(tmp_path / "m", "m")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    with pytest.raises(Exception, match="points outside"):
        fetch.fetch(listing.source(1, str(folder)))


def test_a_damaged_journal_is_counted_again(tmp_path):
    out = tmp_path / "out.csv"
    journal = journal_.Journal(out, every=1)
    journal.add("2\tc/d\tmain", {"source": "c/d", "total": 5}, {"revision": "", "content": "x"})  # written by it
    (journal.dir / "rows-x.jsonl").write_text("{}")
    (journal.dir / "rows-000001.jsonl").write_text(  # by hand: no MAC, or a wrong one
        json.dumps({"key": "1\ta/b\tmain", "row": {"source": "a/b", "total": "abc"}})
        + "\n"
        + json.dumps({"key": "3\te/f\tmain", "row": {"source": "e/f", "total": 7}, "mac": "0" * 64})
        + "\n"
    )
    loaded = journal_.Journal(out, every=1).load({"1\ta/b\tmain", "2\tc/d\tmain", "3\te/f\tmain"})
    assert loaded == {"2\tc/d\tmain": ({"source": "c/d", "total": 5}, {"revision": "", "content": "x"})}
    (tmp_path / "file.csv.partial").write_text("")
    with pytest.raises(Exception, match="journal's place holds a file"):
        journal_.Journal(tmp_path / "file.csv", 1).load(set())


@pytest.mark.parametrize("address", ["nonsense", "tcp://127.0.0.1", "http://127.0.0.1:80"])
def test_a_scheduler_address_that_is_not_one_is_one_line(address):
    with pytest.raises(Exception, match="not a Dask scheduler address"), run.client(address, 1, 1):
        pass


def test_the_list_is_never_the_output(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("a/b\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.hmp", "census", str(listed), "-o", str(listed)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "is the list itself" in proc.stderr
    assert (tmp_path / "list.txt").read_text() == "a/b\n"


def test_a_hub_that_does_not_answer_is_one_line_at_once(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("owner/a@main\nowner/b@main\n")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.hmp", "census", str(listed), "-o", str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0 and "cannot be reached" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.csv").exists()


# --- issue 27: the census never destroys what it does not own, never takes a planted row ---------------------------


def test_the_output_must_be_a_regular_file_or_a_new_path(tmp_path):
    (tmp_path / "real.csv").write_text("keep me\n")
    os.symlink(tmp_path / "real.csv", tmp_path / "link.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    for out, said in (
        (Path("/dev/null"), "is not a regular file or a new path"),
        (tmp_path / "fifo.csv", "is not a regular file or a new path"),
        (tmp_path / "link.csv", "is a symbolic link"),
    ):
        with pytest.raises(Exception, match=said):
            journal_.check_output(out)
    assert (tmp_path / "real.csv").read_text() == "keep me\n" and Path("/dev/null").is_char_device()
    journal_.check_output(tmp_path / "new.csv")
    journal_.check_output(tmp_path / "real.csv")


def test_a_linked_journal_is_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "rows-000000.jsonl").write_text("someone else's\n")
    os.symlink(elsewhere, tmp_path / "out.csv.partial")
    with pytest.raises(Exception, match="is a symbolic link"):
        journal_.check_output(tmp_path / "out.csv")
    journal_.Journal(tmp_path / "out.csv", 1).remove()
    assert (elsewhere / "rows-000000.jsonl").read_text() == "someone else's\n"


def _hmp_census(list_path: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli.hmp", "census", str(list_path), "-o", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_a_resume_takes_a_journalled_row_only_for_the_source_it_counted(tmp_path):
    from pipeline.census import fetch

    a, b, c = (_gpt2_folder(tmp_path / n, n) for n in ("a", "b", "c"))
    (tmp_path / "list.txt").write_text(f"{a}\n{b}\n{c}\n")
    out = tmp_path / "out.csv"
    journal = journal_.Journal(out, every=1)
    sources = listing.read(tmp_path / "list.txt")
    # a: journalled as counted, with its identity: kept. b: journalled, then its folder edited: counted again.
    # c: a row planted by hand with a total of its own, no MAC: counted again.
    for src in sources[:2]:
        journal.add(src.key, {"source": src.source, "total": 1}, journal_.identity_of(fetch.fetch(src)))
    journal.flush()
    (b / "config.json").write_text(json.dumps({**gpt2_config(**GPT2_SMALL), "_name_or_path": "edited", "n_layer": 12}))
    with (journal.dir / "rows-000009.jsonl").open("w") as fh:
        fh.write(json.dumps({"key": sources[2].key, "row": {"source": str(c), "total": 42}}) + "\n")
    proc = _hmp_census(tmp_path / "list.txt", out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["total"] for r in rows] == ["1", str(GPT2_SMALL_TOTAL), str(GPT2_SMALL_TOTAL)]
    assert "1 kept from the interrupted run" in proc.stdout and not journal.dir.exists()


def test_a_short_census_runs_in_this_process_and_escapes_formulas(tmp_path):
    a = _gpt2_folder(tmp_path / "a", "a")
    (tmp_path / "list.txt").write_text(f'{a}\n=HYPERLINK("http://x","y")\n+1+1\n')
    proc = _hmp_census(tmp_path / "list.txt", tmp_path / "out.csv")
    assert proc.returncode == 0, proc.stderr
    assert "built in this process" in proc.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert int(rows[0]["total"]) == GPT2_SMALL_TOTAL
    assert rows[1]["source"] == '\'=HYPERLINK("http://x","y")' and rows[2]["source"] == "'+1+1"
    assert rows[1]["error"] and rows[2]["error"]


def test_a_folder_is_listed_not_walked(tmp_path):
    from pipeline.census import fetch

    big = tmp_path / "home"
    (big / "deep" / "deeper").mkdir(parents=True)
    (big / "deep" / "deeper" / "model.gguf").write_bytes(b"GGUF")
    assert fetch._listed(big) == []  # a GGUF file below the folder is not the folder's
    for i in range(fetch.MAX_LISTED + 1):
        (big / f"f{i}").touch()
    with pytest.raises(Exception, match="entries; not a checkpoint folder"):
        fetch._listed(big)


def test_a_long_census_says_where_it_is_when_no_bar_is_drawn(capsys, monkeypatch):
    from pipeline.core import progress

    monkeypatch.delenv("HMP_PROGRESS", raising=False)  # stderr here is not a terminal: tqdm draws nothing
    with progress.bar(None, "census", "repos", total=3) as bar:
        ticker = progress.Ticker(bar, "census", "sources", 3, every=0)
        for _ in range(3):
            ticker.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == [line for line in lines[:2] if line.startswith("census: ")] and len(lines) == 2
    assert lines[0].startswith("census: 1 of 3 sources done")
