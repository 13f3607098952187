"""A checkpoint format is one module behind one interface (pipeline/formats/base.py): a toy format, one module
(tests/support/toy_format.py) and one register() call, is counted through `hmp count`'s library call, the
download stage and the census, exactly as the same weights are counted from safetensors."""

from __future__ import annotations

import sys

import pytest
import yaml
from safetensors.numpy import load_file

from pipeline import formats
from pipeline.answers import count
from pipeline.census import listing, run
from pipeline.core import params
from pipeline.formats import base
from pipeline.model.count import count_folder
from pipeline.stages import download
from tests.conftest import tiny_params
from tests.support import toy_format
from tests.support.checkpoints import tiny_checkpoint


@pytest.fixture
def toy():
    base.register(toy_format.FORMAT)
    try:
        yield toy_format.FORMAT
    finally:
        base.unregister(toy_format.FORMAT.name)


def _toy_folder(tmp_path, tied: bool):
    """The same tiny GPT-2 as safetensors (its reference count) and as a .toy file beside its config.json."""
    reference = tiny_checkpoint(tmp_path / "st", tied=tied, masks=False)
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "config.json").write_text((reference / "config.json").read_text())
    toy_format.write(folder / "weights.toy", load_file(str(reference / "model.safetensors")))
    return reference, folder


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_hmp_count_reads_a_registered_format(tmp_path, toy, tied):
    reference, folder = _toy_folder(tmp_path, tied)
    got = count.count(str(folder))
    want = count.count(str(reference))
    assert got.summary["total"] == want.summary["total"] > 0
    assert got.summary["checkpoint_tensors"] == want.summary["checkpoint_tensors"]
    assert got.tie["pearson_r"] == pytest.approx(want.tie["pearson_r"], abs=1e-6)  # chunks fall on other offsets
    assert got.tie["max_abs_diff"] == pytest.approx(want.tie["max_abs_diff"])
    if tied:
        assert "toy checkpoint" in got.tie["method"] and got.tie["pearson_r"] == pytest.approx(1.0)


def test_the_download_stage_links_and_counts_a_registered_format(tmp_path, workdir, monkeypatch, toy):
    reference, folder = _toy_folder(tmp_path, tied=True)
    data = tiny_params({"t": {"source": "path", "path": str(folder)}, "s": {"source": "path", "path": str(reference)}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download"])
    download.main()
    models = params.load().models
    linked = sorted(p.name for p in (workdir / "data/models/t").iterdir())
    assert "weights.toy" in linked and formats.load(workdir / "data/models/t", "t").fmt == "toy"
    toy_row = count_folder(models["t"], workdir / "data/models/t").row
    st_row = count_folder(models["s"], workdir / "data/models/s").row
    assert toy_row["total"] == st_row["total"] and toy_row["checkpoint_tensors"] == st_row["checkpoint_tensors"]


def test_without_its_registration_the_folder_has_no_weights(tmp_path):
    _, folder = _toy_folder(tmp_path, tied=True)
    assert formats.weights_beside_config(folder) == ([], "")


def test_the_census_reads_a_registered_format_by_its_header_prefix(tmp_path, toy):
    reference, folder = _toy_folder(tmp_path, tied=False)
    list_path = tmp_path / "list.txt"
    list_path.write_text(f"{folder}\n{reference}\n")
    done = run.census(listing.read(str(list_path)), tmp_path / "out.csv", 1, 2, None)
    toy_row, st_row = done.rows
    assert not toy_row["error"] and not st_row["error"], (toy_row["error"], st_row["error"])
    assert toy_row["format"] == "toy" and st_row["format"] == "safetensors"
    assert toy_row["total"] == st_row["total"] and toy_row["checkpoint_tensors"] == st_row["checkpoint_tensors"]
    assert toy_row["bytes_fetched"] < (folder / "weights.toy").stat().st_size, "only the header prefix is read"
