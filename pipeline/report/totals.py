"""Totals: each model's exact count against the size its authors stated, the class counted, the checkpoint
reconciled."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params, sizes
from pipeline.model import formulas
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import SMALL, keep_inside, save, setup
from pipeline.report.text import fetched, human, md_table, nbytes, whole


def totals_section(cfg: params.Params, summary: pd.DataFrame, full: dict[str, pd.DataFrame], fig: str) -> str:
    rows, checks, notes, variants, ignored = [], [], [], [], []
    for name, spec in cfg.models.items():
        s = summary.loc[name]
        stated = "—"
        if pd.notna(s["stated_params"]):
            gap = int(s["total"]) - int(s["stated_params"])
            stated = f"{spec.stated_size} ({whole(abs(gap))} {'below' if gap >= 0 else 'above'} the count)"
        source = s["source"] + (
            f" @ `{s['revision'][:12]}`" if isinstance(s["revision"], str) and s["revision"] else ""
        )
        if isinstance(s.get("what_if"), str) and s["what_if"]:
            stated = "— (what-if variant)"
            lapsed = f", so its stated {spec.stated_size} no longer applies" if spec.stated_size else ""
            variants.append(f"- `{name}` is a what-if variant: an override set {s['what_if']}{lapsed}.")
        rows.append([f"`{name}`", f"`{s['model_class']}`", whole(s["total"]), human(s["total"]), stated, source])
        if isinstance(s.get("ignored_fields"), str) and s["ignored_fields"]:
            fields = ", ".join(f"`{f}`" for f in s["ignored_fields"].split(";"))
            ignored.append(f"- `{name}`: {fields}.")
        if note := _checkpoint_note(name, s, full):
            notes.append(note)
        arch = spec.architecture or {}
        if spec.source == "config" and arch.get("model_type") == "gpt2":
            closed = formulas.gpt2_params_from_config(arch)
            verdict = "matches" if closed == int(s["total"]) else "**DOES NOT MATCH**"
            formula = "V·d + P·d + L·(12d² + 13d) + 2d" + ("" if arch.get("tie_word_embeddings", True) else " + V·d")
            checks.append(f"- `{name}`: {formula} = {whole(closed)}, {verdict} the count.")
    out = [
        "## Totals",
        "",
        "Unique trainable parameters, what `sum(p.numel() for p in model.parameters())` counts, "
        "with each model built from its configuration on PyTorch's meta device (shapes only, no weights)"
        + (
            "; models with a checkpoint are also reconciled tensor by tensor with their files."
            if (summary["source"] != "config").any()
            else "."
        ),
        "",
        md_table(["model", "class counted", "parameters", "", "stated by the authors", "source"], rows, "llrrrl"),
        "",
        "The class counted is the one a model's config.json names in `architectures` (the class its checkpoint "
        "was saved from), else the first auto class transformers has for it (`auto_class` in the model file "
        "picks one); an encoder-decoder is never counted as its decoder alone.",
        "",
    ]
    if variants:
        out += variants + [""]
    if ignored:
        out += [
            "Fields of a config.json that its config class does not declare and the model never read while it "
            "was built (kept, and listed here once; they cannot have changed the count):",
            "",
            *ignored,
            "",
        ]
    if notes:
        out += ["Checkpoints, counted from their safetensors headers and reconciled with the architecture:", ""]
        out += notes + [""]
    if checks:
        out += ["Closed form for GPT-2 (vocabulary V, positions P, width d, layers L), independent of the count:", ""]
        out += checks + [""]
    off = [
        f"`{name}` ({cfg.models[name].stated_size})"
        for name in summary.index
        if pd.notna(summary.loc[name, "stated_params"])
        and not sizes.rounds_to(int(summary.loc[name, "total"]), cfg.models[name].stated_size)
    ]
    if off:
        out += [
            f"The stated sizes of {', '.join(off)} are not what the models hold, even rounded as stated; "
            "the table gives each gap.",
            "",
        ]
    out += [f"![Exact totals against the stated sizes]({fig})", ""]
    return "\n".join(out)


def _checkpoint_note(name: str, s: pd.Series, full: dict[str, pd.DataFrame]) -> str | None:
    """What a model's checkpoint holds beside its count (quantized, buffers, extra layers); None without one."""
    if isinstance(s.get("quant_method"), str) and s["quant_method"]:
        return (
            f"- `{name}`: its checkpoint is quantized ({s['quant_method']}), {whole(s['total'])} parameters in "
            f"{nbytes(s['checkpoint_bytes'])}; see Quantized checkpoints for what its header says instead." + fetched(s)
        )
    if pd.notna(s["checkpoint_tensors"]):
        buffers = int(s["checkpoint_buffers"])
        return (
            f"- `{name}`: its checkpoint holds {whole(s['checkpoint_tensors'])} values, that is "
            f"{whole(s['total'])} parameters{' (each tied tensor once)' if s['structural_tied'] else ''}"
            + (
                f" plus {whole(buffers)} in buffers (tensors that are not parameters, such as attention masks; "
                "listed as kind `buffer` in the inventory)."
                if buffers
                else "."
            )
            + (
                f" It also stores {whole(s['checkpoint_extra'])} values of layers the architecture does not build "
                + (
                    "(a multi-token-prediction module, used in training and for speculative decoding; "
                    "kind `extra` in the inventory), never added to the count."
                    if (full[name]["component"] == "multi_token_prediction").any()
                    else "(kind `extra` in the inventory), never added to the count."
                )
                if pd.notna(s.get("checkpoint_extra")) and int(s["checkpoint_extra"])
                else ""
            )
            + f" A naive sum of its header gives {human(s['checkpoint_tensors'])}."
            + fetched(s)
        )
    return None


def section(d: Data) -> Section:
    name = "totals.png"
    return Section(
        totals_section(d.cfg, d.summary, d.full, d.link(name)),
        [Figure(totals, (d.summary.reset_index(drop=True),), name)],
    )


def totals(summary: pd.DataFrame, path: Path, dpi: int) -> None:
    """Bars: exact totals against the sizes the authors stated, in millions."""
    plt, sns = setup()
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
    labels = ax.bar_label(ax.containers[0], labels=gaps, padding=3, fontsize=SMALL)  # the gap, the table's point
    keep_inside(fig, ax, labels)
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("")
    ax.set_title("Exact totals against the stated sizes")
    ax.legend(fontsize="small")
    save(fig, path, dpi)
