"""Outputs appear whole or not at all."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from pipeline.core import atomic
from pipeline.core.errors import PipelineError


def test_write_csv_is_stable_and_leaves_no_temp_files(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "share": [1 / 3, 2 / 3]})
    atomic.write_csv(tmp_path / "x.csv", df)
    assert (tmp_path / "x.csv").read_text() == "a,share\n1,0.3333333333\n2,0.6666666667\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.csv"
    target.write_text("old\n")

    def boom(src, dst):
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(PipelineError, match="killed mid-write"):
        atomic.write_text(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def write_dir(path, files: dict) -> None:
    with atomic.replacing_dir(path) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def test_write_dir_replaces_the_folder_whole(tmp_path):
    folder = tmp_path / "m"
    write_dir(folder, {"a": b"1", "b": b"2"})
    write_dir(folder, {"c": b"3"})
    assert sorted(p.name for p in folder.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_write_dir_failure_leaves_the_old_folder(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    write_dir(folder, {"a": b"1"})
    with pytest.raises(TypeError):
        write_dir(folder, {"b": None})  # fails while building the temp folder
    assert sorted(p.name for p in folder.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pipeline.core import atomic
calls = []
real = os.replace
def replace(src, dst):
    real(src, dst)
    calls.append(dst)
    if len(calls) == 2 and str(dst).endswith(".csv"):  # the journal, then the first output: killed here
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
with atomic.batch():
    atomic.write_text("a.csv", "new a\\n")
    atomic.write_text("b.csv", "new b\\n")
"""


def test_a_run_killed_between_two_renames_is_finished_by_the_next(tmp_path):
    """SIGKILL after the first of two renames: the next reader completes the batch, never mixes old and new."""
    import signal
    import subprocess
    import sys

    (tmp_path / "a.csv").write_text("old a\n")
    (tmp_path / "b.csv").write_text("old b\n")
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES], cwd=tmp_path, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "a.csv").read_text() == "new a\n" and (tmp_path / "b.csv").read_text() == "old b\n"
    assert (tmp_path / atomic.JOURNAL).is_file()
    done = subprocess.run(
        [sys.executable, "-c", "from pipeline.core import atomic; atomic.recover()"], cwd=tmp_path, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.csv").read_text() == "new a\n" and (tmp_path / "b.csv").read_text() == "new b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]  # no journal, no temp file left
