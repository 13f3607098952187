"""Do the embedding and the unembedding share weights? Declared, structural and value evidence per model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import save, setup
from pipeline.report.text import md_table, whole


def ties_section(summary: pd.DataFrame, ties: pd.DataFrame, fig: str | None = None) -> str:
    rows, lines = [], []
    for _, t in ties.iterrows():
        rows.append(_tie_row(t))
        lines += _tie_lines(t, summary.loc[t["model"]])
    by_method: dict[str, list[str]] = {}
    for model, method in zip(ties["model"], ties["method"], strict=True):
        by_method.setdefault(method, []).append(f"`{model}`")
    methods = [f"{', '.join(models)}: {method}" for method, models in by_method.items()]
    return "\n".join(
        [
            "## Do the embedding and the unembedding share weights?",
            "",
            "Declared: `tie_word_embeddings` in the config. Same tensor: `get_output_embeddings().weight is "
            "get_input_embeddings().weight` on the built model.",
            "",
            md_table(
                [
                    "model",
                    "declared",
                    "same tensor",
                    "input embedding",
                    "output embedding",
                    "head params",
                    "stored apart",
                    "r",
                    "max abs diff",
                ],
                rows,
                "lllllrlrr",
            ),
            "",
            *lines,
            "",
            "Value evidence (r is Pearson's correlation of the input and output embedding matrices):",
            "",
            *[f"- {m}." for m in methods],
            "",
            *(
                [
                    "Input against output embedding, value by value (every k-th pair, the same positions in both "
                    "matrices): a tied model lies on the diagonal, an untied one is a cloud.",
                    "",
                    f"![Input against output embedding values]({fig})",
                    "",
                ]
                if fig
                else []
            ),
        ]
    )


def _tie_row(t: pd.Series) -> list[str]:
    """One model's row of the ties table."""
    r = "—" if pd.isna(t["pearson_r"]) else f"{t['pearson_r']:.6f}"
    diff = "—" if pd.isna(t["max_abs_diff"]) else f"{t['max_abs_diff']:.3g}"
    return [
        f"`{t['model']}`",
        "yes" if t["declared_tied"] else "no",
        "yes" if t["structural_tied"] else "no",
        f"`{t['input_embedding']}`" if isinstance(t["input_embedding"], str) and t["input_embedding"] else "—",
        f"`{t['output_embedding']}`" if isinstance(t["output_embedding"], str) and t["output_embedding"] else "—",
        whole(t["untied_head_params"]),
        "—" if pd.isna(t["stored_separately"]) else ("yes" if t["stored_separately"] else "no"),
        r,
        diff,
    ]


def _tie_lines(t: pd.Series, s: pd.Series) -> list[str]:
    """What the evidence says of one model's tie, a line each."""
    lines = []
    total, untied, head = int(s["total"]), int(s["total_untied"]), int(s["head_params"])
    if isinstance(s.get("tie_note"), str) and s["tie_note"]:
        lines.append(f"- `{t['model']}`: {s['tie_note']} (+{whole(head)}).")
    if pd.notna(t["pearson_r"]):
        verdict = (
            "the two matrices are one"
            if t["pearson_r"] > 0.999999 and t["max_abs_diff"] == 0
            else "the matrices are unrelated"
            if abs(t["pearson_r"]) < 0.1
            else "the matrices are related but differ"
        )
        lines.append(
            f"- `{t['model']}`: r = {t['pearson_r']:.6f}, max |difference| = {t['max_abs_diff']:.3g}: {verdict}."
        )
    if t["structural_tied"]:
        lines.append(
            f"- `{t['model']}` is tied: its output head is the token embedding tensor. With a head of its own "
            f"it would hold {whole(untied)}; {whole(untied)} − {whole(head)} = {whole(untied - head)}."
        )
    elif head:
        lines.append(
            f"- `{t['model']}` is untied: its head is a tensor of its own. "
            f"{whole(total)} − {whole(head)} = {whole(total - head)} is what it would hold tied."
        )
    return lines


def section(d: Data) -> Section:
    name = "ties.png"
    drawn = [Figure(ties, (d.tie_sample,), name)] if not d.tie_sample.empty else []
    return Section(ties_section(d.summary, d.ties, d.link(name) if drawn else None), drawn)


def ties(sample: pd.DataFrame, path: Path, dpi: int) -> None:
    """Input against output embedding values, one panel per model: a diagonal line when tied, a cloud when not."""
    plt, sns = setup()
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
    save(fig, path, dpi)
