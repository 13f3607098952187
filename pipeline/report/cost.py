"""What it costs: memory per dtype, training, the KV cache and compute, and what the parameters buy (the GPT-2
paper's own numbers)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.cost import estimates
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, legend_outside, log_log, plain_log_ticks, setup
from pipeline.report.text import gib, human, md_table, whole


def adam_label(cfg: params.Params) -> str:
    return f"training, mixed-precision Adam ({cfg.cost['adam_bytes_per_param']} B/param)"


def cost_section(
    cfg: params.Params,
    summary: pd.DataFrame,
    costs: pd.DataFrame,
    grid: pd.DataFrame,
    published: pd.DataFrame,
    figs: dict,
) -> str:
    wide = costs.pivot(index="model", columns="quantity", values="value").loc[list(cfg.models)]
    state = wide.get("state_bytes_per_sequence_bfloat16")
    cross = wide.get("cross_attention_kv_bytes_per_input_token_bfloat16")
    # columns for what only some families keep: a state-space state, an encoder-decoder's cross-attention
    extra = [
        (label, column)
        for label, column, values in (
            ("state / sequence", "state_bytes_per_sequence_bfloat16", state),
            ("cross-attn KV / input token", "cross_attention_kv_bytes_per_input_token_bfloat16", cross),
        )
        if values is not None and (values.fillna(1) != 0).any()
    ]
    rows = [_cost_row(name, c, extra) for name, c in wide.iterrows()]
    adam = int(cfg.cost["adam_bytes_per_param"])
    bf16 = 2 * grid["params"]
    out = [
        "## What it costs",
        "",
        f"From the exact counts, with no weights loaded (`results/cost.csv`, one row per model and quantity, each "
        f"with its definition). Training memory is mixed-precision Adam at {adam} bytes per parameter (ZeRO), "
        "activations not included. The KV cache is what one token adds in bfloat16, and its size for "
        + (f"{int(cfg.cost['context']):,} tokens" if int(cfg.cost["context"]) else "each model's full context")
        + f" and a batch of {int(cfg.cost['batch'])} (sliding-window layers hold at most their window; latent "
        "attention caches its latent and rotary key; only the stack that generates caches: vision towers and "
        "encoders add nothing, a state-space layer keeps a fixed state per sequence instead, an encoder-decoder's "
        "cross-attention caches the encoder's output once per input token). FLOPs per token follow Kaplan et al.: "
        "2N + 2·n_layer·n_ctx·d_attn, N the non-embedding parameters one token uses, at that context.",
        "",
        md_table(
            [
                "model",
                "float32",
                "bfloat16",
                "int8",
                "int4",
                "largest layer",
                "training",
                "KV / token",
                "KV at context",
                "FLOPs / token",
                *(label for label, _ in extra),
            ],  # fmt: skip
            rows,
        ),
        "",
        "The largest layer follows accelerate's definition (a module with no children, or a whole block the "
        "model says must not be split); accelerate's totals also count buffers such as position ids and rotary "
        "frequencies, which are not parameters and are left out here.",
        "",
        f"Across the what-if grid ({len(grid)} GPT-2-shaped models), bfloat16 weights run from {gib(bf16.min())} to "
        f"{gib(bf16.max())} and training memory from {gib(adam * grid['params'].min())} to "
        f"{gib(adam * grid['params'].max())}.",
        "",
        f"![Memory per dtype and for training]({figs['cost']})",
        "",
    ]
    return "\n".join(out + _published_lines(summary, published, figs["published"]))


def _cost_row(name: str, c: pd.Series, extra: list[tuple[str, str]]) -> list[str]:
    """One model's row of the cost table."""
    return [
        f"`{name}`",
        *(gib(c[f"weights_bytes_{d}"]) for d in ("float32", "bfloat16", "int8", "int4")),
        gib(c["largest_layer_bytes_float32"]),
        gib(c["train_adam_mixed_bytes"]),
        f"{whole(c['kv_cache_bytes_per_token_bfloat16'])} B",
        gib(c["kv_cache_bytes_at_context"]) if c["kv_cache_bytes_at_context"] else "—",
        "—" if pd.isna(c["forward_flops_per_token"]) else f"{c['forward_flops_per_token'] / 1e9:,.2f} G",
        *(
            "unknown" if pd.isna(c[col]) else gib(c[col]) if "state" in col and c[col] else f"{whole(c[col])} B"
            for _, col in extra
        ),
    ]


def _published_lines(summary: pd.DataFrame, table: pd.DataFrame, fig: str) -> list[str]:
    """What the parameters buy, by the GPT-2 paper's zero-shot numbers (paths.published), against the exact counts."""
    present = table[table["model"].isin(summary.index)]
    if present["model"].nunique() < 2:
        return [
            "What the parameters buy: the GPT-2 paper's zero-shot results need at least two GPT-2 sizes in the "
            "sweep to set against their exact counts (the default sweep has all four).",
            "",
        ]
    lines = [
        "### What the parameters buy (the paper's numbers, not measured here)",
        "",
        f"The GPT-2 paper's zero-shot perplexities ({present['source'].iloc[0]}) against each size's exact "
        "non-embedding parameters. A power law loss = c·N^−α (loss = ln perplexity) is fitted per benchmark "
        f"over the sizes in the sweep and set beside Kaplan et al.'s α_N ≈ {estimates.KAPLAN_ALPHA_N} (their fit of "
        "test loss on WebText2; these are other datasets, zero-shot, so only the order of magnitude compares).",
        "",
    ]
    for bench, part in present.groupby("benchmark", sort=False):
        n = [float(summary.loc[m, "non_embedding"]) for m in part["model"]]
        alpha, _ = estimates.power_law(n, list(part["value"]))
        points = ", ".join(f"{m} {v:g} at {human(k)}" for m, v, k in zip(part["model"], part["value"], n, strict=True))
        lines.append(f"- {bench} perplexity: α = {alpha:.3f} over {len(n)} sizes ({points}).")
    return lines + ["", f"![Published zero-shot perplexity against exact non-embedding parameters]({fig})", ""]


def section(d: Data) -> Section:
    names = {"cost": "cost.png", "published": "published.png", "fit": "fit.png"}
    drawn = [Figure(cost, (d.costs, adam_label(d.cfg)), names["cost"])]
    if not d.fit.empty:
        drawn.append(Figure(memory_against_context, (d.fit, str(d.cfg.cost["gpu_memory"])), names["fit"]))
    pub = d.published[d.published["model"].isin(d.summary.index)]
    if pub["model"].nunique() >= 2:
        pub = pub.assign(non_embedding=[float(d.summary.loc[m, "non_embedding"]) for m in pub["model"]])
        drawn.append(Figure(published, (pub,), names["published"]))
    text = cost_section(d.cfg, d.summary, d.costs, d.grid, d.published, {k: d.link(v) for k, v in names.items()})
    return Section(text + _fit_lines(d), drawn)


ENGINES = {"transformers": "transformers", "vllm": "vLLM", "llama.cpp": "llama.cpp"}


def _fit_lines(d: Data) -> str:
    """Where each model stops fitting on one GPU of cost.gpu_memory, per engine, from results/fit.csv."""
    if d.fit.empty:
        return ""
    gpu, fit = str(d.cfg.cost["gpu_memory"]), d.fit
    engines = [e for e in ENGINES if e in set(fit["engine"])]
    lines = [
        "",
        f"## Will it fit on one GPU of {gpu}?",
        "",
        f"Inference at a batch of {int(d.cfg.cost['batch'])}, as each engine allocates it (`results/fit.csv`; "
        "`hmp fit --engine` prints any one plan line by line, with its sources): **transformers** holds the weights "
        "as stored, its caches and what its prefill allocates beyond them (measured on fake tensors); **vLLM** "
        "takes `gpu_memory_utilization` (0.9) of the GPU, runs a profile of 8,192 tokens and pages its KV cache "
        "in blocks of 16; **llama.cpp** pads its context to 256 cells, keeps the input embedding in host memory "
        "and reserves a compute buffer for 512 tokens. The longest context that fits, of the model's own:",
        "",
        "| model | " + " | ".join(ENGINES[e] for e in engines) + " |",
        "|---|" + "---:|" * len(engines),
    ]
    for name, part in fit.groupby("model", sort=False):
        limit = int(part["context"].max())
        cells = []
        for engine in engines:
            rows = part[part["engine"] == engine]
            if rows.empty:
                cells.append("not planned")
                continue
            longest = int(rows["max_context"].iloc[0])
            at = float(rows.loc[rows["context"].idxmax(), "bytes_per_gpu"]) / 2**30
            cells.append(
                f"all {limit:,} ({at:.2f} GiB)" if longest >= limit else "not one token" if longest == 0
                else f"{longest:,} of {limit:,}"
            )  # fmt: skip
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", "![One GPU's memory against context, per engine](" + d.link("fit.png") + ")", ""])


def memory_against_context(fit: pd.DataFrame, gpu: str, path: Path, dpi: int) -> None:
    """Log-log: one GPU's bytes against context per model (colour) and engine (line style), with the GPU's memory
    as a horizontal line."""
    import matplotlib.ticker as mticker

    plt, sns = setup()
    data = fit.assign(gib=fit["bytes_per_gpu"].astype(float) / 2**30)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=data, x="context", y="gib", hue="model", style="engine", marker="o", markersize=3, ax=ax,
                 palette="colorblind")  # fmt: skip
    ax.axhline(float(fit["gpu_memory_bytes"].iloc[0]) / 2**30, color="black", linestyle="--", linewidth=1)
    ax.annotate(
        f"one GPU: {gpu}",
        (data["context"].min(), float(fit["gpu_memory_bytes"].iloc[0]) / 2**30),
        xytext=(2, 4),
        textcoords="offset points",
        fontsize=SMALL,
    )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))  # 128, 256, ... not 2^7
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_ylim(top=float(fit["gpu_memory_bytes"].iloc[0]) / 2**30 * 1.8)  # room for the GPU's label above its line
    legend_outside(fig, ax, "context (tokens)", "One GPU's memory against context, per engine", path, dpi,
                   ylabel="GiB per GPU")  # fmt: skip


def cost(table: pd.DataFrame, training_label: str, path: Path, dpi: int) -> None:
    """Horizontal bars (log scale): weights in each dtype and mixed-precision Adam training memory, per model."""
    plt, sns = setup()
    labels = {
        "weights_bytes_float32": "weights, float32",
        "weights_bytes_bfloat16": "weights, bfloat16",
        "weights_bytes_int8": "weights, int8",
        "weights_bytes_int4": "weights, int4",
        "train_adam_mixed_bytes": training_label,
    }
    data = table[table["quantity"].isin(labels)].assign(
        what=lambda t: t["quantity"].map(labels), gib=lambda t: t["value"].astype(float) / 2**30
    )
    fig, ax = plt.subplots(figsize=(6, 0.9 * data["model"].nunique() + 2))
    sns.barplot(data=data, y="model", x="gib", hue="what", ax=ax, palette="colorblind", orient="h")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    legend_outside(fig, ax, "GiB (log scale)", "Memory: the weights in each dtype, and training", path, dpi)


def published(table: pd.DataFrame, path: Path, dpi: int) -> None:
    """Log-log: the paper's zero-shot perplexity against exact non-embedding parameters, with the fitted power law."""
    import numpy as np

    from pipeline.cost.estimates import power_law

    plt, sns = setup()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=table, x="non_embedding", y="value", hue="benchmark", marker="o", ax=ax, palette="colorblind")
    for _, r in table.loc[table.groupby("model")["value"].idxmax()].iterrows():  # each model named once, on top
        where = (r["non_embedding"], r["value"])
        ax.annotate(r["model"], where, fontsize=SMALL, xytext=(4, 5), textcoords="offset points")
    for _, part in table.groupby("benchmark"):  # loss = c·N^-α, dashed
        alpha, c = power_law(list(part["non_embedding"]), list(part["value"]))
        xs = np.geomspace(part["non_embedding"].min(), part["non_embedding"].max(), 50)
        ax.plot(xs, np.exp(c * xs**-alpha), linestyle="--", linewidth=0.8, color="grey")
    title = "What the parameters buy: the paper's numbers against exact counts"
    ylabel = "zero-shot perplexity (GPT-2 paper, Table 3)"
    log_log(fig, ax, "exact non-embedding parameters", ylabel, title, path, dpi, legend="lower left", plain_y=True)
