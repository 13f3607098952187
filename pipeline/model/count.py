"""Counting one downloaded model: its class built on the meta device, its inventory, its checkpoint reconciled
with it, and its summary row (what the count stage writes per model, and what `hmp count` prints).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import formats
from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.formats import quant
from pipeline.model import build, config_file, inventory, moe, reconcile, tying

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
    "tie_note",
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
        raise PipelineError(f"{path} is missing (run the download stage)", model=name) from None


@dataclass
class Built:
    """One architecture built on the meta device and counted: what every checkpoint of that config shares."""

    config: Any
    cls: type
    class_from: str
    model: Any
    read: frozenset[str]
    raw: dict
    tie_note: str
    inv: pd.DataFrame
    n_experts: int | None
    top_k: int | None
    total: int
    input_name: str
    output_name: str
    summary: dict[str, Any] | None = None  # inventory.summarize of the architecture, kept once computed (census)


@dataclass
class Weighed:
    """A checkpoint reconciled with a Built architecture."""

    inv: pd.DataFrame  # the architecture's inventory with each parameter's checkpoint key and stored dtype
    rec: Any  # reconcile.Reconciled, or None without weights
    # named as the summary's and the census's columns
    checkpoint_tensors: int | None  # what a naive sum of the header gives (packed words as parameters)
    checkpoint_buffers: int | None  # values stored in tensors that are not parameters
    checkpoint_extra: int | None  # values of stored blocks the class does not build


def build_architecture(
    model_dir: Path, name: str, auto_class: str = "auto", written: tuple[str, ...] = (), config_path: str | None = None
) -> Built:
    """The class model_dir/config.json names (resolved once), built on the meta device (once), its inventory and
    its MoE settings."""
    config = config_file.load_config(model_dir, name, written, config_path)
    cls, class_from = build.model_class(config, name, auto_class)
    model, read = build.build_meta_reading(config, name, auto_class, cls)
    raw = _raw_config(model_dir, name)
    tie_note = tying.follow_declared_tie(model, raw)
    try:
        inv = inventory.inventory(model, name)
    except PipelineError as exc:  # say which class was built, also when it cannot be counted
        raise exc.named(name).reworded(f"{cls.__name__} ({build.class_reason(class_from)}): {exc.message}") from None
    n_experts, top_k = moe.settings(config, moe.structure(model), name, dict(model.named_modules()))
    stacked = inv.loc[inv["component"] == "experts", ["name", "experts"]]
    for pname, count_ in stacked.itertuples(index=False):
        if count_ != n_experts:
            raise PipelineError(f"{pname} stacks {count_} experts, the config says {n_experts}", model=name)
    total = int(inventory.parameters(inv)["numel"].sum())
    if total > MAX_PARAMS:
        raise PipelineError(f"{total:,} parameters, more than the {MAX_PARAMS:,} counted at most", model=name)
    input_name, output_name = inventory.embedding_names(model)
    return Built(
        config, cls, class_from, model, read, raw, tie_note, inv, n_experts, top_k, total, input_name, output_name
    )


def weigh(built: Built, loaded: formats.Loaded, name: str, inventory_rows: bool = True) -> Weighed:
    """Reconcile a checkpoint's headers with the built architecture: every parameter accounted for, or an error.

    inventory_rows=False leaves the inventory as the architecture's (no checkpoint columns, no rows for buffers
    and extras): a census needs the reconciliation and its totals, not the table."""
    regrouped = loaded.regrouped
    if not loaded.fmt:  # no weight files: counted from the config alone
        return Weighed(built.inv, None, None, None, None)
    # weight files are there: even one with no tensors must account for every parameter
    model, entries = built.model, regrouped.entries
    if loaded.format is not None and loaded.format.name_scheme == "gguf":  # llama.cpp's names, by its family
        rec = reconcile.reconcile_gguf(model, entries, loaded.architecture, name)
    else:
        rec = reconcile.reconcile(model, entries, name, base_only=build.is_base_class(built.cls, built.config))
        quant.require_packed(regrouped, name)  # after reconcile: tensors no rule knows are named there
    inv = inventory.with_checkpoint(built.inv, model, rec, regrouped.metadata) if inventory_rows else built.inv
    buffers = sum(e.numel for e, _ in rec.buffers)
    extra = sum(e.numel for e in rec.extra)
    from_checkpoint = rec.entry_values - buffers - rec.tied_copies - sum(e.numel for e in rec.unused + rec.extra)
    from_architecture = int(inventory.parameters(inv)["numel"].sum()) if inventory_rows else built.total
    if from_checkpoint != from_architecture:  # reconcile() makes this impossible; never pick one silently
        raise PipelineError(
            f"the checkpoint holds {from_checkpoint:,} parameters, the architecture {from_architecture:,}", model=name
        )
    return Weighed(inv, rec, regrouped.checkpoint_tensors, buffers, extra)


@dataclass(frozen=True)
class Counted:
    """One downloaded model counted: what the count stage writes of it, and what was built and read on the way
    (handed on, so the tie evidence and the cost table neither build nor read again)."""

    inv: pd.DataFrame  # the inventory, with checkpoint columns when there are weights
    row: dict[str, Any]  # the summary row (SUMMARY_COLUMNS)
    built: Built  # the class resolved and built on the meta device
    loaded: formats.Loaded  # the weight files' headers as read

    @property
    def model(self) -> Any:
        return self.built.model

    @property
    def config(self) -> Any:
        return self.built.config


def count_folder(spec: params.ModelSpec, model_dir: Path) -> Counted:
    """Inventory and summary row of one downloaded model; its checkpoint, if any, reconciled with it."""
    built = build_architecture(model_dir, spec.name, spec.auto_class, spec.written, spec.config_path)
    config, cls, raw, total = built.config, built.cls, built.raw, built.total
    prov = provenance(model_dir, spec.name)
    loaded = formats.load(Path(model_dir), spec.name)
    weighed = weigh(built, loaded, spec.name)
    inv, entries = weighed.inv, loaded.regrouped.entries
    row = {
        "model": spec.name,
        **inventory.summarize(inv, built.top_k),
        "n_experts": built.n_experts,
        "experts_per_token": built.top_k,
        "declared_tied": _declared_tied(config, raw),
        "tie_note": built.tie_note,
        "input_embedding": built.input_name,
        "output_embedding": built.output_name,
        "model_type": config.model_type,
        "model_class": cls.__name__,
        "class_from": built.class_from,
        "ignored_fields": ";".join(config_file.ignored_fields(config, raw, built.read)),
        "n_layer": _text_field(config, "num_hidden_layers"),
        "d_model": _text_field(config, "hidden_size"),
        "vocab_size": _text_field(config, "vocab_size"),
        "n_positions": _text_field(config, "max_position_embeddings"),
        "stated_size": spec.stated_size,
        "stated_params": spec.stated_params,
        "stated_active": spec.stated_active,
        "stated_active_params": spec.stated_active_params,
        "what_if": "",
        "source": prov["source"],
        "revision": prov.get("revision") or "",
        "checkpoint_tensors": weighed.checkpoint_tensors,
        "checkpoint_buffers": weighed.checkpoint_buffers,
        "checkpoint_extra": weighed.checkpoint_extra,
        "quant_method": loaded.regrouped.method,
        "bits_per_param": prov["checkpoint_bytes"] * 8 / total if entries and prov.get("checkpoint_bytes") else None,
        "fetch": prov.get("fetch") or "",
        "checkpoint_bytes": prov.get("checkpoint_bytes"),
        "bytes_fetched": prov.get("bytes_fetched"),
    }
    return Counted(inv, row, built, loaded)


def _declared_tied(config: Any, raw: dict) -> bool:
    """What config.json says for the part that owns the head (a composite's text_config), else the config's."""
    value, _ = tying.declared(raw)
    return value if value is not None else bool(getattr(config, "tie_word_embeddings", False))


def _text_field(config: Any, field: str) -> int | None:
    """A size of the model, else of its text part (a composite model's text_config, an encoder-decoder's decoder)."""
    value = getattr(config, field, None)
    if value is None:
        try:
            value = getattr(config.get_text_config(decoder=True), field, None)
        except Exception:  # noqa: BLE001 - a config without sub-configs
            value = None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raw_config(model_dir: Path, name: str) -> dict:
    from pipeline.core.errors import read_json_object

    return read_json_object(Path(model_dir) / "config.json", model=name)
