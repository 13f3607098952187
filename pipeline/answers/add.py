"""A model added to the sweep (hmp add NAME SOURCE): counted first as `hmp count` counts it, then
conf/model/NAME.yaml, the sweep's entry and params.yaml written together (nothing written when it is refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.answers.count import count
from pipeline.answers.source import checked_name, entry_for
from pipeline.core.errors import PipelineError, first_line, one_line


def add(
    name: str,
    source: str,
    revision: str | None,
    sweep: str | None,
    stated_size: str | None,
    allow_pickle: bool = False,
) -> list[Path]:
    """Write conf/model/NAME.yaml, list it in a sweep, rewrite params.yaml; the files written."""
    import yaml

    from pipeline.core import atomic, compose, params

    conf = Path(params.CONF_DIR)
    if not (conf / "config.yaml").is_file():
        raise PipelineError(f"{conf}/config.yaml not found: run hmp add from the repository root")
    checked_name(name, "name")
    if sweep is not None:
        checked_name(sweep, "--sweep")  # a file name in conf/sweep/, never a path
    target = conf / "model" / f"{name}.yaml"
    if target.exists():
        raise PipelineError(f"{target} exists already; pick another name or edit it")
    entry = entry_for(source, revision, allow_pickle)
    if stated_size is not None:
        entry["stated_size"] = stated_size
    _no_interpolation(entry)
    spec = params.model_spec(name, entry)  # every field checked before a file is written
    # counted as `hmp count` counts it, so a model `dvc repro` would refuse is refused now, with nothing written
    counted = count(source, revision, name, allow_pickle)
    if spec.source == "hub":
        entry["revision"] = counted.source["revision"]  # the commit the Hub, or offline the cache, resolved
    current = params.load()
    sweep = sweep or current.sweep
    if sweep is None:
        raise PipelineError("params.yaml records no sweep: name one with --sweep")
    sweep_file = conf / "sweep" / f"{sweep}.yaml"
    if not sweep_file.is_file():
        raise PipelineError(f"--sweep {sweep}: no {sweep_file}")
    try:
        sweep_text = sweep_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{sweep_file}: cannot be read as UTF-8 text ({first_line(exc)})") from None
    line = f"  - /model@models.{name}: {name} # added by hmp add\n"  # the source is in the model file's fields
    if f"models.{name}:" in sweep_text:
        raise PipelineError(f"{sweep_file} already lists a model named {name}")
    new_sweep = _insert_default(sweep_text, line, sweep_file, name)
    pinned = f" at revision {entry['revision']}" if spec.source == "hub" else ""
    header = f"# {name}: added by `hmp add`{pinned}"  # no user text in a comment: a newline in it would be YAML
    model_text = header + "\n" + yaml.safe_dump(entry, sort_keys=False)
    overrides = [f"sweep={sweep}"] if sweep != _default_sweep(conf) else []
    with atomic.batch():  # the model file, the sweep and params.yaml change together, or not at all
        atomic.write_text(target, model_text)
        atomic.write_text(sweep_file, new_sweep)
    try:
        compose.write_params(overrides)
    except PipelineError:
        target.unlink()
        sweep_file.write_text(sweep_text, encoding="utf-8")
        raise
    return [target, sweep_file, Path(params.PARAMS_FILE)]


def _no_interpolation(entry: dict[str, Any]) -> None:
    """Text written into conf/ is read back through Hydra, which resolves `${...}` (and `\\${` escapes): a
    source path carrying one would name another path at `dvc repro` than the one counted now."""
    for key, value in entry.items():
        if isinstance(value, str) and ("${" in value or "\\" in value):
            raise PipelineError(
                f"{one_line(value)}: hmp add writes {key} into conf/, where Hydra would read '${{' or '\\' "
                "in it as an interpolation; rename or link the folder to a path without them"
            )


def _insert_default(text: str, line: str, path: Path, name: str) -> str:
    """The sweep file with one more entry at the end of its block-style defaults list, checked by parsing it."""
    import yaml

    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("defaults:"))
    except StopIteration:
        raise PipelineError(f"{path}: no defaults: list to add the model to") from None
    end = start + 1
    while end < len(lines) and (lines[end].startswith("  ") or not lines[end].strip()):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    new = "".join(lines[:end] + [line] + lines[end:])
    try:
        defaults = yaml.safe_load(new).get("defaults")
    except (yaml.YAMLError, AttributeError):
        defaults = None
    if not isinstance(defaults, list) or {f"/model@models.{name}": name} not in defaults:
        raise PipelineError(
            f"{path}: its defaults list is not in the block style hmp edits (one `  - item` per line); "
            f"add `- /model@models.{name}: {name}` to it by hand, then run make params"
        )
    return new


def _default_sweep(conf: Path) -> str | None:
    import yaml

    for item in yaml.safe_load((conf / "config.yaml").read_text(encoding="utf-8")).get("defaults", []):
        if isinstance(item, dict) and "sweep" in item:
            return item["sweep"]
    return None
