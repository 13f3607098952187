"""Stage count: the per-tensor inventory of every model, built on the meta device, and its summary.

Writes <paths.inventory>/<name>.csv per model, <paths.summary> (one row per model) and
<paths.metrics>. All models go through one process, so torch and transformers are imported once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import atomic, checkpoint, conventions, cost, formats, gguf_file, inventory, moe, params, progress, quant
from pipeline.cli import PipelineError, collect, run

log = logging.getLogger("count")

SUMMARY_COLUMNS = [
    "model",
    "total",
    "total_untied",
    "embedding",
    "non_embedding",
    "bias_named",
    "bias_named_share",
    "active",
    "n_experts",
    "experts_per_token",
    "routed_expert_params",
    "head_params",
    "declared_tied",
    "structural_tied",
    "input_embedding",
    "output_embedding",
    "model_type",
    "model_class",
    "class_from",
    "ignored_fields",
    "n_layer",
    "d_model",
    "vocab_size",
    "n_positions",
    "stated_size",
    "stated_params",
    "stated_active",
    "stated_active_params",
    "what_if",
    "source",
    "revision",
    "checkpoint_tensors",
    "checkpoint_buffers",
    "checkpoint_extra",
    "quant_method",
    "bits_per_param",
    "fetch",
    "checkpoint_bytes",
    "bytes_fetched",
]
# The largest count accepted: 10 trillion, ten times any published model; beyond it a config is a typo.
MAX_PARAMS = 10**13


def provenance(model_dir: Path, name: str) -> dict:
    path = Path(model_dir) / "provenance.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"model '{name}': {path} is missing (run the download stage)") from None


def count_model(spec: params.ModelSpec, model_dir: Path) -> tuple[pd.DataFrame, dict]:
    """Inventory and summary row of one downloaded model; its checkpoint, if any, reconciled with it."""
    inv, row, _, _ = _count(spec, model_dir)
    return inv, row


def _count(spec: params.ModelSpec, model_dir: Path) -> tuple[pd.DataFrame, dict, Any, Any]:
    """count_model, plus the meta-built model and its config (for the cost table)."""
    config = inventory.load_config(model_dir, spec.name, spec.written, spec.config_path)
    cls, class_from = inventory.model_class(config, spec.name, spec.auto_class)
    model, read = inventory.build_meta_reading(config, spec.name, spec.auto_class)
    try:
        inv = inventory.inventory(model, spec.name)
    except PipelineError as exc:  # say which class was built, also when it cannot be counted
        raise PipelineError(
            f"model '{spec.name}': {cls.__name__} ({inventory.class_reason(class_from)}): {exc}"
        ) from None
    n_experts, top_k = moe.settings(config, moe.structure(model), spec.name)
    stacked = inv.loc[inv["component"] == "experts", ["name", "experts"]]
    for pname, count_ in stacked.itertuples(index=False):
        if count_ != n_experts:
            raise PipelineError(f"model '{spec.name}': {pname} stacks {count_} experts, the config says {n_experts}")
    total = int(inventory.parameters(inv)["numel"].sum())
    if total > MAX_PARAMS:
        raise PipelineError(f"model '{spec.name}': {total:,} parameters, more than the {MAX_PARAMS:,} counted at most")
    input_name, output_name = inventory.embedding_names(model)
    prov = provenance(model_dir, spec.name)
    loaded = formats.load(Path(model_dir), spec.name)
    regrouped = loaded.regrouped
    entries = regrouped.entries
    stored = buffers = extra = None
    if loaded.fmt:  # weight files are there: even one with no tensors must account for every parameter
        if loaded.fmt == "gguf":
            rec = gguf_file.reconcile(model, entries, loaded.gguf_arch, spec.name)
        else:
            rec = checkpoint.reconcile(model, entries, spec.name, base_only=inventory.is_base_class(cls, config))
            quant.require_packed(regrouped, spec.name)  # after reconcile: tensors no rule knows are named there
        inv = inventory.with_checkpoint(inv, model, rec, regrouped.metadata)
        stored = rec.checkpoint_tensors
        buffers = sum(e.numel for e, _ in rec.buffers)
        extra = sum(e.numel for e in rec.extra)
        from_checkpoint = stored - buffers - rec.tied_copies - sum(e.numel for e in rec.unused + rec.extra)
        from_architecture = int(inventory.parameters(inv)["numel"].sum())
        if from_checkpoint != from_architecture:  # reconcile() makes this impossible; never pick one silently
            raise PipelineError(
                f"model '{spec.name}': the checkpoint holds {from_checkpoint:,} parameters, "
                f"the architecture {from_architecture:,}"
            )
        stored = regrouped.header_sum  # what a naive sum of the header gives (packed words as parameters)
    row = {
        "model": spec.name,
        **inventory.summarize(inv, top_k),
        "n_experts": n_experts,
        "experts_per_token": top_k,
        "declared_tied": bool(getattr(config, "tie_word_embeddings", False)),
        "input_embedding": input_name,
        "output_embedding": output_name,
        "model_type": config.model_type,
        "model_class": cls.__name__,
        "class_from": class_from,
        "ignored_fields": ";".join(inventory.ignored_fields(config, _raw_config(model_dir, spec.name), read)),
        "n_layer": getattr(config, "num_hidden_layers", None),
        "d_model": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "n_positions": getattr(config, "max_position_embeddings", None),
        "stated_size": spec.stated_size,
        "stated_params": spec.stated_params,
        "stated_active": spec.stated_active,
        "stated_active_params": spec.stated_active_params,
        "what_if": "",
        "source": prov["source"],
        "revision": prov.get("revision") or "",
        "checkpoint_tensors": stored,
        "checkpoint_buffers": buffers,
        "checkpoint_extra": extra,
        "quant_method": regrouped.method,
        "bits_per_param": prov["checkpoint_bytes"] * 8 / total if entries and prov.get("checkpoint_bytes") else None,
        "fetch": prov.get("fetch") or "",
        "checkpoint_bytes": prov.get("checkpoint_bytes"),
        "bytes_fetched": prov.get("bytes_fetched"),
    }
    return inv, row, model, config


def _raw_config(model_dir: Path, name: str) -> dict:
    from pipeline.cli import read_json_object

    return read_json_object(Path(model_dir) / "config.json", f"model '{name}'")


WHATIF_COLUMNS = ["n_layer", "n_embd", "n_head", "params", "twelve_l_d2"]


def whatif_config(base: dict, n_layer: int, n_embd: int, head_width: int) -> Any:
    """The config of whatif.base with L layers and width d, for any family.

    Depth, width and heads are set through the config class's canonical names (hidden_size,
    num_hidden_layers, num_attention_heads; GPT-2 maps them to n_embd, n_layer, n_head), so the
    grid varies the real model whatever its field names. Heads are d / head_width; the base's
    ratios carry over where it has them: query heads per KV head, and the MLP width per unit of d.
    """
    from transformers import CONFIG_MAPPING

    arch = dict(base)
    cls = CONFIG_MAPPING[arch.pop("model_type")]
    base_cfg = cls(**arch)
    alias = getattr(cls, "attribute_map", None) or {}

    def field(canonical: str) -> str:
        return alias.get(canonical, canonical)

    d0, h0 = base_cfg.hidden_size, base_cfg.num_attention_heads
    heads = n_embd // head_width
    arch[field("num_hidden_layers")], arch[field("hidden_size")] = n_layer, n_embd
    arch[field("num_attention_heads")] = heads
    if getattr(base_cfg, "head_dim", None) is not None:
        arch["head_dim"] = head_width
    kv0 = getattr(base_cfg, "num_key_value_heads", None)
    if kv0:
        if (heads * kv0) % h0:
            raise PipelineError(
                f"whatif: {heads} heads (d={n_embd}) cannot keep whatif.base's {h0 // kv0} query heads per KV head"
            )
        arch[field("num_key_value_heads")] = heads * kv0 // h0
    for width in ("intermediate_size", "n_inner", "ffn_dim"):
        if isinstance(getattr(base_cfg, width, None), int) and base_cfg.hidden_size:
            arch[width] = getattr(base_cfg, width) * n_embd // d0
    return cls(**arch)


def whatif_grid(cfg: params.Params) -> pd.DataFrame:
    """Count every (n_layer, n_embd) variant of whatif.base on the meta device."""
    w = cfg.whatif
    base = dict(w["base"].architecture)
    rows = []
    for n_layer in w["n_layer"]:
        for n_embd in w["n_embd"]:
            config = whatif_config(base, n_layer, n_embd, int(w["head_width"]))
            model = inventory.build_meta(config, "whatif.base")
            total = sum(p.numel() for p in model.parameters())
            rows.append([n_layer, n_embd, config.num_attention_heads, total, 12 * n_layer * n_embd**2])
    return pd.DataFrame(rows, columns=WHATIF_COLUMNS)


def main() -> None:
    cfg = params.load()
    marked = params.what_if(cfg)  # models an override changed: their stated sizes no longer apply

    def one(name: str, spec: params.ModelSpec) -> tuple[pd.DataFrame, dict, list, pd.DataFrame]:
        inv, row, model, config = _count(spec, cfg.models_dir(name))
        row["what_if"] = marked.get(name, "")
        if name in marked:
            for key in ("stated_size", "stated_params", "stated_active", "stated_active_params"):
                row[key] = None
            log.warning("%s: changed by an override (%s); its stated size no longer applies", name, marked[name])
        mine = conventions.conventions(inv, row)
        by_name = {c["convention"]: c["params"] for c in mine}
        causal = inventory.is_causal_class(type(model), config)
        costs = cost.table(name, model, config, row, by_name, cfg.cost, causal)
        log.info("%s: %s parameters in %d tensors (%s)", name, f"{row['total']:,}", len(inv), row["model_class"])
        return inv, row, mine, costs

    # Every model is counted before anything is written, and every refused one is named (one line each)
    counted = collect(progress.bar(cfg.models.items(), "count", "models", total=len(cfg.models)), one)
    inventories = {name: inv for name, (inv, _, _, _) in counted.items()}
    rows = [row for _, row, _, _ in counted.values()]
    conv = [c for _, _, mine, _ in counted.values() for c in mine]
    costs = [table for _, _, _, table in counted.values()]
    grid = whatif_grid(cfg)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for column in (
        "stated_params",
        "stated_active_params",
        "checkpoint_tensors",
        "checkpoint_buffers",
        "checkpoint_extra",
        "checkpoint_bytes",
        "bytes_fetched",
        "n_experts",
        "experts_per_token",
        "routed_expert_params",
    ):
        summary[column] = summary[column].astype("Int64")
    inv_dir = cfg.paths["inventory"]
    metrics = {row["model"]: row["total"] for row in rows}  # flat and few: one column per model in dvc exp show
    with atomic.batch():  # every file, or none
        for name, inv in inventories.items():
            atomic.write_csv(f"{inv_dir}/{name}.csv", inv)
        atomic.sync_dir(inv_dir, keep=[f"{name}.csv" for name in inventories])
        atomic.write_csv(cfg.paths["summary"], summary)
        atomic.write_csv(cfg.paths["conventions"], conventions.table(conv))
        atomic.write_csv(cfg.paths["whatif"], grid)
        atomic.write_csv(cfg.paths["cost"], pd.concat(costs, ignore_index=True))
        atomic.write_json(cfg.paths["metrics"], metrics)


if __name__ == "__main__":
    run(main)
