"""The stages' per-model cache: entries round-trip exactly, and a bad entry is a miss, never trusted or fatal."""

from __future__ import annotations

import json
import logging
import os

import pandas as pd
import pytest

from pipeline.core import atomic, memo


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["a", "b", "c"],
            "total": [124_439_808, 671_026_419_200, 1],
            "share": [0.000821, float("nan"), 1 / 3],
            "stated": pd.array([117_000_000, None, 3], dtype="Int64"),
            "tied": [True, False, True],
            "note": ["x", None, "y, with a comma"],
            "mixed": [1, "two", 3.5],
        }
    )


def test_a_frame_round_trips_to_the_same_csv_bytes():
    df = _frame()
    back = memo.frame_from_plain(json.loads(memo.dumps(memo.frame_to_plain(df))))
    assert list(back.dtypes.astype(str)) == list(df.dtypes.astype(str))
    assert atomic.csv_text(back) == atomic.csv_text(df)
    assert atomic.csv_text(pd.concat([back, back])) == atomic.csv_text(pd.concat([df, df]))


def test_put_then_get_returns_what_was_put(tmp_path):
    cache = memo.Memo(tmp_path, "count")
    key = cache.key("model entry", {"n_layer": 2})
    assert cache.get(key) is None and cache.misses == 1
    stored = cache.put(key, {"row": {"total": 5, "share": 0.5, "name": None}})
    assert cache.get(key) == stored == {"row": {"total": 5, "share": 0.5, "name": None}}
    assert cache.hits == 1
    assert cache.key("model entry", {"n_layer": 2}) == key != cache.key("model entry", {"n_layer": 3})
    assert memo.Memo(tmp_path, "bias").key("model entry", {"n_layer": 2}) != key  # each stage its own keys


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # cut short (a full disk, a killed copy)
        lambda text: "not json at all",
        lambda text: text.replace('"total":5', '"total":6'),  # the payload changed: its checksum no longer agrees
        lambda text: json.dumps({**json.loads(text), "key": "0" * 64}),  # another key's entry
        lambda text: json.dumps([1, 2, 3]),
        lambda text: "\udcff",  # not UTF-8
    ],
)
def test_a_damaged_entry_is_a_miss_with_a_warning(tmp_path, caplog, damage):
    cache = memo.Memo(tmp_path, "count")
    key = cache.key("m")
    cache.put(key, {"total": 5})
    path = tmp_path / "count" / f"{key}.json"
    path.write_bytes(damage(path.read_text()).encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="memo"):
        assert cache.get(key) is None
    assert "recomputing" in caplog.text
    cache.put(key, {"total": 5})  # the recomputed result replaces it
    assert cache.get(key) == {"total": 5}


def test_a_payload_that_does_not_decode_is_a_miss(tmp_path):
    cache = memo.Memo(tmp_path, "count")
    key = cache.key("m")
    cache.put(key, {"columns": ["a"], "dtypes": ["int64"], "data": [[1, 2]]})  # ragged: its checksum is right
    assert cache.fetch(key, memo.frame_from_plain) is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_an_unwritable_cache_never_fails_the_stage(tmp_path):
    (tmp_path / "count").write_text("a file where the folder should be")
    cache = memo.Memo(tmp_path, "count")
    assert cache.put(cache.key("m"), {"total": 5}) == {"total": 5}
    assert cache.get(cache.key("m")) is None


def test_prune_keeps_the_most_recently_used(tmp_path):
    cache = memo.Memo(tmp_path, "count")
    keys = [cache.key(i) for i in range(5)]
    for i, key in enumerate(keys):
        cache.put(key, i)
        os.utime(tmp_path / "count" / f"{key}.json", (1_000_000 + i, 1_000_000 + i))
    cache.prune(keep=2)
    assert sorted(p.stem for p in (tmp_path / "count").iterdir()) == sorted(keys[3:])
