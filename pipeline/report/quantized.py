"""Quantized checkpoints: the naive header sum against the true count and the bytes on disk, and why they differ."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.formats import entries
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import legend_outside, setup
from pipeline.report.text import md_table, nbytes, whole


def _stored_values(row: pd.Series) -> int:
    """How many stored elements a packed parameter takes (its bytes over the stored dtype's size)."""
    base = str(row["stored_dtype"]).split(":")[0]
    size = entries.DTYPE_BYTES.get(base, 1)
    return round(row["bits_per_param"] * row["numel"] / 8 / size)


def _why_naive(name: str, s: pd.Series, inv: pd.DataFrame) -> str:
    """One sentence: why a naive sum of this model's header is not its parameter count (or why it is)."""
    naive, total = int(s["checkpoint_tensors"]), int(s["total"])
    params_ = inv[inv["kind"] == "parameter"]
    meta = int(inv.loc[inv["kind"] == "quant_metadata", "numel"].sum())
    packed = params_[params_["stored_dtype"].astype(str).str.contains(":")]
    if s["quant_method"] == "gguf":
        return (
            f"- `{name}` (GGUF): its header gives each tensor's logical shape even where the data is quantized, so "
            f"the sum of the header, {whole(naive)}, is the count; what it saves shows in the bits per parameter."
        )
    parts = []
    if not packed.empty:
        stored = sum(_stored_values(r) for _, r in packed.iterrows())
        base = sorted({str(d).split(":")[0] for d in packed["stored_dtype"]})
        parts.append(
            f"{whole(packed['numel'].sum())} weights are packed into {whole(stored)} {'/'.join(base)} values "
            f"({packed['numel'].sum() / stored:.0f} weights each)"
        )
    if meta:
        parts.append(f"{whole(meta)} stored values are scales, zero points or quantization state, not parameters")
    if not parts:
        return f"- `{name}`: its weights keep their shapes; the header sum {whole(naive)} is the count."
    ratio = naive / total
    return (
        f"- `{name}` ({s['quant_method']}): " + "; ".join(parts) + f". A naive sum of the header gives {whole(naive)}, "
        f"{ratio:.2f}× the true {whole(total)}."
    )


def quantized_section(cfg: params.Params, summary: pd.DataFrame, full: dict[str, pd.DataFrame], fig: str) -> str:
    """Naive header sum, true count and bytes on disk, for a sweep with quantized or GGUF checkpoints."""
    quantized = [
        n for n in cfg.models if isinstance(summary.loc[n, "quant_method"], str) and summary.loc[n, "quant_method"]
    ]
    if not quantized:
        return ""
    rows, sentences = [], []
    for name in quantized:
        s = summary.loc[name]
        rows.append(
            [
                f"`{name}`",
                str(s["quant_method"]),
                whole(s["total"]),
                whole(s["checkpoint_tensors"]),
                nbytes(s["checkpoint_bytes"]),
                f"{s['bits_per_param']:.2f}",
            ]
        )
        sentences.append(_why_naive(name, s, full[name]))
    return "\n".join(
        [
            "## Quantized checkpoints",
            "",
            "A quantized file stores codes, not weights: GPTQ packs eight 4-bit values into one int32, bitsandbytes "
            "two into a byte, and beside them sit scales and zero points. Summing the header, as the Hub's page "
            "once did, counts the packed words. Here every packed tensor is mapped back to the logical weight it "
            "encodes (its bits, group size and packing checked) and reconciled with the architecture; metadata "
            "is listed apart (kind `quant_metadata` in the inventory).",
            "",
            md_table(
                ["model", "format", "parameters", "naive header sum", "bytes on disk", "bits per parameter"], rows
            ),
            "",
            *sentences,
            "",
            f"![Naive header sum, true count and bytes on disk]({fig})",
            "",
        ]
    )


def section(d: Data) -> Section:
    name = "quantized.png"
    summary = d.summary
    quantized = summary[summary["quant_method"].notna() & (summary["quant_method"].astype(str) != "")]
    drawn = [Figure(quantized_figure, (quantized.reset_index(drop=True),), name)] if not quantized.empty else []
    return Section(quantized_section(d.cfg, summary, d.full, d.link(name)), drawn)


def quantized_figure(summary: pd.DataFrame, path: Path, dpi: int) -> None:
    """Per quantized model: the naive header sum, the true count and the bytes on disk (log scale)."""
    plt, sns = setup()
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
    legend_outside(
        fig, ax, "count (log scale)", "What a quantized file's header says against what the model holds", path, dpi
    )
