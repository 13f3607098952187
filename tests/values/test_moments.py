"""The value histogram: exact counts per bfloat16 bucket, checked against numpy's own float bits, and re-binned."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from pipeline.report.plotdata import rebinned
from pipeline.values import moments


def test_every_value_lands_in_the_bucket_of_its_top_16_bits():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.02, 10_000), np.ones(300), np.zeros(50), -np.ones(7), [np.inf, np.nan]])
    x = x.astype(np.float32)
    h = moments.Histogram()
    for part in np.array_split(x, 7):  # chunking must not matter
        h.add(torch.from_numpy(part.copy()))
    rows = pd.DataFrame(h.rows())
    finite = rows[rows["bin_left"].notna()]
    # Oracle: numpy's view of the same bits, truncated to bfloat16 toward zero
    tops = (x[np.isfinite(x)].view(np.uint32) >> 16).astype(np.uint32)
    expected = pd.Series(tops).value_counts()
    assert finite["count"].sum() == np.isfinite(x).sum() and len(finite) == len(expected)
    assert rows.loc[rows["bin_left"].isna(), "count"].item() == 2  # inf and nan, counted apart
    one = finite[(finite["bin_left"] == 1.0)]
    assert one["count"].item() == 300 and one["bin_right"].item() == 1.0 + 2**-7  # [1, 1 + 1/128)
    minus_one = finite[(finite["bin_right"] == -1.0)]
    assert minus_one["count"].item() == 7 and minus_one["bin_left"].item() == -(1.0 + 2**-7)
    assert (finite["bin_left"] < finite["bin_right"]).all() and finite["bin_left"].is_monotonic_increasing


def test_rebinned_over_each_groups_own_range():
    h = moments.Histogram()
    h.add(torch.randn(100_000) * 0.02)
    rows = pd.DataFrame(h.rows()).assign(model="m", group="weights")
    gains = moments.Histogram()
    gains.add(torch.ones(64))
    rows = pd.concat([rows, pd.DataFrame(gains.rows()).assign(model="m", group="norm_gains")])
    data = rebinned(rows, bins=50)
    w = data[data["group"] == "weights"]
    assert len(w) == 50 and w["value"].min() > -0.1 and w["value"].max() < 0.1  # std 0.02: its own range
    width = w["value"].diff().iloc[1]
    assert math.isclose((w["density"] * width).sum(), 1 - w["outside"].iloc[0], rel_tol=1e-9)
    assert data.loc[data["group"] == "norm_gains", "single"].iloc[0] == 1.0  # one value, said so


def test_every_kth_value_of_each_tensor_whatever_the_chunking():
    rng = np.random.default_rng(1)
    tensors = [rng.normal(0, 0.02, n).astype(np.float32) for n in (1000, 37, 5, 4097)]
    for every in (1, 3, 8):
        h = moments.Histogram(every)
        for x in tensors:
            h.begin()
            for part in np.array_split(x, 6):  # uneven chunks, some shorter than the stride
                h.add(torch.from_numpy(part.copy()))
        got = pd.DataFrame(h.rows()).set_index("bin_left")["count"]
        # Oracle: numpy slices each tensor from its first value, then the same bucket rule
        picked = np.concatenate([x[::every] for x in tensors])
        tops = pd.Series((picked.view(np.uint32) >> 16).astype(np.uint32)).value_counts()
        assert got.sum() == len(picked) == sum(-(-len(x) // every) for x in tensors)
        assert sorted(got.to_numpy()) == sorted(tops.to_numpy())


def test_merged_histograms_count_what_each_held():
    x = torch.randn(10_000)
    one, two, merged = moments.Histogram(), moments.Histogram(), moments.Histogram()
    one.add(x[:3000])
    two.add(x[3000:])
    merged.merge(one)
    merged.merge(two)
    merged.merge(moments.Histogram())  # an empty one adds nothing
    whole = moments.Histogram()
    whole.add(x)
    assert merged.rows() == whole.rows() and sum(r["count"] for r in whole.rows()) == 10_000
