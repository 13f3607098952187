"""What the parameters compute: FLOPs per token of a forward and a training step for the sweep's models
(results/flops.csv), beside the 6N everyone quotes, and against the context."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import legend_outside, plain_log_ticks, setup
from pipeline.report.text import md_table


def section(d: Data) -> Section:
    if d.flops.empty:
        return Section("")
    top = d.flops.loc[d.flops.groupby("model", sort=False)["context"].idxmax()]
    rows = []
    for _, r in top.iterrows():
        forward, training, six = (int(r[k]) for k in ("forward_flops_per_token", "training_flops_per_token",
                                                      "six_n_flops_per_token"))  # fmt: skip
        share = f"{int(r['attention_scores']) / forward:.1%}"
        if int(r.get("source_tokens") or 0):  # an encoder-decoder: per token of both; its decoder's share
            t, n = int(r["context"]), int(r["source_tokens"])
            target = (forward * (t + n) - n * int(r["per_source_token"])) / t  # its decoder's, per target token
            share = f"{int(r['attention_scores']) / target:.1%} of the decoder's (source {int(r['source_tokens']):,})"
        rows.append([
            f"`{r['model']}`", f"{int(r['context']):,}", f"{forward:,}", share, f"{training:,}", f"{six:,}",
            f"{six / training - 1:+.1%}",
            "FlopCounterMode agrees" if r["measured"] and not int(r["other_products"]) else
            "FlopCounterMode" if r["measured"] else "closed form",
        ])  # fmt: skip
    text = "\n".join(
        [
            "## What the parameters compute",
            "",
            "FLOPs per token at each model's context (`results/flops.csv`; `hmp flops` prints any model by component, "
            "with every other convention and the MFU of a measured throughput): 2 FLOPs per multiply-add of every "
            "matrix a token passes through, the tied output head included, plus the attention's scores and weighted "
            "values over the whole context (4 · T · d per layer, as FlopCounterMode and PaLM count them). Each figure "
            "is the closed form from the exact inventory; FlopCounterMode over the model's own forward on fake tensors "
            "is held equal to it. Training is the forward and its backward (3 ×); 6N counts every parameter, the "
            "embedding's lookup included, and no attention. An encoder-decoder's figure is per token of its source "
            "and its target together.",
            "",
            md_table(
                [
                    "model",
                    "context",
                    "forward FLOPs / token",
                    "attention",
                    "training FLOPs / token",
                    "6N",
                    "6N vs exact",
                    "checked",
                ],
                rows,
                "lrrrrrrl",
            ),  # fmt: skip
            "",
            f"![FLOPs per token against context]({d.link('flops.png')})",
            "",
        ]
    )
    return Section(text, [Figure(against_context, (d.flops,), "flops.png")])


def against_context(flops: pd.DataFrame, path: Path, dpi: int) -> None:
    """Log-log: forward FLOPs per token against the context per model; the attention's share grows with it."""
    import matplotlib.ticker as mticker

    plt, sns = setup()
    data = flops.assign(gflops=flops["forward_flops_per_token"].astype(float) / 1e9)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=data, x="context", y="gflops", hue="model", marker="o", markersize=3, ax=ax,
                 palette="colorblind")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    legend_outside(fig, ax, "context (tokens)", "Forward FLOPs per token against context", path, dpi,
                   ylabel="GFLOPs per token")  # fmt: skip
