"""The pipeline's configuration: params.yaml (composed from conf/ by Hydra) and its validation.

`python -m pipeline.params` rewrites params.yaml from conf/ (what `dvc exp run` does on its own).
Every stage reads params.yaml through load(); nothing here needs torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from pipeline.cli import PipelineError, collect, first_line, read_json_object

PARAMS_FILE = Path("params.yaml")
CONF_DIR = Path("conf")


# The declared schemas (pydantic): each field's type, range or choices and default, in one place. Our
# own code only turns pydantic's first error into the pipeline's one line (_schema_error), and keeps
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
    # which transformers class is built: auto (the class config.json names, else pipeline/inventory.py's
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

# Architecture fields that count layers, and the most a model may have (the deepest published
# transformers have about 130; a cap keeps a typo such as 10**12 from building modules until memory runs out).
LAYER_FIELDS = ("n_layer", "num_hidden_layers", "num_layers", "n_layers")
MAX_LAYERS = 1024
# Other architecture fields that are sizes: whole numbers in [1, MAX_SIZE].
SIZE_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_ctx",
    "n_embd",
    "n_head",
    "n_inner",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "ffn_dim",
    "head_dim",
)
MAX_SIZE = 10**9
# Every other whole number of a config, at any depth (text_config, vision_config, an encoder's fields, a
# list such as Swin's depths), is bounded too, by what its name says it counts, so that no field (BART's
# decoder_layers, a composite's text_config.num_hidden_layers) can make transformers build modules until
# memory runs out. Words of a field name (split at "_") that make it a count of stacked modules:
DEPTH_WORDS = frozenset({"layers", "blocks", "depth", "depths", "stages", "loops", "cycles", "repeats"})
EXPERT_WORDS = frozenset({"experts"})  # routed experts: Switch Transformers has 2,048 per layer
MAX_EXPERTS = 1 << 16
# ...and words that make it an identifier or a constant, not a size (token ids, indices, rope_theta, seeds).
NOT_SIZE_WORDS = frozenset({"id", "ids", "idx", "index", "theta", "seed", "base", "label2id", "id2label"})
# (width, heads) pairs: the width must be divisible by the number of heads (unless head_dim is explicit).
WIDTH_HEADS = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"))
# Fields that give the per-head width explicitly (GLM-4.5: hidden_size 5120, 96 heads of head_dim 128).
HEAD_DIM_FIELDS = ("head_dim", "attention_head_dim", "attention_head_size", "d_kv", "kv_channels", "qk_head_dim")
# (query heads, key/value heads): grouped-query attention shares each KV head among a whole number of heads.
HEADS_KV = (("num_attention_heads", "num_key_value_heads"), ("n_head", "n_head_kv"))
# Model names become DVC stage names (count@<name>) and param paths (models.<name>).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NAME = 64
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


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
    sweep: str | None = None  # the conf/sweep/ file params.yaml was composed from (None: written by hand)

    def models_dir(self, name: str) -> Path:
        return Path(self.paths["models"]) / name


def rounds_to(count: int, stated: str) -> bool:
    """Does count, rounded as stated is written (46.7B: to 0.1 B), give stated? The check for a card's figure."""
    m = _SIZE_RE.match(str(stated))
    if not m:
        return False
    number, unit = m.groups()
    decimals = len(number.partition(".")[2])
    step = _UNITS[unit.upper()] // 10**decimals if _UNITS[unit.upper()] >= 10**decimals else 1
    return (2 * count + step) // (2 * step) * step == parse_size(stated, "")  # round half up, in integers


def parse_size(text: Any, model: str) -> int:
    """Parse a stated size such as 117M, 1.5B or 1542M into an integer count of parameters."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise PipelineError(f"model '{model}': stated_size={text!r} is not a size like 117M or 1.5B")
    number, unit = m.groups()
    whole, _, frac = number.partition(".")
    scale = _UNITS[unit.upper()]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def _bound(key: str, top_level: bool) -> tuple[int, int] | None:
    """The [low, high] a config field's whole-number values must keep, from its name; None: not a size."""
    if key in LAYER_FIELDS and top_level:
        return 1, MAX_LAYERS
    if key == "head_dim":
        return 0, MAX_SIZE  # 0: derived from the width (GLM-5's default)
    if key in SIZE_FIELDS:
        return 1, MAX_SIZE
    words = set(key.lower().split("_"))
    if words & NOT_SIZE_WORDS:
        return None
    if words & EXPERT_WORDS:
        return 0, MAX_EXPERTS
    if words & DEPTH_WORDS or key in LAYER_FIELDS:
        return 0, MAX_LAYERS
    return -MAX_SIZE, MAX_SIZE  # negative values build nothing (-1 often means "unset")


MAX_CONFIG_DEPTH = 8  # sub-configs nest two or three deep (a composite's text_config.rope_scaling); more is not one


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integral(value: Any) -> bool:
    """A whole number, or a float holding one (transformers' own MusicFlamingo default has 1200.0 positions)."""
    return _whole_number(value) or isinstance(value, float) and value.is_integer()


def _fits(key: str, value: Any) -> bool:
    """A named size field's value has the right type: a whole number (a layer count may not be 12.0)."""
    return _whole_number(value) if key in LAYER_FIELDS else _integral(value)


def _size_problems(node: dict[str, Any], path: str, top_level: bool, depth: int = 0) -> Iterator[str]:
    """Each field of a config tree whose whole number is out of its bound, as 'path=value must be ...'."""
    if depth > MAX_CONFIG_DEPTH:
        yield f"{path} nests sub-configs more than {MAX_CONFIG_DEPTH} deep"
        return
    for key, value in node.items():
        key = str(key)
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield from _size_problems(value, where, False, depth + 1)
            continue
        bound = _bound(key, top_level)
        if bound is None:
            continue
        low, high = bound
        named = key in LAYER_FIELDS or key in SIZE_FIELDS
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):  # per-block configs (DeciLM's block_configs)
                yield from _size_problems(item, where, False, depth + 1)
            elif (
                (_integral(item) if named else _whole_number(item))
                and not low <= item <= high
                or (named and not _fits(key, item))
            ):
                if named and item is None:
                    continue  # unset: the config class's default applies (GPT-2's n_inner: null)
                shown = value if len(repr(value)) <= 80 else item
                span = f"from {low:,} to {high:,}" if low > -MAX_SIZE else f"of at most {high:,}"
                yield f"{where}={shown!r} must be a whole number {span}"
                break


def check_sizes(name: str, arch: dict[str, Any], where: str = "architecture.") -> None:
    """Sizes are whole numbers in range (every field of every sub-config, by what its name counts), widths
    split evenly into heads, heads evenly into KV heads (at the top level and in each sub-config)."""
    for problem in _size_problems(arch, "", True):
        raise PipelineError(f"model '{name}': {where}{problem}")
    again = where if where.endswith(".") else ""  # a file's path (`config.json: `) is said once per line
    for path, node in _sub_configs(arch, ""):
        prefix = f"{path}." if path else ""
        heads_only = any(_whole_number(node.get(f)) and node.get(f) for f in HEAD_DIM_FIELDS)
        for width, heads in WIDTH_HEADS:
            w, h = node.get(width), node.get(heads)
            if _whole_number(w) and _whole_number(h) and w > 0 and h > 0 and not heads_only and w % h:
                raise PipelineError(
                    f"model '{name}': {where}{prefix}{width}={w} is not divisible by {again}{prefix}{heads}={h}"
                )
        for heads, kv in HEADS_KV:
            q, k = node.get(heads), node.get(kv)
            if _whole_number(q) and _whole_number(k) and k > 0 and q % k:
                raise PipelineError(
                    f"model '{name}': {where}{prefix}{heads}={q} is not a multiple of {again}{prefix}{kv}={k} "
                    "(each key/value head serves a whole number of query heads)"
                )


def _sub_configs(node: dict[str, Any], path: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """The config itself and every sub-config in it (text_config, vision_config, ...), with their key paths."""
    yield path, node
    if depth >= MAX_CONFIG_DEPTH:
        return
    for key, value in node.items():
        if isinstance(value, dict) and key not in ("label2id", "id2label"):
            yield from _sub_configs(value, f"{path}.{key}" if path else str(key), depth + 1)


def validate_architecture(name: str, arch: Any) -> dict[str, Any]:
    """Check that an architecture block describes a model that can exist; return it as a dict."""
    if not isinstance(arch, dict) or not arch:
        raise PipelineError(f"model '{name}': architecture must be a mapping of config.json fields")
    if not arch.get("model_type"):
        raise PipelineError(f"model '{name}': architecture.model_type is missing")
    check_sizes(name, arch)
    return dict(arch)


def _merged(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """config_path's fields with the architecture block's on top."""
    base = read_json_object(Path(values["config_path"]), f"model '{name}': config_path")
    return {**base, **(values["architecture"] or {})}


def _named_spec(name: str, entry: Any) -> ModelSpec:
    """model_spec, for a name from params.yaml: it becomes a DVC stage name (count@<name>) and a folder."""
    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        shown = name if len(name) <= MAX_NAME else name[:MAX_NAME] + "…"
        raise PipelineError(
            f"model {shown!r}: a model name is 1 to {MAX_NAME} letters, digits, '-' and '_' (no '.'), "
            "starting with a letter or digit"
        )
    return model_spec(name, entry)


def model_spec(name: str, entry: Any) -> ModelSpec:
    """Validate one model entry (its name is checked where it becomes a stage name, in from_dict)."""
    if not isinstance(entry, dict):
        raise PipelineError(f"model '{name}': expected a mapping of model fields, got {entry!r}")
    try:
        values = ModelEntry.model_validate(entry).model_dump()
    except ValidationError as exc:
        raise PipelineError(f"model '{name}': {_schema_error(exc, ModelEntry, entry)}") from None
    written = tuple(values["architecture"] or ())
    source = values["source"]
    if source == "path" and not values["path"]:
        raise PipelineError(f"model '{name}': source: path needs the field path (a folder with config.json)")
    if source == "hub" and not values["hub_id"]:
        raise PipelineError(f"model '{name}': source: hub needs the field hub_id")
    if source == "config" and values["architecture"] is None and not values["config_path"]:
        raise PipelineError(f"model '{name}': source: config needs an architecture block or a config_path")
    if source == "config" and values["config_path"]:
        values["architecture"] = validate_architecture(name, _merged(name, values))
    elif source == "config" or values["architecture"] is not None:
        values["architecture"] = validate_architecture(name, values["architecture"])
    if values["fetch"] == "range" and source != "hub":
        raise PipelineError(f"model '{name}': fetch: range reads from the Hub, so it needs source: hub")
    for field_ in ("stated_size", "stated_active"):
        if values[field_] is not None:
            parse_size(values[field_], name)
            values[field_] = str(values[field_])
    return ModelSpec(name=name, written=written, **values)


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
    adam_bytes_per_param: _whole(1, 64)
    tokens_per_param: _whole(1, 10_000)


# The settings sections of params.yaml: every key required, no other allowed
SECTIONS: dict[str, type[_Schema]] = {
    "values": ValuesSettings,
    "report": ReportSettings,
    "whatif": WhatifSettings,
    "cost": CostSettings,
}
PATH_KEYS = (
    "models", "inventory", "summary", "metrics", "ties", "bias", "report", "figures",
    "conventions", "whatif", "distributions", "histograms", "cost", "published", "report_html", "tie_sample",
    "report_data", "plots",
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


def _schema_error(exc: ValidationError, schema: type[BaseModel], data: dict, prefix: str = "") -> str:
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


def _section(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """One settings section, every key present, known, of its type and in its range (its schema in SECTIONS)."""
    data = raw[section]
    if not isinstance(data, dict):
        raise PipelineError(f"params.yaml: {section} must be a mapping")
    schema = SECTIONS[section]
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"params.yaml: {_schema_error(exc, schema, data, f'{section}.')}") from None
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
        sweep=_sweep(raw.get("sweep")),
    )


def _sweep(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and NAME_RE.fullmatch(value)):
        raise PipelineError(f"params.yaml: sweep={value!r} must be the name of a file in conf/sweep/")
    return value


# What makes a model a different model: a change here means its stated size no longer describes it. Where
# its files come from (source, hub_id, path, revision) is not: GPT-2 from its config, a folder or the Hub is
# one model, and a folder's config.json must agree with every architecture field given (sources.py).
IDENTITY_KEYS = ("config_path", "architecture", "auto_class")


def what_if(cfg: Params, conf_dir: str | Path = CONF_DIR) -> dict[str, str]:
    """{model: 'architecture.n_layer=6 (conf/: 12)'} for each model whose identity an override changed.

    `dvc exp run -S models.gpt2.architecture.n_layer=6` keeps the name gpt2 and its stated 117M; the
    model is compared with what its sweep composes to without overrides. Models not in that sweep
    (added by hand or by an override) and a params.yaml without a recorded sweep are not marked.
    """
    if cfg.sweep is None or not (Path(conf_dir) / "config.yaml").is_file():
        return {}
    try:
        pristine = compose([f"sweep={cfg.sweep}"], conf_dir)["models"]
    except PipelineError:
        return {}  # the recorded sweep no longer composes (renamed or deleted): nothing to compare with
    marked = {}
    for name, spec in cfg.models.items():
        if name not in pristine:
            continue
        base = model_spec(name, pristine[name])
        changes = []
        for key in IDENTITY_KEYS:
            now, then = getattr(spec, key), getattr(base, key)
            if key == "architecture" and isinstance(now, dict) and isinstance(then, dict):
                changes += [
                    f"architecture.{k}={_shown(now.get(k, _ABSENT))} (conf/: {_shown(then.get(k, _ABSENT))})"
                    for k in sorted(set(now) | set(then))
                    if now.get(k, _ABSENT) != then.get(k, _ABSENT)
                ]
            elif now != then:
                changes.append(f"{key}={_shown(now)} (conf/: {_shown(then)})")
        if changes:
            marked[name] = "; ".join(changes)
    return marked


_ABSENT = object()  # a key one side of a what-if comparison does not have


def _shown(value: Any) -> str:
    """A value in a what-if note: short, one line, never a mapping's repr (a removed block is 'none')."""
    if value is _ABSENT:
        return "absent"
    if value is None:
        return "none"
    if isinstance(value, dict):
        return f"a block of {len(value)} field{'s' if len(value) != 1 else ''}"
    if isinstance(value, list) and len(repr(value)) > 60:
        return f"a list of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot be read ({first_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {first_line(exc)}") from None
    return from_dict(raw)


def compose(overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR) -> dict[str, Any]:
    """Compose conf/ with Hydra the way `dvc exp run` does, and return it as plain data."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
        return OmegaConf.to_container(cfg, resolve=True)
    except yaml.YAMLError:
        raise PipelineError(_yaml_culprit(Path(conf_dir))) from None
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise PipelineError(f"conf/: {first_line(exc)}") from None


def _yaml_culprit(conf_dir: Path) -> str:
    """Which file of conf/ does not parse, and where (Hydra's own message names no file)."""
    for path in sorted(conf_dir.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or first_line(exc)
            return f"{path}:{where}: not valid YAML ({problem})"
    return f"{conf_dir}: a file does not parse as YAML"


GENERATED = "# Generated from conf/ by `python -m pipeline.params` (what `dvc exp run` composes). Edit conf/.\n"
OVERRIDES_LINE = "# overrides: "


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """The first key path where two plain-data trees differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                return _first_difference(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}".lstrip("."))
    return f"{path or 'the whole file'}: {a!r} in params.yaml, {b!r} in conf/"


def check_composed(path: str | Path = PARAMS_FILE, conf_dir: str | Path = CONF_DIR) -> None:
    """A params.yaml written by `make params` must still equal the composition of conf/ (with its overrides).

    `dvc repro` never composes conf/, so an edit there without `make params` would otherwise be ignored.
    A params.yaml without the generated header (written by `dvc exp run`, or by hand) is not checked.
    """
    path, conf_dir = Path(path), Path(conf_dir)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if not text.startswith(GENERATED) or not (conf_dir / "config.yaml").is_file():
        return
    second = text.splitlines()[1] if text.count("\n") > 1 else ""
    overrides = json.loads(second[len(OVERRIDES_LINE) :]) if second.startswith(OVERRIDES_LINE) else []
    composed = compose(overrides, conf_dir)
    current = yaml.safe_load(text)
    if composed != current:
        shown = f" {' '.join(overrides)}" if overrides else ""
        raise PipelineError(
            f"params.yaml is not the composition of conf/{shown} ({_first_difference(current, composed)}); "
            f"run `make params{f' ARGS={shown.strip()!r}' if shown else ''}` to rewrite it, then dvc repro"
        )


def dump(data: dict[str, Any]) -> str:
    """params.yaml text, in composition order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Rewrite params.yaml from conf/ (Hydra composition).")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=gpt2-small")
    args = parser.parse_args()
    write_params(args.overrides)


def write_params(overrides: list[str]) -> None:
    """Compose conf/ with overrides and write params.yaml, its overrides recorded in the header."""
    from pipeline import atomic

    data = compose(overrides)
    from_dict(data)  # refuse to write a params.yaml the stages would reject
    header = GENERATED + (f"{OVERRIDES_LINE}{json.dumps(overrides)}\n" if overrides else "")
    atomic.write_text(PARAMS_FILE, header + dump(data))


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
