"""The pipeline's configuration: params.yaml (composed from conf/ by Hydra) and its validation.

`python -m pipeline.params` rewrites params.yaml from conf/ (what `dvc exp run` does on its own).
Every stage reads params.yaml through load(); nothing here needs torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.cli import PipelineError, read_json

PARAMS_FILE = Path("params.yaml")
CONF_DIR = Path("conf")
SOURCES = ("config", "path", "hub")
AUTO_CLASSES = ("causal_lm", "masked_lm", "base")

# Public model-file keys (users write their own model files with these) and their defaults.
MODEL_FIELDS: dict[str, Any] = {
    "hub_id": None,  # repository on the Hugging Face Hub
    "revision": None,  # pinned commit (or branch) of hub_id
    "stated_size": None,  # the size its authors stated, e.g. "117M"
    "source": "config",  # config | path | hub
    "path": None,  # local folder, for source: path
    "architecture": None,  # config.json fields
    "config_path": None,  # a config.json file to start from (architecture fields override it)
    "auto_class": "causal_lm",  # causal_lm | masked_lm | base: which transformers class is built
    "allow_pickle": False,  # load .bin/.pt checkpoints (torch.load with weights_only=True)
    "fetch": "download",  # download | range: for source hub, whole files or only headers and embeddings
}

# Architecture fields that are sizes: when given, each must be a whole number above zero.
SIZE_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_ctx",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "ffn_dim",
)
# (width, heads) pairs: the width must be divisible by the number of heads.
WIDTH_HEADS = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"))
# Model names become DVC stage names (count@<name>) and param paths (models.<name>).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
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
    path: str | None = None
    config_path: str | None = None
    auto_class: str = "causal_lm"
    allow_pickle: bool = False
    fetch: str = "download"

    @property
    def stated_params(self) -> int | None:
        """stated_size as an integer ("117M" -> 117,000,000), or None."""
        return parse_size(self.stated_size, self.name) if self.stated_size is not None else None


@dataclass(frozen=True)
class Params:
    models: dict[str, ModelSpec]
    paths: dict[str, str]
    report: dict[str, Any]
    values: dict[str, Any]
    whatif: dict[str, Any]

    def models_dir(self, name: str) -> Path:
        return Path(self.paths["models"]) / name

    @property
    def results(self) -> Path:
        return Path(self.paths["results"])

    @property
    def reports(self) -> Path:
        return Path(self.paths["reports"])


def parse_size(text: Any, model: str) -> int:
    """Parse a stated size such as 117M, 1.5B or 1542M into an integer count of parameters."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise PipelineError(f"model '{model}': stated_size={text!r} is not a size like 117M or 1.5B")
    number, unit = m.groups()
    whole, _, frac = number.partition(".")
    scale = _UNITS[unit.upper()]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def validate_architecture(name: str, arch: Any) -> dict[str, Any]:
    """Check that an architecture block describes a model that can exist; return it as a dict."""
    if not isinstance(arch, dict) or not arch:
        raise PipelineError(f"model '{name}': architecture must be a mapping of config.json fields")
    if not arch.get("model_type"):
        raise PipelineError(f"model '{name}': architecture.model_type is missing")
    for key in SIZE_FIELDS:
        value = arch.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PipelineError(f"model '{name}': architecture.{key}={value!r} must be a whole number above 0")
    for width, heads in WIDTH_HEADS:
        if arch.get(width) and arch.get(heads) and arch[width] % arch[heads]:
            raise PipelineError(
                f"model '{name}': architecture.{width}={arch[width]} is not divisible by "
                f"architecture.{heads}={arch[heads]}"
            )
    return dict(arch)


def _merged(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """config_path's fields with the architecture block's on top."""
    path = Path(values["config_path"])
    base = read_json(path, f"model '{name}': config_path")
    if not isinstance(base, dict):
        raise PipelineError(f"model '{name}': config_path {path} does not hold a JSON object")
    return {**base, **(values["architecture"] or {})}


def model_spec(name: str, entry: Any) -> ModelSpec:
    """Validate one model entry (its name is checked where it becomes a stage name, in from_dict)."""
    if not isinstance(entry, dict):
        raise PipelineError(f"model '{name}': expected a mapping of model fields, got {entry!r}")
    unknown = sorted(set(entry) - set(MODEL_FIELDS))
    if unknown:
        raise PipelineError(f"model '{name}': unknown field '{unknown[0]}' (known: {', '.join(MODEL_FIELDS)})")
    values = {**MODEL_FIELDS, **entry}
    source = values["source"]
    if source not in SOURCES:
        raise PipelineError(f"model '{name}': source={source!r} must be one of {', '.join(SOURCES)}")
    if source == "path" and not values["path"]:
        raise PipelineError(f"model '{name}': source: path needs the field path (a folder with config.json)")
    if source == "hub" and not values["hub_id"]:
        raise PipelineError(f"model '{name}': source: hub needs the field hub_id")
    if values["auto_class"] not in AUTO_CLASSES:
        raise PipelineError(
            f"model '{name}': auto_class={values['auto_class']!r} must be one of {', '.join(AUTO_CLASSES)}"
        )
    if source == "config" and values["architecture"] is None and not values["config_path"]:
        raise PipelineError(f"model '{name}': source: config needs an architecture block or a config_path")
    if source == "config" and values["config_path"]:
        values["architecture"] = validate_architecture(name, _merged(name, values))
    elif source == "config" or values["architecture"] is not None:
        values["architecture"] = validate_architecture(name, values["architecture"])
    if values["fetch"] not in ("download", "range"):
        raise PipelineError(f"model '{name}': fetch={values['fetch']!r} must be download or range")
    if values["fetch"] == "range" and source != "hub":
        raise PipelineError(f"model '{name}': fetch: range reads from the Hub, so it needs source: hub")
    if not isinstance(values["allow_pickle"], bool):
        raise PipelineError(f"model '{name}': allow_pickle={values['allow_pickle']!r} must be true or false")
    if values["stated_size"] is not None:
        parse_size(values["stated_size"], name)
        values["stated_size"] = str(values["stated_size"])
    return ModelSpec(name=name, **values)


def from_dict(raw: Any) -> Params:
    """Validate a whole params mapping."""
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: expected a mapping at the top level")
    for key in ("models", "paths", "report", "values", "whatif"):
        if key not in raw:
            raise PipelineError(f"params.yaml: missing top-level key '{key}'")
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise PipelineError("params.yaml: models must name at least one model (pick a sweep in conf/sweep/)")
    for name in models:
        if not NAME_RE.match(str(name)):
            raise PipelineError(f"model '{name}': a model name may hold only letters, digits, '-' and '_'")
    specs = {str(name): model_spec(str(name), entry) for name, entry in models.items()}
    whatif = dict(raw["whatif"])
    whatif["base"] = model_spec("whatif.base", whatif.get("base"))
    for key in ("n_layer", "n_embd"):
        if not isinstance(whatif.get(key), list) or not all(isinstance(v, int) and v > 0 for v in whatif[key]):
            raise PipelineError(f"params.yaml: whatif.{key} must be a list of whole numbers above 0")
    width = int(whatif.get("head_width", 0) or 0)
    bad = [d for d in whatif["n_embd"] if width <= 0 or d % width]
    if bad:
        raise PipelineError(f"params.yaml: whatif.n_embd={bad[0]} is not divisible by whatif.head_width={width}")
    return Params(
        models=specs,
        paths=dict(raw["paths"]),
        report=dict(raw["report"]),
        values=dict(raw["values"]),
        whatif=whatif,
    )


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
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
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"conf/: {first}") from None
    return OmegaConf.to_container(cfg, resolve=True)


def dump(data: dict[str, Any]) -> str:
    """params.yaml text, in composition order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def main() -> None:
    import argparse

    from pipeline import atomic

    parser = argparse.ArgumentParser(description="Rewrite params.yaml from conf/ (Hydra composition).")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=gpt2-small")
    args = parser.parse_args()
    data = compose(args.overrides)
    from_dict(data)  # refuse to write a params.yaml the stages would reject
    header = "# Generated from conf/ by `python -m pipeline.params` (what `dvc exp run` composes). Edit conf/.\n"
    atomic.write_text(PARAMS_FILE, header + dump(data))


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
