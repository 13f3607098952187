"""One block, tensor by tensor (the first model's block 0, with GPT-2's closed form), and parameters per block."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core import params
from pipeline.report.base import Data, Figure, Section
from pipeline.report.plotting import legend_outside, setup
from pipeline.report.text import md_table, whole


def main_block_list(inv: pd.DataFrame) -> str | None:
    """The block list holding most of a model's parameters (a VLM's language model, not its vision tower)."""
    listed = inv[inv["block_list"].fillna("") != ""]
    if listed.empty:
        return None
    return str(listed.groupby("block_list", sort=False)["numel"].sum().idxmax())


def blocks_section(cfg: params.Params, summary: pd.DataFrame, invs: dict[str, pd.DataFrame], fig: str) -> str:
    """One block of the first model, module by module from the inventory, and parameters per layer for every model."""
    name = next(iter(cfg.models))
    inv = invs[name]
    main = main_block_list(inv)
    if main is None:
        return ""
    block = inv[(inv["block_list"] == main) & (inv["layer"] == 0)]
    prefix = main + ".0."
    modules = block.assign(module=block["name"].str.removeprefix(prefix).str.rpartition(".")[0])
    rows = []
    for module, part in modules.groupby("module", sort=False):
        shapes = ", ".join(s.replace("x", "×") for s in part["shape"])
        rows.append([f"`{module}`", part["component"].iloc[0], shapes, whole(part["numel"].sum())])
    per_block = int(block["numel"].sum())
    rows.append(["**block**", "", "", f"**{whole(per_block)}**"])
    out = [
        "## One block, tensor by tensor",
        "",
        f"Block 0 of `{name}`'s `{main}` from its inventory (`results/inventory/{name}.csv`), module by module:",
        "",
        md_table(["module", "component", "shapes", "parameters"], rows, "lllr"),
        "",
    ]
    s = summary.loc[name]
    if s["model_type"] == "gpt2" and pd.notna(s["d_model"]):
        d = int(s["d_model"])
        parts = {  # GPT-2's block in closed form (formulas.gpt2_params): 4 d² + 4d, 8 d² + 5d, 4d
            "attention (c_attn, c_proj)": 4 * d * d + 4 * d,
            "MLP (c_fc, c_proj)": 8 * d * d + 5 * d,
            "two LayerNorms": 4 * d,
        }
        closed = sum(parts.values())
        verdict = "matches" if closed == per_block else "**DOES NOT MATCH**"
        out += [
            f"In closed form with d = {d}: attention 4d² + 4d = {whole(parts['attention (c_attn, c_proj)'])}, "
            f"MLP 8d² + 5d = {whole(parts['MLP (c_fc, c_proj)'])}, "
            f"two LayerNorms 4d = {whole(parts['two LayerNorms'])}; "
            f"12d² + 13d = {whole(closed)} per block, which {verdict} the inventory.",
            "",
        ]
    return "\n".join(out + [f"![Parameters per layer]({fig})", ""])


def section(d: Data) -> Section:
    name = "per_layer.png"
    drawn = []
    layered = [inv.assign(model=n) for n, inv in d.invs.items() if inv["layer"].notna().any()]
    if layered and not d.invs[next(iter(d.cfg.models))]["layer"].isna().all():
        drawn.append(Figure(per_layer, (pd.concat(layered),), name))
    return Section(blocks_section(d.cfg, d.summary, d.invs, d.link(name)), drawn)


def per_layer(inv: pd.DataFrame, path: Path, dpi: int) -> None:
    """Parameters in each transformer block, one line per model (dense layers in a mixture of experts stand out)."""
    plt, sns = setup()
    per = inv[inv["layer"].notna()].groupby(["model", "block_list", "layer"], sort=False)["numel"].sum().reset_index()
    several = per.groupby("model")["block_list"].transform("nunique") > 1  # a line per stack or tower
    per["model"] = per["model"].where(~several, per["model"] + ": " + per["block_list"])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.lineplot(data=per, x="layer", y="numel", hue="model", marker="o", markersize=4, ax=ax, palette="colorblind")
    if per["numel"].max() > 10 * per["numel"].min():  # blocks of very different sizes (dense layers among experts)
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, per["numel"].max() * 1.15)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    legend_outside(
        fig,
        ax,
        "block (layer index)",
        "Parameters per block",
        path,
        dpi,
        ylabel="parameters in the block",
        legend="x-small",
    )
