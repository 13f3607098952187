"""A model's config.json as transformers reads it: no remote code, every size bounded, a field refused only when it is
very likely a typo, and the fields its class does not declare that the model never reads, listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line, read_json_object


def load_config(model_dir: str | Path, name: str, written: tuple[str, ...] = (), config_path: str | None = None) -> Any:
    """The transformers config of a downloaded model folder (config.json only; no remote code).

    written are the keys the user wrote in the model's architecture block, and config_path the config.json
    file the model starts from (its keys are the user's too): a key
    the config class does not declare is refused only when it is very likely a typo (likely_typo), with
    the suggestion; any other undeclared key, such as GPT-2's published n_ctx, is kept and listed by
    ignored_fields(). Sizes are checked as sizes.check_sizes checks an architecture block, on the
    file's own values and after transformers converted its legacy keys.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from pipeline.core import sizes

    path = Path(model_dir) / "config.json"
    raw = read_json_object(path, f"model '{name}'", "is missing (run the download stage)")
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise PipelineError(f"model '{name}': {path}: model_type={model_type!r} is not a string")
    if model_type not in CONFIG_MAPPING_NAMES and raw.get("auto_map"):
        raise PipelineError(
            f"model '{name}': model_type={model_type!r} needs the code shipped with the model "
            "(auto_map, trust_remote_code); such models are refused"
        )
    if not model_type:
        raise PipelineError(f"model '{name}': {path} has no model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise PipelineError(
            f"model '{name}': model_type={model_type!r} is not built into transformers "
            "(code shipped with a model is never run)"
        )
    sizes.check_sizes(name, raw, where=f"{path}: ")
    try:
        config = AutoConfig.from_pretrained(str(path.parent), trust_remote_code=False)
    except Exception as exc:  # transformers' boundary: a hostile or odd config raises many types
        raise PipelineError(f"model '{name}': {path}: {type(exc).__name__}: {first_line(exc)}") from None
    sizes.check_sizes(name, config.to_dict(), where=f"{path}: ")  # after legacy keys were converted
    own = {key: "architecture." for key in written}
    if config_path:
        own = {key: f"{config_path}: " for key in read_json_object(config_path, f"model '{name}'")} | own
    for key, where in own.items():
        hint = likely_typo(config, key, raw)
        if hint:
            raise PipelineError(
                f"model '{name}': {where}{key} is not a field of {type(config).__name__} "
                f"(did you mean {hint}?); transformers would ignore it"
            )
    return config


# How alike a key and a declared field must be to call the key a typo (difflib's ratio: n_embdd against
# n_embd is 0.92, num_hiden_layers against num_hidden_layers 0.97). Published legacy keys are far from
# every field their class declares and leaves unset (GPT-2's n_ctx, gradient_checkpointing).
TYPO_SIMILARITY = 0.85


def likely_typo(config: Any, key: str, raw: dict[str, Any]) -> str | None:
    """The declared field key was very likely meant for, or None.

    A key is a typo only when transformers would ignore it (undefined_fields) and it is close to a field
    the config class declares that the file leaves unset: n_embdd beside no n_embd. Beside a field that is
    set, a near name is a second field (published files carry such legacy keys: BART's classif_dropout
    beside classifier_dropout), kept and listed by ignored_fields().
    """
    import difflib

    if not undefined_fields(config, (key,)):
        return None
    unset = sorted(declared_fields(type(config)) - set(raw))
    close = difflib.get_close_matches(key, unset, n=1, cutoff=TYPO_SIMILARITY)
    return close[0] if close else None


def ignored_fields(config: Any, raw: dict[str, Any], read: frozenset[str]) -> list[str]:
    """config.json's keys that its config class neither declares nor converts and that the model did not read
    while it was built (read: build_meta_reading's names), sorted: GPT-2's published n_ctx, a legacy
    gradient_checkpointing. They are kept on the config, and cannot have changed the count."""
    return sorted(k for k in undefined_fields(config, tuple(raw)) if k not in read)


def declared_fields(cls: type) -> set[str]:
    """The config fields a transformers config class defines: its attributes, aliases and arguments."""
    import dataclasses
    import inspect

    fields = set(getattr(cls, "attribute_map", None) or {}) | set(cls().to_dict())
    fields |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "args"}
    if dataclasses.is_dataclass(cls):
        fields |= {f.name for f in dataclasses.fields(cls)}
    return fields


def undefined_fields(config: Any, keys: tuple[str, ...]) -> list[str]:
    """Keys the config class neither defines nor converts: they stay on the config as stray attributes."""
    stored = config.to_dict()
    stray = [k for k in keys if k in stored and k != "model_type"]
    if not stray:
        return []
    declared = declared_fields(type(config))
    return [k for k in stray if k not in declared]
