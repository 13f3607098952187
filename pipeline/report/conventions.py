"""Why every tool prints a different number: each model under every counting convention, and why for one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.model import conventions as counting
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, legend_outside, plain_log_ticks, setup
from pipeline.report.text import cell, human, md_table, whole

CONVENTION_LABELS = {
    "unique": "unique",
    "untied_head": "untied head",
    "non_embedding_kaplan": "non-emb. (Kaplan)",
    "non_embedding_pythia": "non-emb. (Pythia)",
    "nanogpt_default": "nanoGPT",
    "attn_mlp_matrices": "attn+MLP matrices",
    "checkpoint_tensors": "checkpoint file",
    "stated": "stated",
    "torchinfo": "torchinfo",
}


# The figure's labels: each convention with the tool or source that prints it
CONVENTION_TOOLS = counting.TOOLS


def _parts_table(conv: pd.DataFrame, models: list[str]) -> list[str]:
    """The parts of each composite model and encoder-decoder (language model, towers, projector, stacks)."""
    parts = conv[conv["convention"].isin(counting.PART_TOOLS) & conv["params"].notna()]
    if parts.empty:
        return []
    wide = parts.pivot(index="model", columns="convention", values="params")
    shown = [c for c in counting.PART_TOOLS if c in wide.columns]
    order = [m for m in models if m in wide.index]
    rows = [[f"`{m}`"] + [cell(wide.loc[m, c]) for c in shown] for m in order]
    lines = [f"- **{counting.PART_TOOLS[c]}** (`{c}`): {counting.DEFINITIONS[c]}." for c in shown]
    return [
        "Part by part, for the models built of towers or stacks (each part once; a tensor two parts share is "
        "counted where the inventory's `tower` column puts it):",
        "",
        md_table(["model"] + [counting.PART_TOOLS[c] for c in shown], rows),
        "",
        *lines,
        "",
    ]


def conventions_section(conv: pd.DataFrame, summary: pd.DataFrame, fig: str) -> str:
    """The conventions table and, for the first model, why each tool prints what it prints."""
    wide = conv.pivot(index="model", columns="convention", values="params").reindex(list(summary.index))
    header = ["model"] + [CONVENTION_LABELS[c] for c in CONVENTION_LABELS]
    rows = [[f"`{m}`"] + [cell(wide.loc[m, c]) for c in CONVENTION_LABELS] for m in wide.index]
    out = [
        "## Why every tool prints a different number",
        "",
        "The same model, counted under each convention in use (`results/conventions.csv`):",
        "",
        md_table(header, rows),
        "",
        *_parts_table(conv, list(summary.index)),
        f"![Each model under every convention]({fig})",
        "",
    ]
    m = "gpt2" if "gpt2" in wide.index else wide.index[0]
    v = {c: wide.loc[m, c] for c in CONVENTION_LABELS}
    s = summary.loc[m]
    u = int(v["unique"])
    lines = [f"For `{m}`:", ""]
    lines.append(f"- **{whole(u)}** is what PyTorch counts: every trainable tensor once, a tied tensor once.")
    if int(v["untied_head"]) != u:
        lines.append(
            f"- **{whole(v['untied_head'])}** is the same model with an output head of its own"
            + (", as minGPT builds it and the course's Model 5 is" if s["model_type"] == "gpt2" else "")
            + f": {whole(v['untied_head'])} − {whole(u)} = {whole(int(v['untied_head']) - u)}, "
            "the vocabulary × width head matrix that the released model shares with its token embedding."
        )
    if int(v["torchinfo"]) != u:
        lines.append(
            f"- **{whole(v['torchinfo'])}** is what torchinfo's `summary` prints as total params: it adds up each "
            "module's own parameters, so a tied tensor counts once per module that holds it (the token embedding "
            "and the output head); this is where most people meet that number."
        )
    pos = u - int(v["nanogpt_default"])
    if pos:
        lines.append(
            f"- **{whole(v['nanogpt_default'])}** is what nanoGPT prints ({int(v['nanogpt_default']) / 1e6:.2f}M): its "
            f"get_num_params() leaves out the {whole(pos)} learned position-embedding values by default."
        )
    lines.append(
        f"- **{whole(v['non_embedding_pythia'])}** is the Pythia suite's non-embedding count: without the input and "
        f"output embedding matrices ({whole(u - int(v['non_embedding_pythia']))}), learned positions kept."
    )
    lines.append(
        f"- **{whole(v['non_embedding_kaplan'])}** is Kaplan et al.'s non-embedding count, the one scaling laws use: "
        f"every embedding table left out ({whole(u - int(v['non_embedding_kaplan']))})."
    )
    lines.append(
        f"- **{whole(v['attn_mlp_matrices'])}** ({human(int(v['attn_mlp_matrices']))}) is TransformerLens's "
        "`n_params`: "
        f"only the attention and MLP weight matrices, so it also drops "
        f"{whole(int(v['non_embedding_kaplan']) - int(v['attn_mlp_matrices']))} biases and norm values."
    )
    lines.append(_hub_line(m, v, s, u))
    if not pd.isna(v["stated"]):
        lines.append(
            f"- **{s['stated_size']}** is the size its authors stated; the exact count is {whole(u)}, "
            f"{whole(abs(u - int(v['stated'])))} {'more' if u > int(v['stated']) else 'less'}."
        )
    return "\n".join(out + lines + [""])


def _hub_line(m: str, v: dict, s: pd.Series, u: int) -> str:
    """What the Hub's model page shows for the model (a sum over its checkpoint's tensors), and why."""
    quantized = isinstance(s.get("quant_method"), str) and bool(s["quant_method"])
    if not pd.isna(v["checkpoint_tensors"]) and quantized:
        return (
            f"- **{whole(v['checkpoint_tensors'])}** is a naive sum of its header, packed storage and quantization "
            "metadata counted as parameters (see Quantized checkpoints)."
        )
    elif not pd.isna(v["checkpoint_tensors"]):
        extra = int(v["checkpoint_tensors"]) - u
        masks = s["model_type"] == "gpt2" and extra > 0
        return (
            f"- **{whole(v['checkpoint_tensors'])}** ({human(int(v['checkpoint_tensors']))}) is what the Hub's "
            "model page shows: a sum over every tensor in the checkpoint file"
            + (
                f", {whole(extra)} of them in tensors that are not parameters"
                + (" (these GPT-2 files carry a causal mask per layer)" if masks else "")
                if extra > 0
                else ", here the parameters exactly"
            )
            + "."
        )
    else:
        return (
            "- The Hub's model page sums every tensor in the checkpoint file, tensors that are not parameters "
            f"included. This run has no checkpoint for `{m}` (source {s['source']}); give it `source: hub` or "
            "`source: path` to see that sum here."
        )


def section(d: Data) -> Section:
    name = "conventions.png"
    return Section(
        conventions_section(d.conv, d.summary, d.link(name)), [Figure(conventions, (d.conv, CONVENTION_TOOLS), name)]
    )


def conventions(conv: pd.DataFrame, labels: dict[str, str], path: Path, dpi: int) -> None:
    """Each model under every counting convention (log scale), the tool that prints each number named."""
    plt, sns = setup()
    data = conv[conv["convention"].isin(labels) & conv["params"].notna()].assign(
        convention=lambda t: t["convention"].map(labels), millions=lambda t: t["params"].astype(float) / 1e6
    )
    fig, ax = plt.subplots(figsize=(5.5, 0.45 * data["convention"].nunique() * data["model"].nunique() ** 0.5 + 2))
    # points, not bars: on a log axis a bar's length would mean nothing
    sns.stripplot(
        data=data, y="convention", x="millions", hue="model", ax=ax, palette="colorblind", orient="h",
        jitter=False, dodge=data["model"].nunique() > 1, size=7,
    )  # fmt: skip
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    if data["model"].nunique() <= 2:  # few models: each point says its number
        for _, r in data.iterrows():
            ax.annotate(f"{r['millions']:,.1f}M", (r["millions"], r["convention"]), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=SMALL)  # fmt: skip
    ax.grid(axis="y", linestyle=":", linewidth=0.6)
    legend_outside(
        fig,
        ax,
        "parameters (millions, log scale)",
        "One model, many counts: each convention and the tool that prints it",
        path,
        dpi,
        legend=SMALL,
    )
