"""The report's seaborn figures. Each function takes plain DataFrames and writes one PNG atomically."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from pipeline import atomic

COMPONENT_LABELS = {
    "token_embedding": "token embedding",
    "position_embedding": "position embedding",
    "segment_embedding": "segment embedding",
    "attention": "attention",
    "router": "router",
    "experts": "routed experts",
    "shared_experts": "shared experts",
    "mlp": "MLP",
    "layer_norm": "layer norm",
    "pooler": "pooler",
    "output_head": "output head (own tensors)",
}


def _save(fig, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # No software/version metadata, so the bytes depend only on the data.
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _log_log(
    fig, ax, xlabel: str, ylabel: str, title: str, path: Path, dpi: int, legend: str = "upper left", plain_y=False
) -> None:
    """Both axes logarithmic, labelled, the legend in a corner, and the figure saved.

    plain_y labels the y axis with plain numbers (perplexities 10, 20, 30, not 2×10¹)."""
    import matplotlib.ticker as mticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    if plain_y:
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "2345" else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="x-small", loc=legend)
    _save(fig, path, dpi)


def _legend_outside(
    fig, ax, xlabel: str, title: str, path: Path, dpi: int, ylabel: str = "", legend: str = "small"
) -> None:
    """Axis labels and title, the legend outside the axes on the right, and the figure saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    _save(fig, path, dpi)


def components(by_component: pd.DataFrame, path: Path, dpi: int) -> None:
    """100 % stacked horizontal bars: each model's parameters by component, as shares, so small parts stay visible."""
    plt, sns = _setup()
    wide = by_component.pivot_table(index="model", columns="component", values="params", aggfunc="sum", sort=False)
    wide = wide.reindex(columns=[c for c in COMPONENT_LABELS if c in wide.columns]).fillna(0)
    wide = 100 * wide.div(wide.sum(axis=1), axis=0)
    wide = wide.rename(columns=COMPONENT_LABELS)
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(wide) + 1.8))
    colors = sns.color_palette("colorblind", n_colors=len(COMPONENT_LABELS))
    palette = dict(zip(COMPONENT_LABELS.values(), colors, strict=True))
    left = pd.Series(0.0, index=wide.index)
    for column in wide.columns:
        ax.barh(wide.index, wide[column], left=left, label=column, color=palette[column], height=0.6)
        left += wide[column]
    for y, (_, shares) in enumerate(wide.iterrows()):  # label parts of at least 4 % inside, the others below
        start, small = 0.0, []
        for part, value in shares.items():
            if value >= 4:
                ax.text(start + value / 2, y, f"{value:.1f} %", ha="center", va="center", fontsize="x-small")
            elif value > 0:
                small.append(f"{part} {value:.2g} %")
            start += value
        if small:
            ax.text(0, y + 0.42, "also: " + ", ".join(small), ha="left", va="center", fontsize="xx-small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    _legend_outside(fig, ax, "share of the model's parameters (%)", "Where the parameters are", path, dpi)


def bias_share(shares: pd.DataFrame, path: Path, dpi: int) -> None:
    """Bars: share of each model's parameters that are biases, per definition (percent)."""
    plt, sns = _setup()
    data = shares.assign(percent=100 * shares["share_of_model"])
    fig, ax = plt.subplots(figsize=(8, 0.6 * data["model"].nunique() + 1.8))
    sns.barplot(data=data, y="model", x="percent", hue="definition", ax=ax, palette="colorblind", orient="h")
    ax.set_xlabel("biases, % of all parameters")
    ax.set_ylabel("")
    ax.set_title(f"Biases as a share of all parameters (at most {data['percent'].max():.4f} %)")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.4f %%", fontsize="x-small", padding=2)
    ax.margins(x=0.25)
    ax.legend(title="definition", fontsize="small")
    _save(fig, path, dpi)


def totals(summary: pd.DataFrame, path: Path, dpi: int) -> None:
    """Bars: exact totals against the sizes the authors stated, in millions."""
    plt, sns = _setup()
    rows = []
    for _, r in summary.iterrows():
        rows.append({"model": r["model"], "count": "exact (this pipeline)", "millions": r["total"] / 1e6})
        if pd.notna(r["stated_params"]):
            rows.append({"model": r["model"], "count": "stated by the authors", "millions": r["stated_params"] / 1e6})
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8, 0.6 * summary.shape[0] + 1.8))
    sns.barplot(data=data, y="model", x="millions", hue="count", ax=ax, palette="colorblind", orient="h")
    gaps = [
        ""
        if pd.isna(r["stated_params"])
        else f"{(r['total'] - r['stated_params']) / 1e6:+,.1f}M against the stated size"
        for _, r in summary.iterrows()
    ]
    ax.bar_label(ax.containers[0], labels=gaps, padding=3, fontsize="x-small")  # the gap, the point of the table
    ax.margins(x=0.35)
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("")
    ax.set_title("Exact totals against the stated sizes")
    ax.legend(fontsize="small")
    _save(fig, path, dpi)


def rebinned(hists: pd.DataFrame, bins: int, tail: float = 0.001) -> pd.DataFrame:
    """Bucket counts re-binned over each (model, group)'s own central range: [the tail, 1 − tail] quantiles.

    A group whose values are (nearly) one number, such as norm gains all at 1.0, gets a narrow range around it.
    Returns model, group, value (bin centre), density (of all the group's values) and the share left outside.
    """
    import numpy as np

    out = []
    finite = hists[np.isfinite(hists["bin_left"]) & np.isfinite(hists["bin_right"])]
    for (model, group), part in finite.groupby(["model", "group"], sort=False):
        part = part.sort_values("bin_left")
        counts = part["count"].to_numpy(dtype=float)
        total = counts.sum()
        if total == 0:
            continue
        cum = np.cumsum(counts) / total
        lo = float(part["bin_left"].to_numpy()[np.searchsorted(cum, tail)])
        hi = float(part["bin_right"].to_numpy()[min(np.searchsorted(cum, 1 - tail), len(cum) - 1)])
        single = hi - lo <= 1e-6 * max(abs(lo), abs(hi), 1e-12) or len(part) == 1
        if single:  # (nearly) one value: a narrow window around it, and the figure says so
            centre = 0.0 if abs(lo) < 1e-30 else lo
            pad = max(abs(centre) * 0.01, 1e-3)
            lo, hi = centre - pad, centre + pad
        edges = np.linspace(lo, hi, bins + 1)
        centres = (part["bin_left"].to_numpy() + part["bin_right"].to_numpy()) / 2
        inside, _ = np.histogram(centres, bins=edges, weights=counts)
        width = edges[1] - edges[0]
        out.append(
            pd.DataFrame(
                {
                    "model": model,
                    "group": group,
                    "value": (edges[:-1] + edges[1:]) / 2,
                    "density": inside / total / width,
                    "outside": 1 - inside.sum() / total,
                    "single": float(part["bin_left"].iloc[0]) if single else np.nan,
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["model", "group", "value", "density"])


def distributions(hists: pd.DataFrame, bins: int, path: Path, dpi: int) -> None:
    """Value histograms (density, log scale) of weights, biases and norm gains, each over its own range.

    A group whose values are one number in every model (freshly initialised biases at 0, gains at 1)
    gets no panel of its own: a line under the panels says which value, so no panel is left empty.
    """
    plt, sns = _setup()
    data = rebinned(hists, bins)
    every = int(hists["every"].max()) if "every" in hists and len(hists) else 1
    counted = "every value" if every == 1 else f"every {every}th value"
    present = [g for g in ("weights", "biases", "norm_gains") if g in set(data["group"])]
    spread = [g for g in present if data.loc[data["group"] == g, "single"].isna().any()]
    flat = [g for g in present if g not in spread]
    panels = max(len(spread), 1)
    fig, axes = plt.subplots(1, panels, figsize=(max(4.6 * panels, 8.0), 3.8), squeeze=False)
    if not spread:  # nothing spread out to draw: the figure is its sentences
        axes[0][0].axis("off")
    notes = []
    for ax, group in zip(axes[0], spread, strict=False):
        part = data[(data["group"] == group) & (data["density"] > 0)]
        ax.set_title(group.replace("_", " "))
        curves = part[part["single"].isna()]
        if not curves.empty:
            sns.lineplot(data=curves, x="value", y="density", hue="model", ax=ax, palette="colorblind", linewidth=1.2)
            ax.set_yscale("log")
            ax.legend(fontsize="x-small")
        ones = part[part["single"].notna()].drop_duplicates("model")
        notes += [f"{group.replace('_', ' ')} of {r['model']}: all {r['single']:.4g}" for _, r in ones.iterrows()]
        ax.set_xlabel("parameter value")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.locator_params(axis="x", nbins=5)
    for group in flat:
        ones = data[data["group"] == group].drop_duplicates("model")
        values = sorted({f"{v:.4g}" for v in ones["single"]})
        models = ", ".join(ones["model"])
        notes.append(f"{group.replace('_', ' ')}: every value counted is {' or '.join(values)} ({models})")
    fig.suptitle(f"Distribution of parameter values (each group over its own range; {counted} of each tensor)")
    fig.tight_layout()
    if notes:
        notes = list(dict.fromkeys(notes))
        fig.subplots_adjust(bottom=0.24 + 0.055 * len(notes))
        fig.text(0.5, 0.01, "\n".join(notes), ha="center", va="bottom", fontsize="small")
    _save(fig, path, dpi)


def whatif(grid: pd.DataFrame, shipped: pd.DataFrame, path: Path, dpi: int) -> None:
    """Parameters against 12·L·d² (log-log): the what-if grid as lines per width, the sweep's models marked."""
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(8, 5))
    data = grid.assign(width=grid["n_embd"].map(lambda d: f"d = {d}"))
    sns.lineplot(data=data, x="twelve_l_d2", y="params", hue="width", marker="o", ax=ax, palette="crest", linewidth=1)
    lo = min(grid["twelve_l_d2"].min(), shipped["twelve_l_d2"].min())
    hi = max(grid["params"].max(), shipped["params"].max(), grid["twelve_l_d2"].max())
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8, label="params = 12·L·d²")
    ax.scatter(shipped["twelve_l_d2"], shipped["params"], color="black", zorder=5, s=30, label="models in the sweep")
    for _, r in shipped.iterrows():
        ax.annotate(
            r["model"], (r["twelve_l_d2"], r["params"]), fontsize="x-small", xytext=(4, -10), textcoords="offset points"
        )
    title = "Parameters against 12·L·d²: the gap is embeddings, biases and norms"
    _log_log(fig, ax, "12·L·d² (attention and MLP matrices of a GPT-2 block)", "unique parameters", title, path, dpi)


def total_active(data: pd.DataFrame, path: Path, dpi: int) -> None:
    """Total against active parameters per model (log-log): dense models on the diagonal, MoE far below it."""
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    lo = min(data["active_excluding_input_embedding"].min(), data["total"].min()) / 1.6
    hi = data["total"].max() * 1.6
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8, label="active = total (dense)")
    sns.scatterplot(data=data, x="total", y="active_per_token", hue="kind", style="kind", s=70, ax=ax, zorder=5)
    ax.scatter(
        data["total"],
        data["active_excluding_input_embedding"],
        facecolors="none",
        edgecolors="black",
        s=40,
        zorder=4,
        label="active without the input embedding",
    )
    for _, r in data.iterrows():
        ax.annotate(
            r["model"],
            (r["total"], r["active_per_token"]),
            fontsize="x-small",
            xytext=(5, 4),
            textcoords="offset points",
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _log_log(fig, ax, "total parameters", "parameters one token uses", "Total against active parameters", path, dpi)


def quantized(summary: pd.DataFrame, path: Path, dpi: int) -> None:
    """Per quantized model: the naive header sum, the true count and the bytes on disk (log scale)."""
    plt, sns = _setup()
    rows = []
    for _, r in summary.iterrows():
        rows += [
            {"model": r["model"], "quantity": "naive header sum", "value": r["checkpoint_tensors"]},
            {"model": r["model"], "quantity": "parameters (true count)", "value": r["total"]},
            {"model": r["model"], "quantity": "bytes on disk", "value": r["checkpoint_bytes"]},
        ]
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8, 0.9 * len(summary) + 1.8))
    sns.barplot(data=data, y="model", x="value", hue="quantity", ax=ax, palette="colorblind", orient="h")
    ax.set_xscale("log")
    _legend_outside(
        fig, ax, "count (log scale)", "What a quantized file's header says against what the model holds", path, dpi
    )


def cost(table: pd.DataFrame, training_label: str, path: Path, dpi: int) -> None:
    """Horizontal bars (log scale): weights in each dtype and mixed-precision Adam training memory, per model."""
    plt, sns = _setup()
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
    fig, ax = plt.subplots(figsize=(8, 0.9 * data["model"].nunique() + 2))
    sns.barplot(data=data, y="model", x="gib", hue="what", ax=ax, palette="colorblind", orient="h")
    ax.set_xscale("log")
    _legend_outside(fig, ax, "GiB (log scale)", "Memory: the weights in each dtype, and training", path, dpi)


def published(table: pd.DataFrame, path: Path, dpi: int) -> None:
    """Log-log: the paper's zero-shot perplexity against exact non-embedding parameters, with the fitted power law."""
    import numpy as np

    from pipeline.cost import power_law

    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=table, x="non_embedding", y="value", hue="benchmark", marker="o", ax=ax, palette="colorblind")
    for _, r in table.iterrows():
        where = (r["non_embedding"], r["value"])
        ax.annotate(r["model"], where, fontsize="x-small", xytext=(4, 3), textcoords="offset points")
    for _, part in table.groupby("benchmark"):  # loss = c·N^-α, dashed
        alpha, c = power_law(list(part["non_embedding"]), list(part["value"]))
        xs = np.geomspace(part["non_embedding"].min(), part["non_embedding"].max(), 50)
        ax.plot(xs, np.exp(c * xs**-alpha), linestyle="--", linewidth=0.8, color="grey")
    title = "What the parameters buy: the paper's numbers against exact counts"
    ylabel = "zero-shot perplexity (GPT-2 paper, Table 3)"
    _log_log(fig, ax, "exact non-embedding parameters", ylabel, title, path, dpi, legend="lower left", plain_y=True)


def per_layer(inv: pd.DataFrame, path: Path, dpi: int) -> None:
    """Parameters in each transformer block, one line per model (dense layers in a mixture of experts stand out)."""
    plt, sns = _setup()
    per = inv[inv["layer"].notna()].groupby(["model", "layer"], sort=False)["numel"].sum().reset_index()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.lineplot(data=per, x="layer", y="numel", hue="model", marker="o", markersize=4, ax=ax, palette="colorblind")
    if per["numel"].max() > 10 * per["numel"].min():  # blocks of very different sizes (dense layers among experts)
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, per["numel"].max() * 1.15)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    _legend_outside(
        fig,
        ax,
        "block (layer index)",
        "Parameters per block",
        path,
        dpi,
        ylabel="parameters in the block",
        legend="x-small",
    )


def conventions(conv: pd.DataFrame, labels: dict[str, str], path: Path, dpi: int) -> None:
    """Each model under every counting convention (log scale), the tool that prints each number named."""
    plt, sns = _setup()
    data = conv[conv["convention"].isin(labels) & conv["params"].notna()].assign(
        convention=lambda t: t["convention"].map(labels), millions=lambda t: t["params"].astype(float) / 1e6
    )
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * data["convention"].nunique() * data["model"].nunique() ** 0.5 + 2))
    # points, not bars: on a log axis a bar's length would mean nothing
    sns.stripplot(
        data=data, y="convention", x="millions", hue="model", ax=ax, palette="colorblind", orient="h",
        jitter=False, dodge=data["model"].nunique() > 1, size=7,
    )  # fmt: skip
    ax.set_xscale("log")
    if data["model"].nunique() <= 2:  # few models: each point says its number
        for _, r in data.iterrows():
            ax.annotate(f"{r['millions']:,.1f}M", (r["millions"], r["convention"]), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize="xx-small")  # fmt: skip
    ax.grid(axis="y", linestyle=":", linewidth=0.6)
    _legend_outside(
        fig,
        ax,
        "parameters (millions, log scale)",
        "One model, many counts: each convention and the tool that prints it",
        path,
        dpi,
        legend="x-small",
    )


def ties(sample: pd.DataFrame, path: Path, dpi: int) -> None:
    """Input against output embedding values, one panel per model: a diagonal line when tied, a cloud when not."""
    plt, sns = _setup()
    models = list(dict.fromkeys(sample["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 0.5, 3.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        part = sample[sample["model"] == model]
        ax.scatter(part["input"], part["output"], s=3, alpha=0.4, color=sns.color_palette("colorblind")[0])
        lo = min(part["input"].min(), part["output"].min())
        hi = max(part["input"].max(), part["output"].max())
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(model, fontsize="small")
        ax.set_xlabel("input embedding value")
        ax.set_ylabel("output embedding value")
    fig.suptitle("Do the embedding and the unembedding share weights?")
    fig.tight_layout()
    _save(fig, path, dpi)
