"""Every benchmark (benchmarks/bench_*.py) runs to the end in its --quick mode: tiny sizes, one run.

A benchmark is not run by the rest of the suite, so a change to the code it calls could break it unnoticed (issue
27: bench_values.py stopped with a NameError after a restructuring). Here each one runs as `make bench` runs it, in
its own process, with --quick: the same table, every code path, the targets that hold only at full size not
checked, its own correctness checks (the counts agree) still made. And every benchmark must have a --quick mode.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
TIMEOUT = 900  # seconds; each takes about 10–100 s on 2 cores


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 8, [p.name for p in BENCHMARKS]


@pytest.mark.parametrize("script", BENCHMARKS, ids=ids(BENCHMARKS))
def test_every_benchmark_has_a_quick_mode(script):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listed = re.search(r"^\s+--quick\b", done.stdout, re.MULTILINE)
    assert listed, f"{script.name} --help lists no --quick:\n{done.stdout}"


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """The synthetic checkpoints' folder (HMP_BENCH_CACHE), shared by the benchmarks of this session."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=ids(BENCHMARKS))
def test_benchmark_runs_in_quick_mode(script, bench_cache, tmp_path):
    # TMPDIR: what a benchmark leaves in its temp folders stays under pytest's, which pytest prunes
    env = _env(HMP_BENCH_CACHE=str(bench_cache), TMPDIR=str(tmp_path))
    try:
        done = subprocess.run(
            [sys.executable, str(script), "--quick"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script.name} --quick ran past {TIMEOUT} s:\n{_tail(exc.stdout)}\n{_tail(exc.stderr)}")
    assert done.returncode == 0, (
        f"{script.name} --quick exited {done.returncode}\n--- stdout (tail) ---\n{_tail(done.stdout)}\n"
        f"--- stderr (tail) ---\n{_tail(done.stderr)}"
    )
    assert done.stdout.strip(), f"{script.name} --quick printed nothing\n{_tail(done.stderr)}"
    assert done.stdout.startswith("load average: "), _tail(done.stdout)  # every benchmark's table starts so


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]
