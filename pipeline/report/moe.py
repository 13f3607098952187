"""Total versus active, for a sweep with mixtures of experts: the two conventions model cards use, reconciled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params, sizes
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, log_log, setup
from pipeline.report.text import human, md_table, whole

ACTIVE_CONVENTIONS = {
    "active_per_token": "every parameter a token's forward pass uses, embeddings included (Mixtral's convention)",
    "active_excluding_input_embedding": "the same without the input embedding lookup (gpt-oss's convention)",
}


def _card_sentence(name: str, spec: params.ModelSpec, s: pd.Series, active: pd.Series) -> str:
    """One sentence reconciling a mixture of experts' stated total and active sizes with the count."""
    total = int(s["total"])
    parts = [f"- `{name}` ({int(s['n_experts'])} routed experts per layer, {int(s['experts_per_token'])} per token):"]
    if pd.notna(s["stated_params"]):
        verdict = "is" if sizes.rounds_to(total, spec.stated_size) else "is **not**"
        parts.append(f"its stated {spec.stated_size} total {verdict} the count {whole(total)} rounded as stated;")
    if pd.notna(s["stated_active_params"]):
        matching = [c for c in ACTIVE_CONVENTIONS if sizes.rounds_to(int(active[c]), spec.stated_active)]
        values = "; ".join(f"`{c}` {whole(active[c])} ({human(active[c])})" for c in ACTIVE_CONVENTIONS)
        if matching:
            parts.append(
                f"its stated {spec.stated_active} active is `{matching[0]}`, {ACTIVE_CONVENTIONS[matching[0]]}"
                + (f" (and also `{matching[1]}`)" if len(matching) > 1 else "")
                + f": {values}."
            )
        else:
            parts.append(
                f"its stated {spec.stated_active} active matches neither convention at its rounding: {values}."
            )
    else:
        parts.append(f"one token uses {whole(active['active_per_token'])} of them.")
    return " ".join(parts)


def moe_section(cfg: params.Params, summary: pd.DataFrame, conv: pd.DataFrame, fig: str) -> str:
    """Total against active for a sweep with mixtures of experts; empty when every model is dense."""
    if summary["n_experts"].isna().all():
        return ""
    active = conv.pivot(index="model", columns="convention", values="params")
    rows, sentences = [], []
    for name, spec in cfg.models.items():
        s, a = summary.loc[name], active.loc[name]
        moe_model = pd.notna(s["n_experts"])
        experts = f"{int(s['n_experts'])} / {int(s['experts_per_token'])}" if moe_model else "dense"
        rows.append(
            [
                f"`{name}`",
                whole(s["total"]),
                whole(a["active_per_token"]),
                whole(a["active_excluding_input_embedding"]),
                f"{100 * a['active_per_token'] / s['total']:.1f} %",
                experts,
                whole(s["routed_expert_params"]) if moe_model else "—",
            ]
        )
        if moe_model:
            sentences.append(_card_sentence(name, spec, s, a))
    header = ["model", "total", "active per token", "active without input embedding", "share", "experts E / k"]
    return "\n".join(
        [
            "## Total versus active",
            "",
            "A mixture of experts routes each token to k of the E experts in a layer, so a token uses far fewer "
            "parameters than the model holds. Active counts every parameter outside the routed experts (embeddings, "
            "head, routers, attention, norms, shared experts, dense layers) plus k/E of each stacked expert tensor. "
            "Model cards use two conventions, with and without the input embedding (a table lookup, not a matmul). "
            "A dense model's active count is its total.",
            "",
            md_table([*header, "routed expert params"], rows),
            "",
            *sentences,
            "",
            f"![Total against active parameters]({fig})",
            "",
        ]
    )


def section(d: Data) -> Section:
    name = "total_active.png"
    cfg, summary = d.cfg, d.summary
    drawn = []
    if summary["n_experts"].notna().any():
        wide = d.conv.pivot(index="model", columns="convention", values="params").loc[list(cfg.models)]
        points = wide.reset_index().assign(
            total=summary.loc[list(cfg.models), "total"].to_numpy(),
            kind=["mixture of experts" if pd.notna(summary.loc[n, "n_experts"]) else "dense" for n in cfg.models],
        )
        drawn.append(Figure(total_active, (points,), name))
    return Section(moe_section(cfg, summary, d.conv, d.link(name)), drawn)


def total_active(data: pd.DataFrame, path: Path, dpi: int) -> None:
    """Total against active parameters per model (log-log): dense models on the diagonal, MoE far below it."""
    plt, sns = setup()
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
            fontsize=SMALL,
            xytext=(5, 4),
            textcoords="offset points",
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    log_log(fig, ax, "total parameters", "parameters one token uses", "Total against active parameters", path, dpi)
