"""What a model folder or a Hub checkpoint must agree with before a byte of it is linked: every architecture field
the model file gives must be in its config.json, equal (or at its class default).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError, read_json_object
from pipeline.core.params import ModelSpec
from pipeline.formats import entries


def check_architecture(spec: ModelSpec, config_path: Path, config: dict | None = None) -> None:
    """A model from a folder or the Hub may also give an architecture block: each field must be in the file, equal.

    config is the file's content when it does not come from config_path itself (a GGUF file's metadata).
    """
    if config is None:
        config = read_json_object(entries.regular_file(config_path), model=spec.name)
    arch = spec.architecture or {}
    defaults = _class_defaults(config) if any(key not in config for key in arch) else {}
    for key, value in arch.items():
        if key not in config:  # save_pretrained leaves out fields at their default: compare with that
            if key in defaults and defaults[key] == value:
                continue
            default = f" (its default is {defaults[key]!r})" if key in defaults else ""
            raise PipelineError(
                f"architecture.{key}={value!r} but {config_path} has no field {key}{default}", model=spec.name
            )
        if config[key] != value:
            raise PipelineError(f"architecture.{key}={value!r} but {config_path} says {config[key]!r}", model=spec.name)


def _class_defaults(config: dict) -> dict:
    """The default fields of config.json's config class (what a file that leaves a field out means)."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return {}
    return CONFIG_MAPPING[model_type]().to_dict()
