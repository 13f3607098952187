"""One question, one piece of work: `hmp count` of a safetensors folder resolves the model's class once, builds it
on the meta device once, and parses each header once, handing them on to the tie evidence (issue 28)."""

from __future__ import annotations

import pytest

from pipeline import formats
from pipeline.answers import count
from pipeline.formats import safetensors_file
from pipeline.model import build
from tests.support.calls import counting
from tests.support.checkpoints import tiny_checkpoint


@pytest.mark.parametrize("tied", [True, False], ids=["tied: the course's check loads it", "untied: streamed"])
def test_a_folder_is_resolved_built_and_read_once(tmp_path, monkeypatch, tied):
    shards = 3
    folder = tiny_checkpoint(tmp_path / "tiny", tied=tied, shards=shards)
    safetensors_file.forget()
    before = safetensors_file.parses
    resolved = counting(monkeypatch, build, "model_class")
    built = counting(monkeypatch, build, "build_meta_reading")
    loads = counting(monkeypatch, formats, "load")

    got = count.count(str(folder))

    assert got.summary["checkpoint_tensors"] is not None and got.tie["pearson_r"] is not None
    assert (got.tie["structural_tied"], got.tie["method"].startswith("streamed")) == (tied, not tied)
    assert len(resolved) == 1, f"the class was resolved {len(resolved)} times"
    assert len(built) == 1, f"the architecture was built {len(built)} times"
    assert len(loads) == 1, f"the weight files were loaded {len(loads)} times"
    assert safetensors_file.parses - before == shards, "each shard's header is parsed once"
