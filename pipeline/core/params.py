"""The pipeline's configuration: params.yaml (composed from conf/ by Hydra) and its validation.

`python -m pipeline.core.compose` rewrites params.yaml from conf/ (what `dvc exp run` does on its own).
Every stage reads params.yaml through load(); nothing here needs torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.core.errors import PipelineError, collect, first_line, read_json_object
from pipeline.core.schema import PATH_KEYS, SECTIONS, ModelEntry, schema_error
from pipeline.core.sizes import check_sizes, parse_size

PARAMS_FILE = Path("params.yaml")
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: a sweep of 200 models parses in 0.1 s, not 1 s
CONF_DIR = Path("conf")


# Model names become folders (data/models/<name>), file names and param paths (models.<name>).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NAME = 64


@dataclass(frozen=True)
class ModelSpec:
    """One entry of params.yaml `models`, validated."""

    name: str
    source: str
    architecture: dict[str, Any]
    hub_id: str | None = None
    revision: str | None = None
    stated_size: str | None = None
    stated_active: str | None = None
    path: str | None = None
    config_path: str | None = None
    auto_class: str = "auto"
    allow_pickle: bool = False
    fetch: str = "download"
    config_only: bool = False
    written: tuple[str, ...] = ()  # the architecture block's own keys, as the user wrote them

    @property
    def stated_params(self) -> int | None:
        """stated_size as an integer ("117M" -> 117,000,000), or None."""
        return parse_size(self.stated_size, self.name) if self.stated_size is not None else None

    @property
    def stated_active_params(self) -> int | None:
        """stated_active as an integer ("12.9B" -> 12,900,000,000), or None."""
        return parse_size(self.stated_active, self.name) if self.stated_active is not None else None


@dataclass(frozen=True)
class Params:
    models: dict[str, ModelSpec]
    paths: dict[str, str]
    report: dict[str, Any]
    values: dict[str, Any]
    whatif: dict[str, Any]
    cost: dict[str, Any]
    census: dict[str, Any] | None = None  # the census stage's settings (None in a params mapping without them)
    sweep: str | None = None  # the conf/sweep/ file params.yaml was composed from (None: written by hand)

    def models_dir(self, name: str) -> Path:
        return Path(self.paths["models"]) / name


def validate_architecture(
    name: str, arch: Any, typed: tuple[str, ...] | None = None, config_path: str = ""
) -> dict[str, Any]:
    """Check that an architecture block describes a model that can exist; return it as a dict.

    typed: the keys a person typed, when the rest came from a downloaded config.json (config_path): only those
    must hold numbers where sizes go; the file's own values are bounded, never second-guessed (sizes.check_sizes).
    """
    if not isinstance(arch, dict) or not arch:
        raise PipelineError("architecture must be a mapping of config.json fields", model=name)
    if typed is None:
        if not arch.get("model_type"):
            raise PipelineError("architecture.model_type is missing", model=name)
        check_sizes(name, arch)
    else:  # a config.json file under the block: the file decides its class (config_file.load_config)
        check_sizes(name, {k: arch[k] for k in typed if k in arch})
        check_sizes(name, arch, where=f"{config_path}: ", typed=False)
    return dict(arch)


def _merged(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """config_path's fields with the architecture block's on top."""
    base = read_json_object(Path(values["config_path"]), "config_path", model=name)
    return {**base, **(values["architecture"] or {})}


def _named_spec(name: str, entry: Any) -> ModelSpec:
    """model_spec, for a name from params.yaml: it becomes a folder, a file name and a param path."""
    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "…"
        raise PipelineError(
            f"a model name is 1 to {MAX_NAME} letters, digits, '-' and '_' (no '.'), starting with a letter or digit",
            model=shown,
        )
    return model_spec(name, entry)


def model_spec(name: str, entry: Any) -> ModelSpec:
    """Validate one model entry (its name is checked where it becomes a folder name, in from_dict)."""
    if not isinstance(entry, dict):
        raise PipelineError(f"expected a mapping of model fields, got {entry!r}", model=name)
    try:
        values = ModelEntry.model_validate(entry).model_dump()
    except ValidationError as exc:
        raise PipelineError(f"{schema_error(exc, ModelEntry, entry)}", model=name) from None
    written = tuple(values["architecture"] or ())
    source = values["source"]
    if source == "path" and not values["path"]:
        raise PipelineError("source: path needs the field path (a folder with config.json)", model=name)
    if source == "hub" and not values["hub_id"]:
        raise PipelineError("source: hub needs the field hub_id", model=name)
    if source == "config" and values["architecture"] is None and not values["config_path"]:
        raise PipelineError("source: config needs an architecture block or a config_path", model=name)
    if source == "config" and values["config_path"]:
        values["architecture"] = validate_architecture(name, _merged(name, values), written, values["config_path"])
    elif source == "config" or values["architecture"] is not None:
        values["architecture"] = validate_architecture(name, values["architecture"])
    if values["fetch"] == "range" and source != "hub":
        raise PipelineError("fetch: range reads from the Hub, so it needs source: hub", model=name)
    for field_ in ("stated_size", "stated_active"):
        if values[field_] is not None:
            parse_size(values[field_], name)
            values[field_] = str(values[field_])
    return ModelSpec(name=name, written=written, **values)


def _section(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """One settings section, every key present, known, of its type and in its range (its schema in SECTIONS)."""
    data = raw[section]
    if not isinstance(data, dict):
        raise PipelineError(f"params.yaml: {section} must be a mapping")
    schema = SECTIONS[section]
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"params.yaml: {schema_error(exc, schema, data, f'{section}.')}") from None
    return dict(data)


def _paths(raw: Any) -> dict[str, str]:
    """Output paths: relative, inside the repository (no '..'), one per known key."""
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: paths must be a mapping")
    for key in PATH_KEYS:
        value = raw.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise PipelineError(f"params.yaml: paths.{key}={value!r} must be a relative path inside the repository")
    return dict(raw)


def from_dict(raw: Any) -> Params:
    """Validate a whole params mapping: every model, every setting, before any stage does work."""
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: expected a mapping at the top level")
    for key in ("models", "paths", "report", "values", "whatif", "cost"):
        if key not in raw:
            raise PipelineError(f"params.yaml: missing top-level key '{key}'")
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise PipelineError("params.yaml: models must name at least one model (pick a sweep in conf/sweep/)")
    # every model is checked, and every refused one named (one line each), before any stage works
    specs = collect(((str(name), entry) for name, entry in models.items()), _named_spec)
    values = _section(raw, "values")
    whatif = _section(raw, "whatif")
    whatif["base"] = model_spec("whatif.base", whatif.get("base"))
    if whatif["base"].architecture is None:
        raise PipelineError("params.yaml: whatif.base needs an architecture block (or a config_path)")
    bad = [d for d in whatif["n_embd"] if d % whatif["head_width"]]
    if bad:
        raise PipelineError(
            f"params.yaml: whatif.n_embd={bad[0]} is not divisible by whatif.head_width={whatif['head_width']}"
        )
    return Params(
        models=specs,
        paths=_paths(raw["paths"]),
        report=_section(raw, "report"),
        values=values,
        whatif=whatif,
        cost=_section(raw, "cost"),
        census=_section(raw, "census") if "census" in raw else None,
        sweep=_sweep(raw.get("sweep")),
    )


def _sweep(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and NAME_RE.fullmatch(value)):
        raise PipelineError(f"params.yaml: sweep={value!r} must be the name of a file in conf/sweep/")
    return value


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot be read ({first_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {first_line(exc)}") from None
    return from_dict(raw)
