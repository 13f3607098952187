"""A model's config.json as transformers reads it: no remote code, every size bounded, a key a person typed refused
only when it is very likely a typo, and the fields its class does not declare that the model never reads, listed.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line, read_json_object


def load_config(model_dir: str | Path, name: str, written: tuple[str, ...] = (), config_path: str | None = None) -> Any:
    """The transformers config of a downloaded model folder (config.json only; no remote code).

    A config.json file is read as transformers reads it, never second-guessed: a key its config class does
    not declare (Gemma 3's eos_token_id, GPT-2's n_ctx) is kept and listed by ignored_fields(), never refused,
    since a file someone downloaded is not a typo. Only written, the keys a person typed in the model's
    architecture block, are checked for typos (likely_typo). A model_type transformers does not have, with an
    `architectures` class it does have (Kimi-K2: kimi_k2 and DeepseekV3ForCausalLM), is read as that class's own
    config class (read_as() says so); the repository's own code is never run. config_path is accepted for the
    callers' sake: its keys are the file's, not typed ones. Sizes are checked as sizes.check_sizes checks an
    architecture block, on the file's own values and after transformers converted its legacy keys.
    """
    from pipeline.core import sizes

    del config_path  # a config_path file's keys are a downloaded file's: listed, never refused
    path = Path(model_dir) / "config.json"
    raw = read_json_object(path, missing="is missing (run the download stage)", model=name)
    sizes.check_sizes(name, raw, where=f"{path}: ", typed=False)
    own = _own_config_class(raw, name, path)
    try:
        if own is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(path.parent), trust_remote_code=False)
        else:  # the named class's own config class, from the file's fields (no model_type, no code pointers)
            config = own.from_dict({k: v for k, v in raw.items() if k not in ("model_type", "auto_map")})
    except Exception as exc:  # transformers' boundary: a hostile or odd config raises many types
        raise PipelineError(f"{path}: {type(exc).__name__}: {first_line(exc)}", model=name) from None
    said = str(raw.get("model_type") or "")
    if own is not None or said != getattr(type(config), "model_type", said):
        _READ_AS[id(config)] = ("own" if own is not None else "converted", said)
        weakref.finalize(config, _READ_AS.pop, id(config), None)
    sizes.check_sizes(name, config.to_dict(), where=f"{path}: ", typed=False)  # after legacy keys were converted
    typed_class = raw.get("architectures") if "architectures" in written else None
    if isinstance(typed_class, list) and typed_class and _builtin_model_class(str(typed_class[0])) is None:
        import difflib

        import transformers

        close = difflib.get_close_matches(str(typed_class[0]), [n for n in dir(transformers) if n[:1].isupper()], 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise PipelineError(
            f"architecture.architectures names the class {typed_class[0]}, which transformers "
            f"{transformers.__version__} does not have{hint} (code shipped with a model is never run)",
            model=name,
        )
    stray = set(undefined_fields(config, tuple(written)))  # one to_dict() for every typed key, not one per key
    for key in (k for k in written if k in stray):
        hint = likely_typo(config, key, raw)
        if hint:
            raise PipelineError(
                f"architecture.{key} is not a field of {type(config).__name__} "
                f"(did you mean {hint}?); transformers would ignore it",
                model=name,
            )
    return config


# Configs not read as the config class of their file's own model_type, by the config object's id (configs are
# unhashable; dropped with the object): ('own', the file's model_type or '') when read as the config class of
# the model class the file names, ('converted', the file's model_type) when transformers itself read the file
# as another type (a Mistral file with layer_types is a MinistralConfig).
_READ_AS: dict[int, tuple[str, str]] = {}


def read_as(config: Any) -> tuple[str, str] | None:
    """How config was read when not as its file's own model_type says (see _READ_AS), else None:
    ('own', 'kimi_k2') for Kimi-K2, read as a DeepseekV3Config; ('converted', 'mistral') for Ministral-8B."""
    return _READ_AS.get(id(config))


def _own_config_class(raw: dict[str, Any], name: str, path: Path) -> type | None:
    """None when transformers reads raw by its model_type; else the config class of the class its
    `architectures` names (a model_type of the repository's own, over a class transformers has); else one
    line, since no class built into transformers fits and code shipped with a model is never run."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise PipelineError(f"{path}: model_type={model_type!r} is not a string", model=name)
    if model_type in CONFIG_MAPPING_NAMES:
        return None
    named = raw.get("architectures")
    wanted = named[0] if isinstance(named, list) and named and isinstance(named[0], str) else None
    cls = _builtin_model_class(wanted) if wanted else None
    if cls is not None:
        return cls.config_class
    what = f"model_type={model_type!r}" if model_type else "no model_type"
    has = f" and names the class {wanted}, which transformers does not have" if wanted else " and names no class"
    if raw.get("auto_map"):
        raise PipelineError(
            f"{path} has {what}{has}: it needs the code shipped with the model "
            "(auto_map, trust_remote_code), which is never run",
            model=name,
        )
    if not model_type:
        raise PipelineError(f"{path} has no model_type{has}", model=name)
    raise PipelineError(
        f"model_type={model_type!r} is not built into transformers{has} (code shipped with a model is never run)",
        model=name,
    )


def _builtin_model_class(wanted: str) -> type | None:
    """The model class transformers itself exports under that name (with a config class), else None."""
    import transformers
    from transformers import PreTrainedModel

    try:
        cls = getattr(transformers, wanted)
    except Exception:  # noqa: BLE001 - not exported, or a stand-in needing an optional package
        return None
    ok = isinstance(cls, type) and issubclass(cls, PreTrainedModel) and getattr(cls, "config_class", None)
    return cls if ok else None


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


@functools.lru_cache(maxsize=512)
def declared_fields(cls: type) -> frozenset[str]:
    """The config fields a transformers config class defines: its attributes, aliases and arguments. Once per
    class and process (it builds the class's default config: 3 ms, for every typed key of every model)."""
    import dataclasses
    import inspect

    fields = set(getattr(cls, "attribute_map", None) or {}) | set(cls().to_dict())
    fields |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "args"}
    if dataclasses.is_dataclass(cls):
        fields |= {f.name for f in dataclasses.fields(cls)}
    return frozenset(fields)


def undefined_fields(config: Any, keys: tuple[str, ...]) -> list[str]:
    """Keys the config class neither defines nor converts: they stay on the config as stray attributes."""
    stored = config.to_dict()
    stray = [k for k in keys if k in stored and k != "model_type"]
    if not stray:
        return []
    declared = declared_fields(type(config))
    return [k for k in stray if k not in declared]
