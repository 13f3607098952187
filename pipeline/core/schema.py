"""The declared schemas of params.yaml (pydantic): each model-file key and each setting, its type, range or choices
and default, in one place, and pydantic's first error turned into the pipeline's one line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StringConstraints, ValidationError

from pipeline.core.sizes import MAX_LAYERS


# The declared schemas (pydantic): each field's type, range or choices and default, in one place. Our
# own code only turns pydantic's first error into the pipeline's one line (schema_error), and keeps
# the rules between fields and against transformers' config classes (model_spec, validate_architecture).
class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _whole(low: int, high: int) -> Any:
    """A whole number in [low, high] (a bool is not one)."""
    return Annotated[StrictInt, annotated_types.Ge(low), annotated_types.Le(high)]


class ModelEntry(_Schema):
    """A model file's keys (conf/model/*.yaml; users write their own with these) and their defaults."""

    hub_id: str | None = None  # repository on the Hugging Face Hub
    revision: str | None = None  # pinned commit (or branch) of hub_id
    stated_size: str | int | float | None = None  # the size its authors stated, e.g. "117M"
    stated_active: str | int | float | None = None  # a mixture of experts' stated active size, e.g. "12.9B"
    source: Literal["config", "path", "hub"] = "config"
    path: str | None = None  # local folder, .gguf file, for source: path
    architecture: dict[str, Any] | None = None  # config.json fields
    config_path: str | None = None  # a config.json file to start from (architecture fields override it)
    # which transformers class is built: auto (the class config.json names, else pipeline/model/inventory.py's
    # FALLBACK order) or one auto class
    auto_class: Literal[
        "auto", "causal_lm", "image_text_to_text", "seq2seq_lm", "speech_seq2seq", "masked_lm", "base"
    ] = "auto"
    allow_pickle: StrictBool = False  # load .bin/.pt checkpoints (torch.load with weights_only=True)
    fetch: Literal["download", "range"] = "download"  # for source hub: whole files, or headers and embeddings
    config_only: StrictBool = False  # source path/hub: the folder may hold no weights (count from config.json)


MODEL_FIELDS: dict[str, Any] = {key: f.default for key, f in ModelEntry.model_fields.items()}


SOURCES = get_args(ModelEntry.model_fields["source"].annotation)


AUTO_CLASSES = get_args(ModelEntry.model_fields["auto_class"].annotation)


class ValuesSettings(_Schema):
    chunk_elements: _whole(1024, 1 << 28)
    threads: _whole(1, 64)
    bins: _whole(0, 100_000)
    hist_every: _whole(1, 1 << 20)


class ReportSettings(_Schema):
    dpi: _whole(20, 1200)


class WhatifSettings(_Schema):
    n_layer: Annotated[list[_whole(1, MAX_LAYERS)], annotated_types.MinLen(1)]
    n_embd: Annotated[list[_whole(1, 1 << 20)], annotated_types.MinLen(1)]
    head_width: _whole(1, 1 << 20)
    base: Any = None  # a model entry, checked by model_spec


class CostSettings(_Schema):
    context: _whole(0, 1 << 24)  # 0: each model's maximum context
    batch: _whole(1, 1 << 20)
    gpu_memory: Annotated[str, StringConstraints(pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$")]  # 80GB, 24GiB
    adam_bytes_per_param: _whole(1, 64)
    tokens_per_param: _whole(1, 10_000)


class CensusSettings(_Schema):
    list: Annotated[str, StringConstraints(pattern=r"^[^\x00\n]*$")]  # a list file ('' : no census)
    workers: _whole(1, 4096)  # Dask worker processes of the local cluster
    threads: _whole(1, 256)  # requests in flight per worker
    scheduler: Annotated[str, StringConstraints(pattern=r"^[^\x00\s]*$")]  # a Dask scheduler ('' : a local cluster)


# The settings sections of params.yaml: every key required, no other allowed
SECTIONS: dict[str, type[_Schema]] = {
    "values": ValuesSettings,
    "report": ReportSettings,
    "whatif": WhatifSettings,
    "cost": CostSettings,
    "census": CensusSettings,
}


PATH_KEYS = (
    "models", "inventory", "summary", "metrics", "ties", "bias", "report", "figures",
    "conventions", "whatif", "distributions", "histograms", "cost", "fit", "flops", "published", "report_html",
    "tie_sample", "report_data", "plots", "memo", "census",
)  # fmt: skip


def did_you_mean(word: str, choices: Any) -> str:
    """' (did you mean X?)' when a choice is close to word, else ''."""
    import difflib

    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _bounds(annotation: Any) -> tuple[int, int]:
    """The [low, high] a whole-number field (or the items of a list field) declares."""
    low = high = None
    for part in get_args(annotation):
        low = getattr(part, "ge", low)
        high = getattr(part, "le", high)
        if get_args(part) and low is None:
            low, high = _bounds(part)
    return low, high


def schema_error(exc: ValidationError, schema: type[BaseModel], data: dict, prefix: str = "") -> str:
    """pydantic's first error as the pipeline's one line: which key, the value given, what it must be."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a misspelt key explains the rest
    err = errors[0]
    key = str(err["loc"][0])
    fields = schema.model_fields
    if err["type"] == "extra_forbidden":
        if prefix:
            return f"{prefix}{key} is not a setting{did_you_mean(key, fields)}"
        return f"unknown field '{key}' (known: {', '.join(fields)})"
    if err["type"] == "missing":
        return f"{prefix}{key} is missing"
    value, annotation = data.get(key), fields[key].annotation
    shown = f"{prefix}{key}={value!r}"
    if err["type"] == "literal_error":
        return f"{shown} must be one of {', '.join(get_args(annotation))}"
    if err["type"] == "bool_type":
        return f"{shown} must be true or false"
    if err["type"] == "string_type":
        return f"{shown} must be text (quote it in YAML)"
    if err["type"] == "dict_type":
        return f"{prefix}{key} must be a mapping of config.json fields"
    if get_origin(annotation) is list:  # list[...] with its items' bounds
        low, high = _bounds(get_args(annotation)[0])
        return f"{shown} must be a list of whole numbers from {low:,} to {high:,}"
    if "int" in err["type"] or "than" in err["type"]:
        low, high = _bounds(Annotated[int, *fields[key].metadata])
        return f"{shown} must be a whole number from {low:,} to {high:,}"
    return f"{shown}: {err['msg']}"
