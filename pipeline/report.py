"""Stage report: render the CSVs into <paths.report> and PNG figures under <paths.figures>."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from pipeline import atomic, checkpoint, conventions, cost, figures, formulas, inventory, params, plotdata, results
from pipeline.cli import PipelineError, run

log = logging.getLogger("report")


def human(n: float) -> str:
    """124439808 -> 124.4M, 1557611200 -> 1.56B."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(int(n))


def _int(n) -> str:
    return f"{int(n):,}"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub Markdown table (pandas' to_markdown, through tabulate) of cells already formatted as text."""
    align = align or "l" + "r" * (len(header) - 1)
    assert len(align) == len(header) and all(len(r) == len(header) for r in rows), "ragged table"
    frame = pd.DataFrame([[str(c) for c in row] for row in rows], columns=header)
    return frame.to_markdown(
        index=False,
        tablefmt="pipe",
        colalign=["right" if a == "r" else "left" for a in align],
        disable_numparse=True,  # cells keep their own formatting (thousands separators, units)
    )


def _share(part: float, total: float) -> str:
    """A percentage with the digits a small part needs: 45.5 %, 0.63 %, 0.031 % (never a misleading 0.0 %)."""
    pct = 100 * part / total if total else 0.0
    if pct == 0 or pct >= 1:
        return f"{pct:.1f} %"
    return f"{pct:.2g} %"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _fetched(s: pd.Series) -> str:
    """How many bytes of the checkpoint were fetched for this model, in words."""
    if pd.isna(s.get("checkpoint_bytes")):
        return ""
    total = int(s["checkpoint_bytes"])
    if pd.isna(s.get("bytes_fetched")):
        return f" The weights ({_bytes(total)}) were read from local files; nothing was fetched."
    got = int(s["bytes_fetched"])
    how = "by HTTP range reads (headers and embedding matrices only)" if s.get("fetch") == "range" else "whole files"
    share = f"{100 * got / total:.2f} %"
    return f" Bytes fetched from the Hub, {how}: {_bytes(got)} ({got:,}) of {_bytes(total)} of weights ({share})."


def totals_section(cfg: params.Params, summary: pd.DataFrame, full: dict[str, pd.DataFrame], fig: str) -> str:
    rows, checks, notes, variants, ignored = [], [], [], [], []
    for name, spec in cfg.models.items():
        s = summary.loc[name]
        stated = "—"
        if pd.notna(s["stated_params"]):
            gap = int(s["total"]) - int(s["stated_params"])
            stated = f"{spec.stated_size} ({_int(abs(gap))} {'below' if gap >= 0 else 'above'} the count)"
        source = s["source"] + (
            f" @ `{s['revision'][:12]}`" if isinstance(s["revision"], str) and s["revision"] else ""
        )
        if isinstance(s.get("what_if"), str) and s["what_if"]:
            stated = "— (what-if variant)"
            lapsed = f", so its stated {spec.stated_size} no longer applies" if spec.stated_size else ""
            variants.append(f"- `{name}` is a what-if variant: an override set {s['what_if']}{lapsed}.")
        rows.append([f"`{name}`", f"`{s['model_class']}`", _int(s["total"]), human(s["total"]), stated, source])
        if isinstance(s.get("ignored_fields"), str) and s["ignored_fields"]:
            fields = ", ".join(f"`{f}`" for f in s["ignored_fields"].split(";"))
            ignored.append(f"- `{name}`: {fields}.")
        if isinstance(s.get("quant_method"), str) and s["quant_method"]:
            notes.append(
                f"- `{name}`: its checkpoint is quantized ({s['quant_method']}), {_int(s['total'])} parameters in "
                f"{_bytes(s['checkpoint_bytes'])}; see Quantized checkpoints for what its header says instead."
                + _fetched(s)
            )
        elif pd.notna(s["checkpoint_tensors"]):
            buffers = int(s["checkpoint_buffers"])
            notes.append(
                f"- `{name}`: its checkpoint holds {_int(s['checkpoint_tensors'])} values, that is "
                f"{_int(s['total'])} parameters{' (each tied tensor once)' if s['structural_tied'] else ''}"
                + (
                    f" plus {_int(buffers)} in buffers (tensors that are not parameters, such as attention masks; "
                    "listed as kind `buffer` in the inventory)."
                    if buffers
                    else "."
                )
                + (
                    f" It also stores {_int(s['checkpoint_extra'])} values of layers the architecture does not build "
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
                + _fetched(s)
            )
        arch = spec.architecture or {}
        if spec.source == "config" and arch.get("model_type") == "gpt2":
            closed = formulas.gpt2_params_from_config(arch)
            verdict = "matches" if closed == int(s["total"]) else "**DOES NOT MATCH**"
            formula = "V·d + P·d + L·(12d² + 13d) + 2d" + ("" if arch.get("tie_word_embeddings", True) else " + V·d")
            checks.append(f"- `{name}`: {formula} = {_int(closed)}, {verdict} the count.")
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
        _table(["model", "class counted", "parameters", "", "stated by the authors", "source"], rows, "llrrrl"),
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
        and not params.rounds_to(int(summary.loc[name, "total"]), cfg.models[name].stated_size)
    ]
    if off:
        out += [
            f"The stated sizes of {', '.join(off)} are not what the models hold, even rounded as stated; "
            "the table gives each gap.",
            "",
        ]
    out += [f"![Exact totals against the stated sizes]({fig})", ""]
    return "\n".join(out)


def components_section(cfg: params.Params, invs: dict[str, pd.DataFrame], fig: str) -> str:
    present = [c for c in inventory.COMPONENTS if any((inv["component"] == c).any() for inv in invs.values())]
    rows = []
    for name, inv in invs.items():
        sums = inv.groupby("component")["numel"].sum()
        total = int(inv["numel"].sum())
        rows.append([f"`{name}`"] + [f"{_int(sums.get(c, 0))} ({_share(sums.get(c, 0), total)})" for c in present])
    header = ["model"] + [figures.COMPONENT_LABELS[c] for c in present]
    return "\n".join(
        [
            "## Where the parameters are",
            "",
            "By component. A tied output head has no tensor of its own, so it adds nothing here.",
            "",
            _table(header, rows),
            "",
            f"![Parameters by component]({fig})",
            "",
        ]
    )


def blocks_section(cfg: params.Params, summary: pd.DataFrame, invs: dict[str, pd.DataFrame], fig: str) -> str:
    """One block of the first model, module by module from the inventory, and parameters per layer for every model."""
    name = next(iter(cfg.models))
    inv = invs[name]
    block = inv[inv["layer"] == 0]
    if block.empty:
        return ""
    prefix = block["name"].iloc[0].split(".0.", 1)[0] + ".0."
    modules = block.assign(module=block["name"].str.removeprefix(prefix).str.rpartition(".")[0])
    rows = []
    for module, part in modules.groupby("module", sort=False):
        shapes = ", ".join(s.replace("x", "×") for s in part["shape"])
        rows.append([f"`{module}`", part["component"].iloc[0], shapes, _int(part["numel"].sum())])
    per_block = int(block["numel"].sum())
    rows.append(["**block**", "", "", f"**{_int(per_block)}**"])
    out = [
        "## One block, tensor by tensor",
        "",
        f"Block 0 of `{name}` from its inventory (`results/inventory/{name}.csv`), module by module:",
        "",
        _table(["module", "component", "shapes", "parameters"], rows, "lllr"),
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
            f"In closed form with d = {d}: attention 4d² + 4d = {_int(parts['attention (c_attn, c_proj)'])}, "
            f"MLP 8d² + 5d = {_int(parts['MLP (c_fc, c_proj)'])}, two LayerNorms 4d = {_int(parts['two LayerNorms'])}; "
            f"12d² + 13d = {_int(closed)} per block, which {verdict} the inventory.",
            "",
        ]
    return "\n".join(out + [f"![Parameters per layer]({fig})", ""])


def bias_section(summary: pd.DataFrame, bias: pd.DataFrame, fig: str) -> str:
    allc = bias[bias["component"] == "all"]
    rows = []
    for name in summary.index:
        course = allc[(allc.model == name) & (allc.definition == "course")].set_index("category")["params"]
        role = allc[(allc.model == name) & (allc.definition == "role")].set_index("category")["params"]
        total = int(summary.loc[name, "total"])
        rows.append(
            [
                f"`{name}`",
                _int(course.get("weight", 0)),
                f"{_int(course.get('bias', 0))} ({100 * course.get('bias', 0) / total:.4f} %)",
                _int(role.get("matrix", 0)),
                _int(role.get("embedding", 0)),
                _int(role.get("bias", 0)),
                _int(role.get("norm_gain", 0)),
                _int(role.get("norm_bias", 0)),
            ]
        )
    return "\n".join(
        [
            "## Weights and biases",
            "",
            "Two definitions side by side. The course's: a bias is a parameter whose name ends in `.bias`, "
            "so LayerNorm shifts count as biases. By role: each tensor's role comes from its module type "
            "(Linear/Conv1D weight = matrix, Embedding = embedding, LayerNorm weight and bias = norm gain "
            "and norm bias).",
            "",
            _table(
                [
                    "model",
                    "weights (course)",
                    "biases (course)",
                    "matrices",
                    "embeddings",
                    "biases",
                    "norm gains",
                    "norm biases",
                ],
                rows,
            ),
            "",
            f"![Bias share per model]({fig})",
            "",
        ]
    )


def _stored_values(row: pd.Series) -> int:
    """How many stored elements a packed parameter takes (its bytes over the stored dtype's size)."""
    base = str(row["stored_dtype"]).split(":")[0]
    size = checkpoint.DTYPE_BYTES.get(base, 1)
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
            f"the sum of the header, {_int(naive)}, is the count; what it saves shows in the bits per parameter."
        )
    parts = []
    if not packed.empty:
        stored = sum(_stored_values(r) for _, r in packed.iterrows())
        base = sorted({str(d).split(":")[0] for d in packed["stored_dtype"]})
        parts.append(
            f"{_int(packed['numel'].sum())} weights are packed into {_int(stored)} {'/'.join(base)} values "
            f"({packed['numel'].sum() / stored:.0f} weights each)"
        )
    if meta:
        parts.append(f"{_int(meta)} stored values are scales, zero points or quantization state, not parameters")
    if not parts:
        return f"- `{name}`: its weights keep their shapes; the header sum {_int(naive)} is the count."
    ratio = naive / total
    return (
        f"- `{name}` ({s['quant_method']}): " + "; ".join(parts) + f". A naive sum of the header gives {_int(naive)}, "
        f"{ratio:.2f}× the true {_int(total)}."
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
                _int(s["total"]),
                _int(s["checkpoint_tensors"]),
                _bytes(s["checkpoint_bytes"]),
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
            _table(["model", "format", "parameters", "naive header sum", "bytes on disk", "bits per parameter"], rows),
            "",
            *sentences,
            "",
            f"![Naive header sum, true count and bytes on disk]({fig})",
            "",
        ]
    )


def ties_section(summary: pd.DataFrame, ties: pd.DataFrame, fig: str | None = None) -> str:
    rows, lines = [], []
    for _, t in ties.iterrows():
        s = summary.loc[t["model"]]
        r = "—" if pd.isna(t["pearson_r"]) else f"{t['pearson_r']:.6f}"
        diff = "—" if pd.isna(t["max_abs_diff"]) else f"{t['max_abs_diff']:.3g}"
        rows.append(
            [
                f"`{t['model']}`",
                "yes" if t["declared_tied"] else "no",
                "yes" if t["structural_tied"] else "no",
                f"`{t['input_embedding']}`",
                f"`{t['output_embedding']}`" if t["output_embedding"] else "—",
                _int(t["untied_head_params"]),
                "—" if pd.isna(t["stored_separately"]) else ("yes" if t["stored_separately"] else "no"),
                r,
                diff,
            ]
        )
        total, untied, head = int(s["total"]), int(s["total_untied"]), int(s["head_params"])
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
                f"it would hold {_int(untied)}; {_int(untied)} − {_int(head)} = {_int(untied - head)}."
            )
        elif head:
            lines.append(
                f"- `{t['model']}` is untied: its head is a tensor of its own. "
                f"{_int(total)} − {_int(head)} = {_int(total - head)} is what it would hold tied."
            )
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
            _table(
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


def distributions_section(stats: pd.DataFrame, hists: pd.DataFrame, fig: str | None) -> str:
    out = ["## What the values look like", ""]
    if stats.empty:
        out += [
            "No model in this sweep comes with weights (all are built from their configuration), so there are "
            "no values to describe. Give a model `source: path` or `source: hub` to see them.",
            "",
        ]
        return "\n".join(out)
    groups = stats[stats["by"].isin(["group", "all"])].dropna(subset=["mean"])
    rows = [
        [
            f"`{r.model}`",
            r.group.replace("_", " "),
            _int(r.count),
            f"{r.mean:.4g}",
            f"{r.std:.4g}",
            f"{r.min:.4g}",
            f"{r.max:.4g}",
            f"{r.l2:.4g}",
        ]
        for r in groups.itertuples(index=False)
    ]
    out += [
        "Streamed tensor by tensor from the memory-mapped checkpoint (each tied tensor once). Weights are the "
        "matrices and embeddings; biases the Linear/Conv1D biases and norm shifts; norm gains apart. "
        "By role and by component: `results/distributions.csv`; histograms: `results/histograms.csv`.",
        "",
        _table(["model", "values", "count", "mean", "std", "min", "max", "L2 norm"], rows, "llrrrrrr"),
        "",
    ]
    skipped = stats[stats["by"] == "skipped"]
    if not skipped.empty:
        out += [
            "Not read as values (packed or integer codes whose meaning needs the format's own dequantization): "
            + "; ".join(f"`{r.model}`: {_int(r.count)} parameters stored as {r.group}" for r in skipped.itertuples())
            + ".",
            "",
        ]
    if fig is not None:
        out += [_sampled(stats, hists), "", f"![Distribution of parameter values]({fig})", ""]
    return "\n".join(out)


def _sampled(stats: pd.DataFrame, hists: pd.DataFrame) -> str:
    """Which values the histograms count: all of them, or every k-th of each tensor."""
    every = int(hists["every"].max())
    if every == 1:
        return "The histograms count every value, each in its bfloat16 bucket, re-binned over each group's own range."
    read = stats[stats["by"] == "all"].set_index("model")["count"]
    counted = hists.groupby("model", sort=False)["count"].sum()
    parts = "; ".join(f"`{m}`: {_int(n)} of {_int(read[m])}" for m, n in counted.items())
    return (
        f"The histograms count every {every}th value of each tensor, from its first (a systematic sample: {parts}); "
        "the statistics above use every value. Set `values.hist_every: 1` to count them all, at about twice "
        "the time of the pass (`make bench`)."
    )


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
CONVENTION_TOOLS = conventions.TOOLS


def _cell(v) -> str:
    return "—" if pd.isna(v) else _int(v)


def conventions_section(conv: pd.DataFrame, summary: pd.DataFrame, fig: str) -> str:
    """The conventions table and, for the first model, why each tool prints what it prints."""
    wide = conv.pivot(index="model", columns="convention", values="params").reindex(list(summary.index))
    header = ["model"] + [CONVENTION_LABELS[c] for c in CONVENTION_LABELS]
    rows = [[f"`{m}`"] + [_cell(wide.loc[m, c]) for c in CONVENTION_LABELS] for m in wide.index]
    out = [
        "## Why every tool prints a different number",
        "",
        "The same model, counted under each convention in use (`results/conventions.csv`):",
        "",
        _table(header, rows),
        "",
        f"![Each model under every convention]({fig})",
        "",
    ]
    m = "gpt2" if "gpt2" in wide.index else wide.index[0]
    v = {c: wide.loc[m, c] for c in CONVENTION_LABELS}
    s = summary.loc[m]
    u = int(v["unique"])
    lines = [f"For `{m}`:", ""]
    lines.append(f"- **{_int(u)}** is what PyTorch counts: every trainable tensor once, a tied tensor once.")
    if int(v["untied_head"]) != u:
        lines.append(
            f"- **{_int(v['untied_head'])}** is the same model with an output head of its own"
            + (", as minGPT builds it and the course's Model 5 is" if s["model_type"] == "gpt2" else "")
            + f": {_int(v['untied_head'])} − {_int(u)} = {_int(int(v['untied_head']) - u)}, "
            "the vocabulary × width head matrix that the released model shares with its token embedding."
        )
    if int(v["torchinfo"]) != u:
        lines.append(
            f"- **{_int(v['torchinfo'])}** is what torchinfo's `summary` prints as total params: it adds up each "
            "module's own parameters, so a tied tensor counts once per module that holds it (the token embedding "
            "and the output head); this is where most people meet that number."
        )
    pos = u - int(v["nanogpt_default"])
    if pos:
        lines.append(
            f"- **{_int(v['nanogpt_default'])}** is what nanoGPT prints ({int(v['nanogpt_default']) / 1e6:.2f}M): its "
            f"get_num_params() leaves out the {_int(pos)} learned position-embedding values by default."
        )
    lines.append(
        f"- **{_int(v['non_embedding_pythia'])}** is the Pythia suite's non-embedding count: without the input and "
        f"output embedding matrices ({_int(u - int(v['non_embedding_pythia']))}), learned positions kept."
    )
    lines.append(
        f"- **{_int(v['non_embedding_kaplan'])}** is Kaplan et al.'s non-embedding count, the one scaling laws use: "
        f"every embedding table left out ({_int(u - int(v['non_embedding_kaplan']))})."
    )
    lines.append(
        f"- **{_int(v['attn_mlp_matrices'])}** ({human(int(v['attn_mlp_matrices']))}) is TransformerLens's `n_params`: "
        f"only the attention and MLP weight matrices, so it also drops "
        f"{_int(int(v['non_embedding_kaplan']) - int(v['attn_mlp_matrices']))} biases and norm values."
    )
    quantized = isinstance(s.get("quant_method"), str) and bool(s["quant_method"])
    if not pd.isna(v["checkpoint_tensors"]) and quantized:
        lines.append(
            f"- **{_int(v['checkpoint_tensors'])}** is a naive sum of its header, packed storage and quantization "
            "metadata counted as parameters (see Quantized checkpoints)."
        )
    elif not pd.isna(v["checkpoint_tensors"]):
        extra = int(v["checkpoint_tensors"]) - u
        masks = s["model_type"] == "gpt2" and extra > 0
        lines.append(
            f"- **{_int(v['checkpoint_tensors'])}** ({human(int(v['checkpoint_tensors']))}) is what the Hub's "
            "model page shows: a sum over every tensor in the checkpoint file"
            + (
                f", {_int(extra)} of them in tensors that are not parameters"
                + (" (these GPT-2 files carry a causal mask per layer)" if masks else "")
                if extra > 0
                else ", here the parameters exactly"
            )
            + "."
        )
    else:
        lines.append(
            "- The Hub's model page sums every tensor in the checkpoint file, tensors that are not parameters "
            f"included. This run has no checkpoint for `{m}` (source {s['source']}); give it `source: hub` or "
            "`source: path` to see that sum here."
        )
    if not pd.isna(v["stated"]):
        lines.append(
            f"- **{s['stated_size']}** is the size its authors stated; the exact count is {_int(u)}, "
            f"{_int(abs(u - int(v['stated'])))} {'more' if u > int(v['stated']) else 'less'}."
        )
    return "\n".join(out + lines + [""])


ACTIVE_CONVENTIONS = {
    "active_per_token": "every parameter a token's forward pass uses, embeddings included (Mixtral's convention)",
    "active_excluding_input_embedding": "the same without the input embedding lookup (gpt-oss's convention)",
}


def _card_sentence(name: str, spec: params.ModelSpec, s: pd.Series, active: pd.Series) -> str:
    """One sentence reconciling a mixture of experts' stated total and active sizes with the count."""
    total = int(s["total"])
    parts = [f"- `{name}` ({int(s['n_experts'])} routed experts per layer, {int(s['experts_per_token'])} per token):"]
    if pd.notna(s["stated_params"]):
        verdict = "is" if params.rounds_to(total, spec.stated_size) else "is **not**"
        parts.append(f"its stated {spec.stated_size} total {verdict} the count {_int(total)} rounded as stated;")
    if pd.notna(s["stated_active_params"]):
        matching = [c for c in ACTIVE_CONVENTIONS if params.rounds_to(int(active[c]), spec.stated_active)]
        values = "; ".join(f"`{c}` {_int(active[c])} ({human(active[c])})" for c in ACTIVE_CONVENTIONS)
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
        parts.append(f"one token uses {_int(active['active_per_token'])} of them.")
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
                _int(s["total"]),
                _int(a["active_per_token"]),
                _int(a["active_excluding_input_embedding"]),
                f"{100 * a['active_per_token'] / s['total']:.1f} %",
                experts,
                _int(s["routed_expert_params"]) if moe_model else "—",
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
            _table([*header, "routed expert params"], rows),
            "",
            *sentences,
            "",
            f"![Total against active parameters]({fig})",
            "",
        ]
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def adam_label(cfg: params.Params) -> str:
    return f"training, mixed-precision Adam ({cfg.cost['adam_bytes_per_param']} B/param)"


def cost_section(cfg: params.Params, summary: pd.DataFrame, costs: pd.DataFrame, grid: pd.DataFrame, figs: dict) -> str:
    wide = costs.pivot(index="model", columns="quantity", values="value").loc[list(cfg.models)]
    rows = []
    for name, c in wide.iterrows():
        rows.append(
            [
                f"`{name}`",
                *(_gib(c[f"weights_bytes_{d}"]) for d in ("float32", "bfloat16", "int8", "int4")),
                _gib(c["largest_layer_bytes_float32"]),
                _gib(c["train_adam_mixed_bytes"]),
                f"{_int(c['kv_cache_bytes_per_token_bfloat16'])} B",
                _gib(c["kv_cache_bytes_at_context"]) if c["kv_cache_bytes_at_context"] else "—",
                f"{c['forward_flops_per_token'] / 1e9:,.2f} G",
            ]
        )
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
        "attention caches its latent and rotary key). FLOPs per token follow Kaplan et al.: "
        "2N + 2·n_layer·n_ctx·d_attn, N the non-embedding parameters one token uses, at that context.",
        "",
        _table(
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
            ],  # fmt: skip
            rows,
        ),
        "",
        "The largest layer follows accelerate's definition (a module with no children, or a whole block the "
        "model says must not be split); accelerate's totals also count buffers such as position ids and rotary "
        "frequencies, which are not parameters and are left out here.",
        "",
        f"Across the what-if grid ({len(grid)} GPT-2-shaped models), bfloat16 weights run from {_gib(bf16.min())} to "
        f"{_gib(bf16.max())} and training memory from {_gib(adam * grid['params'].min())} to "
        f"{_gib(adam * grid['params'].max())}.",
        "",
        f"![Memory per dtype and for training]({figs['cost']})",
        "",
    ]
    return "\n".join(out + _published_lines(cfg, summary, figs["published"]))


def _published_lines(cfg: params.Params, summary: pd.DataFrame, fig: str) -> list[str]:
    """What the parameters buy, by the GPT-2 paper's own zero-shot numbers, against the exact counts."""
    table = results.published(cfg)
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
        f"over the sizes in the sweep and set beside Kaplan et al.'s α_N ≈ {cost.KAPLAN_ALPHA_N} (their fit of "
        "test loss on WebText2; these are other datasets, zero-shot, so only the order of magnitude compares).",
        "",
    ]
    for bench, part in present.groupby("benchmark", sort=False):
        n = [float(summary.loc[m, "non_embedding"]) for m in part["model"]]
        alpha, _ = cost.power_law(n, list(part["value"]))
        points = ", ".join(f"{m} {v:g} at {human(k)}" for m, v, k in zip(part["model"], part["value"], n, strict=True))
        lines.append(f"- {bench} perplexity: α = {alpha:.3f} over {len(n)} sizes ({points}).")
    return lines + ["", f"![Published zero-shot perplexity against exact non-embedding parameters]({fig})", ""]


def whatif_section(cfg: params.Params, fig: str) -> str:
    model_type = cfg.whatif["base"].architecture["model_type"]
    gpt2 = model_type == "gpt2"
    family = "GPT-2" if gpt2 else f"the {model_type} base (`whatif.base`)"
    return "\n".join(
        [
            f"## What if {'GPT-2' if gpt2 else 'the base model'} were deeper or wider?",
            "",
            f"Every (L, d) of the what-if grid of {family} (`whatif` in `conf/config.yaml`, counted on the meta "
            "device into `results/whatif.csv`) against 12·L·d², the attention and MLP matrices of L GPT-2 blocks "
            "of width d, a reference line for any family. Small models sit far above it because their embeddings "
            "dominate; large ones approach it"
            + (
                ""
                if gpt2
                else f" (a {model_type} block holds more or fewer matrices than GPT-2's, so it settles "
                "on a line of its own)"
            )
            + ". Vary the grid with `dvc exp run -S 'whatif.n_layer=[...]'`.",
            "",
            f"![Parameters against 12·L·d²]({fig})",
            "",
        ]
    )


def definitions_section() -> str:
    lines = ["## Definitions", "", "Columns of `results/summary.csv`:", ""]
    lines += [f"- `{key}`: {text}" for key, text in inventory.DEFINITIONS.items()]
    return "\n".join(lines) + "\n"


def render(cfg: params.Params) -> dict[str, object]:
    """Compute everything the report shows, without writing: {"text": markdown, "figures": [(draw, args, path)]}."""
    summary = results.summary(cfg)
    ties = results.table(cfg, "ties")
    bias = results.table(cfg, "bias")
    full = {name: results.inventory(cfg, name) for name in cfg.models}  # every row: buffers, metadata, extras
    invs = {name: inventory.parameters(inv) for name, inv in full.items()}
    conv = results.table(cfg, "conventions")
    grid = results.grid(cfg)
    cost_table = results.table(cfg, "cost")
    tie_sample = results.table(cfg, "tie_sample")
    stats = results.table(cfg, "distributions")
    hists = results.table(cfg, "histograms")
    report_dir = Path(cfg.paths["report"]).parent
    fig_dir = Path(cfg.paths["figures"])
    rel = Path(os.path.relpath(fig_dir, report_dir))
    names = {
        "totals": "totals.png",
        "components": "components.png",
        "bias": "bias_share.png",
        "values": "distributions.png",
        "whatif": "whatif.png",
        "moe": "total_active.png",
        "quantized": "quantized.png",
        "cost": "cost.png",
        "layers": "per_layer.png",
        "conventions": "conventions.png",
        "ties": "ties.png",
        "published": "published.png",
    }
    body = "\n".join(
        [
            "# How many parameters?",
            "",
            "_Rendered by the `report` stage of `dvc repro` from `params.yaml` and `results/`; do not edit._",
            "",
            "How many parameters does each model hold, do its input embedding and output unembedding share one "
            'tensor, and what share are weights and biases? "The course" below is the *CodeChallenge: How Many '
            "Parameters* lecture this project grew from; its findings for GPT-2 are reproduced here exactly.",
            "",
            f"Models: {', '.join(f'`{n}`' for n in cfg.models)}.",
            "",
            totals_section(cfg, summary, full, (rel / names["totals"]).as_posix()),
            components_section(cfg, invs, (rel / names["components"]).as_posix()),
            *filter(None, [blocks_section(cfg, summary, invs, (rel / names["layers"]).as_posix())]),
            bias_section(summary, bias, (rel / names["bias"]).as_posix()),
            conventions_section(conv, summary, (rel / names["conventions"]).as_posix()),
            *filter(None, [moe_section(cfg, summary, conv, (rel / names["moe"]).as_posix())]),  # MoE sweeps only
            *filter(None, [quantized_section(cfg, summary, full, (rel / names["quantized"]).as_posix())]),
            ties_section(summary, ties, (rel / names["ties"]).as_posix() if not tie_sample.empty else None),
            distributions_section(stats, hists, (rel / names["values"]).as_posix() if not hists.empty else None),
            whatif_section(cfg, (rel / names["whatif"]).as_posix()),
            cost_section(
                cfg, summary, cost_table, grid, {k: (rel / names[k]).as_posix() for k in ("cost", "published")}
            ),
            definitions_section(),
        ]
    )
    by_component = pd.concat(
        [
            inv.groupby("component", sort=False)["numel"].sum().rename("params").reset_index().assign(model=n)
            for n, inv in invs.items()
        ]
    )
    shares = bias[(bias["component"] == "all") & (bias["category"] == "bias")]
    drawn = [
        (figures.totals, (summary.reset_index(drop=True),), fig_dir / names["totals"]),
        (figures.components, (by_component,), fig_dir / names["components"]),
        (figures.bias_share, (shares,), fig_dir / names["bias"]),
    ]
    shipped = summary.reset_index(drop=True).assign(
        params=summary["total"].to_numpy(),
        twelve_l_d2=12 * summary["n_layer"].to_numpy() * summary["d_model"].to_numpy() ** 2,
    )
    drawn.append((figures.whatif, (grid, shipped), fig_dir / names["whatif"]))
    drawn.append((figures.cost, (cost_table, adam_label(cfg)), fig_dir / names["cost"]))
    drawn.append((figures.conventions, (conv, CONVENTION_TOOLS), fig_dir / names["conventions"]))
    if not tie_sample.empty:
        drawn.append((figures.ties, (tie_sample,), fig_dir / names["ties"]))
    layered = [inv.assign(model=n) for n, inv in invs.items() if inv["layer"].notna().any()]
    if layered and not invs[next(iter(cfg.models))]["layer"].isna().all():
        drawn.append((figures.per_layer, (pd.concat(layered),), fig_dir / names["layers"]))
    pub = results.published(cfg)
    pub = pub[pub["model"].isin(summary.index)]
    if pub["model"].nunique() >= 2:
        pub = pub.assign(non_embedding=[float(summary.loc[m, "non_embedding"]) for m in pub["model"]])
        drawn.append((figures.published, (pub,), fig_dir / names["published"]))
    quantized = summary[summary["quant_method"].notna() & (summary["quant_method"].astype(str) != "")]
    if not quantized.empty:
        drawn.append((figures.quantized, (quantized.reset_index(drop=True),), fig_dir / names["quantized"]))
    if summary["n_experts"].notna().any():
        wide = conv.pivot(index="model", columns="convention", values="params").loc[list(cfg.models)]
        points = wide.reset_index().assign(
            total=summary.loc[list(cfg.models), "total"].to_numpy(),
            kind=["mixture of experts" if pd.notna(summary.loc[n, "n_experts"]) else "dense" for n in cfg.models],
        )
        drawn.append((figures.total_active, (points,), fig_dir / names["moe"]))
    if not hists.empty:
        drawn.append(
            (
                figures.distributions,
                (hists, int(cfg.values["bins"]) or plotdata.DEFAULT_BINS),
                fig_dir / names["values"],
            )
        )
    # the tables plotdata writes for `dvc plots`, as read here (each CSV read once per report)
    return {"text": body, "figures": drawn, "frames": {"summary": summary, "hists": hists, "grid": grid}}


STYLE = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; } th { background: #f6f8fa; }
td { font-variant-numeric: tabular-nums; } code { background: #f6f8fa; padding: 0 .25em; border-radius: 4px; }
img { max-width: 100%; height: auto; }
"""
# Set once every figure has decoded: a reader (or a test in a headless browser) can see that all loaded.
LOADED = (
    "<script>addEventListener('load',()=>{const i=[...document.images];"
    "document.body.dataset.figures=i.length;document.body.dataset.loaded=i.filter(x=>x.naturalWidth>0).length})"
    "</script>"
)


def to_html(markdown: str, figures: dict[str, bytes], title: str = "How many parameters?") -> str:
    """The Markdown report as one self-contained HTML page: figures embedded as data URIs, no network at all."""
    import base64
    import html
    import re

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(match: re.Match) -> str:
        src = html.unescape(match.group(1))
        if src not in figures:
            raise PipelineError(f"report: figure {src} is referenced but was not drawn")
        return f'src="data:image/png;base64,{base64.b64encode(figures[src]).decode()}"'

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>\n'
        f"<body>\n{body}{LOADED}\n</body></html>\n"
    )


# The CSVs the report is drawn from (keys of params `paths`), copied beside it so the published artifact carries them
DATA = ("summary", "conventions", "ties", "tie_sample", "bias", "distributions", "histograms", "whatif", "cost")


def data_files(cfg: params.Params) -> dict[Path, Path]:
    """{copy under paths.report_data: source} for every CSV the report reads, inventories in a subfolder."""
    data = Path(cfg.paths["report_data"])
    files = {data / Path(cfg.paths[key]).name: Path(cfg.paths[key]) for key in DATA}
    files[data / "published" / Path(cfg.paths["published"]).name] = Path(cfg.paths["published"])
    for name in cfg.models:
        files[data / "inventory" / f"{name}.csv"] = Path(cfg.paths["inventory"]) / f"{name}.csv"
    return files


def main() -> None:
    cfg = params.load()
    rendered = render(cfg)
    dpi = int(cfg.report["dpi"])
    fig_dir = Path(cfg.paths["figures"])
    report_dir = Path(cfg.paths["report"]).parent
    with atomic.batch():  # the report, its HTML twin and its figures appear together, or not at all
        for draw, data, path in rendered["figures"]:
            draw(*data, path, dpi)
        atomic.sync_dir(fig_dir, keep=[path.name for _, _, path in rendered["figures"]])
        atomic.write_text(cfg.paths["report"], rendered["text"])
        drawn = {os.path.relpath(path, report_dir): atomic.staged(path) for _, _, path in rendered["figures"]}
        atomic.write_text(cfg.paths["report_html"], to_html(rendered["text"], drawn))
        copies = data_files(cfg)
        for copy, source in copies.items():  # byte for byte: the artifact's data are the results themselves
            atomic.write_bytes(copy, source.read_bytes())
        for folder in {copy.parent for copy in copies}:
            atomic.sync_dir(folder, keep=[c.name for c in copies if c.parent == folder])
        plotdata.write(cfg, **rendered["frames"])  # the CSVs `dvc plots show` draws (dvc.yaml `plots:`)
    log.info(
        "wrote %s, %s, %d figures and the %d CSVs they were drawn from (%s)",
        cfg.paths["report"],
        cfg.paths["report_html"],
        len(rendered["figures"]),
        len(copies),
        cfg.paths["report_data"],
    )


if __name__ == "__main__":
    run(main)
