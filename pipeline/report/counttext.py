"""`hmp count SOURCE`: the count pipeline.answers.count gives, in its readable form (--json: as it is)."""

from __future__ import annotations

from typing import Any


def count_text(result: dict, per_layer: bool = False) -> str:
    """The readable form of a count (pipeline.answers.count.Count.as_json())."""
    import pandas as pd

    from pipeline.model import build, conventions
    from pipeline.report.text import human  # the report's own short form (124.4M, 1.56B)

    s = result["summary"]
    src = result["source"]
    where = {
        "config": "its config alone (no weights)" + (f", as {src['conf']} gives it" if src.get("conf") else ""),
        "path": f"{src.get('path')}",
        "hub": f"{src.get('hub_id')} @ {str(src.get('revision'))[:12]}"
        + (" (from the local Hub cache: HF_HUB_OFFLINE is set)" if result["from_cache"] else ""),
    }[src["source"]]
    weights = "with weights" if s.get("checkpoint_tensors") is not None else "shapes only, no weights"
    total = int(s["total"])
    lines = [
        f"{result['model']}: {total:,} parameters ({human(total)}), model type {s['model_type']}, {weights}",
        f"  from {where}",
        f"  counted as {s['model_class']} ({build.class_reason(s['class_from'])})",
    ]
    if s.get("ignored_fields"):
        lines.append(f"  config.json fields the model never reads: {s['ignored_fields'].replace(';', ', ')}")
    if s.get("n_experts"):
        lines.append(
            f"  mixture of experts: {int(s['n_experts'])} experts, {int(s['experts_per_token'])} per token; "
            f"active per token {int(s['active']):,} ({human(int(s['active']))})"
        )
    if s.get("quant_method"):
        lines.append(f"  quantized ({s['quant_method']}): a naive sum of its header gives {s['checkpoint_tensors']:,}")
    conv = pd.DataFrame(result["conventions"]).dropna(subset=["params"])
    dense = not s.get("n_experts")  # a dense model's active counts equal its total: not shown
    conv = conv[~conv["convention"].isin(conventions.ACTIVE_TOOLS) | (not dense)]
    who = {**conventions.TOOLS, **conventions.ACTIVE_TOOLS, **conventions.PART_TOOLS}
    table = pd.DataFrame(
        {
            "convention": conv["convention"],
            "parameters": conv["params"].astype("int64"),
            "": conv["params"].map(lambda n: human(int(n))),
            "who prints it": conv["convention"].map(who),
        }
    )
    lines += ["", "Conventions (why every tool prints a different number; --json has each definition):"]
    lines.append(table.to_markdown(index=False, tablefmt="simple", intfmt=","))
    t = result["tie"]
    r = t.get("pearson_r")
    values = f"r = {r:.6f}, max |Δ| = {t['max_abs_diff']:.3g} ({t['method']})" if r is not None else t["method"]
    lines += [
        "",
        "Tie (input embedding and output unembedding):",
        f"  declared in the config: {_yes(t['declared_tied'])} · one tensor in the built model: "
        f"{_yes(t['structural_tied'])} · values: {values}",
    ]
    if s.get("tie_note"):
        lines.append(f"  {s['tie_note']}")
    wb = result["weights_and_biases"]
    lines += ["", "Weights and biases (the course's split: names ending in .bias):"]
    lines += [f"  {cat:<7}{n:>16,}  {100 * n / total:8.4f} %" for cat, n in wb.items()]
    if per_layer:
        table = pd.DataFrame(result["blocks"])
        table["layer"] = table["layer"].map(lambda k: "" if pd.isna(k) else str(int(k)))
        lines += ["", "Per module and block (each tied tensor once, where it is first held):"]
        lines.append(table.to_markdown(index=False, tablefmt="simple", intfmt=",", colalign=("left",)))
    return "\n".join(lines)


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"
