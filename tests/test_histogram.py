"""The value histogram: exact counts per bfloat16 bucket, checked against numpy's own float bits, and re-binned."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from pipeline import figures, values


def test_every_value_lands_in_the_bucket_of_its_top_16_bits():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.02, 10_000), np.ones(300), np.zeros(50), -np.ones(7), [np.inf, np.nan]])
    x = x.astype(np.float32)
    h = values.Histogram()
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
    h = values.Histogram()
    h.add(torch.randn(100_000) * 0.02)
    rows = pd.DataFrame(h.rows()).assign(model="m", group="weights")
    gains = values.Histogram()
    gains.add(torch.ones(64))
    rows = pd.concat([rows, pd.DataFrame(gains.rows()).assign(model="m", group="norm_gains")])
    data = figures.rebinned(rows, bins=50)
    w = data[data["group"] == "weights"]
    assert len(w) == 50 and w["value"].min() > -0.1 and w["value"].max() < 0.1  # std 0.02: its own range
    width = w["value"].diff().iloc[1]
    assert math.isclose((w["density"] * width).sum(), 1 - w["outside"].iloc[0], rel_tol=1e-9)
    assert data.loc[data["group"] == "norm_gains", "single"].iloc[0] == 1.0  # one value, said so
