"""The benchmarks' measuring code (benchmarks/measure.py): a child's own peak memory, spreads, the load line."""

from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import measure  # noqa: E402

MIB = 1024 * 1024

# Allocates and touches `mib` MiB, prints how many bytes it holds.
ALLOCATE = """
import sys
block = b"\\x01" * (int(sys.argv[1]) * 1024 * 1024)
print(len(block))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM needs /proc (Linux)")
def test_a_child_reports_its_own_peak_not_its_parents():
    parent = b"\x01" * (600 * MIB)  # touched: a repeated byte is written out with memset
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= 600, "the parent must hold 600 MiB"
    run = measure.run_python(["-c", ALLOCATE, "100"])
    del parent
    assert run.stdout == str(100 * MIB)
    # The child's own peak: 100 MiB plus the interpreter (~10 MiB). A figure inherited from the parent is ≥ 600.
    assert 100 <= run.peak_mib < 250, run.peak_mib
    assert run.seconds > 0


def test_a_module_runs_as_main_with_its_arguments(tmp_path):
    (tmp_path / "echo_args.py").write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv[1:])\n")
    run = measure.run_python(["-m", "echo_args", "a", "b"], cwd=tmp_path)
    assert run.stdout == "['a', 'b']"
    assert 0 < run.peak_mib < 100


def test_a_failing_child_stops_the_benchmark_with_its_error():
    with pytest.raises(SystemExit, match="ZeroDivisionError"):
        measure.run_python(["-c", "1 / 0"])


def test_spread_is_median_then_min_and_max():
    assert measure.spread([3.0, 1.0, 2.5]) == "2.50 [1.00–3.00]"
    assert measure.spread([380.4], ".0f") == "380 [380–380]"


def test_the_load_lines_give_load_cores_python_and_the_cpu_others_used():
    load = measure.MachineLoad()
    assert re.fullmatch(r"load average: [\d.]+ [\d.]+ [\d.]+ · cores: \d+( \(of \d+\))? · python 3\.\d+\.\d+\S*",
                        load.header)  # fmt: skip
    measure.run_python(["-c", "sum(range(3_000_000))"])  # a child's CPU is this benchmark's, not others'
    during = load.during()
    assert during.startswith("load average after the runs: ")
    if sys.platform.startswith("linux"):
        assert re.search(r"other processes kept [\d.]+ of \d+ cores busy over the \d+ s$", during), during


def test_the_gguf_benchmark_runs_in_a_quick_mode():
    """benchmarks/bench_gguf.py, one run on a 4,096-token vocabulary: every row printed, its scratch files removed."""
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[2]
    before = set(Path(tempfile.gettempdir()).glob("bench-gguf-*"))
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks/bench_gguf.py"), "--runs", "1", "--vocab", "4096"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("hmp count FILE --json", "gguf.GGUFReader(FILE)", "transformers load_gguf_checkpoint(FILE)"):
        assert row in out
    assert "what the 4,096-token vocabulary adds to hmp count: " in out
    assert set(Path(tempfile.gettempdir()).glob("bench-gguf-*")) == before  # nothing left behind
