"""Value statistics and histograms of every tensor of a checkpoint, by value group, role and component."""

from __future__ import annotations

from pathlib import Path

from pipeline.formats.entries import Entry
from pipeline.model import reconcile
from pipeline.values.moments import Histogram, Moments
from pipeline.values.reader import CHUNK_ELEMENTS, Reader, readable

# Value groups for the histograms: what the course calls weights and biases, and the norm gains apart.
VALUE_GROUPS = {
    "matrix": "weights",
    "embedding": "weights",
    "bias": "biases",
    "norm_bias": "biases",
    "norm_gain": "norm_gains",
    "attention_sink": "attention_sinks",
    "conv_kernel": "weights",  # a convolution's kernel is a weight tensor like a matrix
    "state_space": "state_space",  # A_log and the step-size biases: logs and offsets, not weights
    "scalar": "scales",
    "scale": "scales",
}


STAT_COLUMNS = ["model", "by", "group", "count", "mean", "std", "min", "max", "l2"]


HIST_COLUMNS = ["model", "group", "every", "bin_left", "bin_right", "count"]


def distributions(
    folder: Path,
    entries: list[Entry],
    params_inv,
    name: str,
    bins: int,
    chunk_elements: int = CHUNK_ELEMENTS,
    threads: int = 2,
    scales: dict | None = None,
    every: int = 1,
):
    """(statistics, histograms) DataFrames of a model's parameter values, in one pass over its tensors.

    params_inv holds the parameter rows of the inventory (a tied tensor once), with checkpoint keys.
    Statistics by role, component, value group and overall, from every value; histograms by value group
    (none if bins is 0) of every `every`-th value of each tensor.
    Tensors are spread over `threads` workers (torch kernels release the GIL); each tensor's moments
    come from one worker and are merged in inventory order, so the result does not depend on scheduling.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    patterns = reconcile.expert_patterns(e.key for e in entries)  # once per checkpoint, not once per tensor
    by_key = {e.key: e for e in entries}
    first = params_inv["checkpoint_key"].str.split(";").str[0]
    unreadable = first.map(lambda k: k in by_key and not readable(by_key[k], scales)).to_numpy(dtype=bool)
    # packed or integer-coded weights are not read as numbers: counted apart, one row per stored dtype
    skipped = params_inv[unreadable].assign(stored=first[unreadable].map(lambda k: by_key[k].dtype))
    rows = list(params_inv[~unreadable].itertuples(index=False))
    local = threading.local()
    workers: list[tuple[Reader, dict[str, Histogram]]] = []

    def one(row) -> Moments:
        if not hasattr(local, "reader"):
            local.reader, local.hists = Reader(folder, entries, chunk_elements, scales), {}
            workers.append((local.reader, local.hists))
        group = VALUE_GROUPS[row.role]
        hist = local.hists.setdefault(group, Histogram(every)) if bins > 0 else None
        m = Moments()
        # a tied tensor stored twice is read once; a parameter merged from per-expert tensors is read from all
        keys = reconcile.source_keys(row.checkpoint_key, patterns) if "*" in row.checkpoint_key else []
        for key in keys or [row.checkpoint_key.split(";")[0]]:
            if hist is not None:
                hist.begin()
            for chunk in local.reader.chunks(key):
                m.merge(Moments.of(chunk))
                if hist is not None:
                    hist.add(chunk)
        return m

    from pipeline.core import progress

    before = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else before)  # parallel over tensors, not inside each kernel
    try:
        order = sorted(range(len(rows)), key=lambda i: -rows[i].numel)  # big tensors first balance the workers
        with (
            progress.bar(None, f"{name}: values", "values", total=sum(int(r.numel) for r in rows)) as shown,
            ThreadPoolExecutor(max_workers=max(threads, 1)) as pool,
        ):

            def tracked(i: int) -> Moments:
                m = one(rows[i])
                shown.update(int(rows[i].numel))
                return m

            done = dict(zip(order, pool.map(tracked, order), strict=True))
    finally:
        torch.set_num_threads(before)

    return _tables(name, rows, done, [h for _, h in workers], skipped, every)


def _tables(name: str, rows: list, done: dict[int, Moments], hist_sets: list[dict], skipped, every: int):
    """(statistics, histograms) DataFrames: each tensor's moments merged in inventory order (deterministic sums),
    by all, value group, role and component; the workers' histograms merged by value group."""
    import pandas as pd

    stats: dict[tuple[str, str], Moments] = {}
    for i, row in enumerate(rows):  # merged in inventory order: deterministic sums
        group = VALUE_GROUPS[row.role]
        for key in (("all", "all"), ("role", row.role), ("component", row.component), ("group", group)):
            stats.setdefault(key, Moments()).merge(done[i])
    hists: dict[str, Histogram] = {}
    for hs in hist_sets:
        for g, h in hs.items():
            if g not in hists:
                hists[g] = Histogram(every)
            hists[g].merge(h)
    rank = {"all": 0, "group": 1, "role": 2, "component": 3}
    stat_rows = [
        {"model": name, "by": by, "group": group, **m.row()}
        for (by, group), m in sorted(stats.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1]))
    ]
    stat_rows += [
        {"model": name, "by": "skipped", "group": dtype, "count": int(part["numel"].sum())}
        for dtype, part in sorted(skipped.groupby("stored"), key=lambda kv: kv[0])
    ]
    hist_rows = [{"model": name, "group": g, "every": every, **r} for g in sorted(hists) for r in hists[g].rows()]
    return pd.DataFrame(stat_rows, columns=STAT_COLUMNS), pd.DataFrame(hist_rows, columns=HIST_COLUMNS)
