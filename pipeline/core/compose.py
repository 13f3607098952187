"""conf/ and params.yaml: Hydra's composition of conf/ (what `dvc exp run` does), the check that the committed
params.yaml still equals it, its rewrite (`python -m pipeline.core.compose`, `make params`), and which models an
override changed (a what-if variant keeps its name but not its stated size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import memo
from pipeline.core.errors import PipelineError, first_line, run
from pipeline.core.params import CONF_DIR, PARAMS_FILE, SAFE_LOADER, Params, from_dict, model_spec

# What makes a model a different model: a change here means its stated size no longer describes it. Where
# its files come from (source, hub_id, path, revision) is not: GPT-2 from its config, a folder or the Hub is
# one model, and a folder's config.json must agree with every architecture field given (sources.py).
IDENTITY_KEYS = ("config_path", "architecture", "auto_class")


def what_if(cfg: Params, conf_dir: str | Path = CONF_DIR, cache: str | Path | None = None) -> dict[str, str]:
    """{model: 'architecture.n_layer=6 (conf/: 12)'} for each model whose identity an override changed.

    `dvc exp run -S models.gpt2.architecture.n_layer=6` keeps the name gpt2 and its stated 117M; the
    model is compared with what its sweep composes to without overrides. Models not in that sweep
    (added by hand or by an override) and a params.yaml without a recorded sweep are not marked.
    """
    if cfg.sweep is None or not (Path(conf_dir) / "config.yaml").is_file():
        return {}
    try:
        pristine = compose([f"sweep={cfg.sweep}"], conf_dir, cache)["models"]
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


def conf_digest(conf_dir: Path) -> str:
    """sha256 of every file under conf/ (path and bytes): what a composition depends on."""
    files = sorted(p for p in conf_dir.rglob("*") if p.is_file())
    return memo.digest([(p.relative_to(conf_dir).as_posix(), memo.file_digest(p)) for p in files])


def compose(
    overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR, cache: str | Path | None = None
) -> dict[str, Any]:
    """Compose conf/ with Hydra the way `dvc exp run` does, and return it as plain data.

    With cache (paths.memo), a composition of the same conf/ files and overrides is read back instead of
    composed again: Hydra takes seconds for a sweep of hundreds of models, and the download and count
    stages each need it."""
    if cache is None:
        return _compose(overrides, conf_dir)
    store, key = _store(overrides, conf_dir, cache)
    found = store.fetch(key, lambda data: data if isinstance(data, dict) else {}["not a composition"])
    return found if found is not None else store.put(key, _compose(overrides, conf_dir))


def _store(overrides: list[str] | None, conf_dir: str | Path, cache: str | Path) -> tuple[memo.Memo, str]:
    store = memo.Memo(cache, "compose")
    return store, store.key(conf_digest(Path(conf_dir)), list(overrides or []))


def _compose(overrides: list[str] | None, conf_dir: str | Path) -> dict[str, Any]:
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


GENERATED = "# Generated from conf/ by `python -m pipeline.core.compose` (what `dvc exp run` composes). Edit conf/.\n"


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
    current = yaml.load(text, Loader=SAFE_LOADER)
    memo_dir = current.get("paths", {}).get("memo") if isinstance(current, dict) else None
    composed = compose(overrides, conf_dir, memo_dir if isinstance(memo_dir, str) else None)
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
    from pipeline.core import atomic

    data = compose(overrides)
    cfg = from_dict(data)  # refuse to write a params.yaml the stages would reject
    store, key = _store(overrides, CONF_DIR, cfg.paths["memo"])
    store.put(key, data)  # the stages compose the same to check params.yaml: they read it back instead
    header = GENERATED + (f"{OVERRIDES_LINE}{json.dumps(overrides)}\n" if overrides else "")
    atomic.write_text(PARAMS_FILE, header + dump(data))


if __name__ == "__main__":
    run(main)
