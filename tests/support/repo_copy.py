"""A fresh git repository holding this repository's tracked files as they are in the working tree.

Used by the DVC integration tests and the benchmarks, so both run the real `dvc` on the current code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The environment DVC runs in: this interpreter's bin first (stage commands say `python`), a git
# identity for `dvc exp run`, no analytics and no Hub.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
}
ENV.pop("PYTHONPATH", None)


def sh(*args: str, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd, **kw)


def copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-qm", "copy", cwd=dest)
    return dest
