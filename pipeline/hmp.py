"""`hmp`: count any model in one command, or add it to the pipeline's sweep.

    hmp count SOURCE [--revision REV] [--json] [--per-layer]
    hmp add NAME SOURCE [--revision REV] [--sweep SWEEP] [--stated-size 117M]

SOURCE is a config.json file, a checkpoint folder (safetensors, or a GGUF file or folder), or a Hub id
(`openai-community/gpt2`). `count` runs the stages' own library on it (the download stage's source
checks and links, the count stage's inventory, reconciliation and conventions, the ties stage's
evidence, the bias stage's split) in a temporary folder, and prints what the report would say of it.
`add` writes conf/model/NAME.yaml (a Hub id pinned to the commit it resolved), lists it in a sweep and
rewrites params.yaml, so `dvc repro` counts it with the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.cli import PipelineError, first_line, one_line

log = logging.getLogger("hmp")

# A Hub repository id: an optional owner and a name (huggingface_hub's own rule is stricter; it checks it too)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# A branch, tag or commit: git's characters, no '..' and no leading '/' (it becomes a path in the Hub cache)
REVISION = re.compile(r"(?!.*\.\.)[A-Za-z0-9][\w.\-/]{0,199}")


def entry_for(source: str, revision: str | None = None, allow_pickle: bool = False) -> dict[str, Any]:
    """The model entry (conf/model/*.yaml fields) reading SOURCE: a config file, a folder, a GGUF file or a Hub id.

    allow_pickle (--allow-pickle) lets a folder or Hub repository of .bin/.pt files be loaded with
    torch.load(weights_only=True), as allow_pickle: true does in a model file.
    """
    entry = _entry_for(source, revision)
    if allow_pickle:
        if entry["source"] == "config":
            raise PipelineError(f"{source}: --allow-pickle applies to a checkpoint folder or a Hub id")
        entry["allow_pickle"] = True
    return entry


def _entry_for(source: str, revision: str | None) -> dict[str, Any]:
    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError) as exc:  # a name too long for the file system, ~user with no such user
        raise PipelineError(f"{source}: not a usable path ({first_line(exc)})") from None
    if revision is not None and not REVISION.fullmatch(revision):
        raise PipelineError(f"--revision {revision}: not a branch, tag or commit name")
    if exists:
        if revision:
            raise PipelineError(f"{source}: --revision applies to a Hub id, not to a local file or folder")
        path = path.resolve()
        if path.is_file() and path.suffix == ".json":
            return {"source": "config", "config_path": str(path)}
        if path.is_file() and path.suffix != ".gguf":
            raise PipelineError(f"{source}: not a config.json, a .gguf file or a checkpoint folder")
        from pipeline import checkpoint, sources

        entry: dict[str, Any] = {"source": "path", "path": str(path)}
        try:
            if path.is_dir() and not sources.is_gguf(path):
                if not (path / "config.json").is_file():
                    raise PipelineError(f"{source}: a checkpoint folder needs its config.json")
                if not checkpoint.weight_files(path, allow_pickle=True)[0]:
                    if ggufs := sorted(p.name for p in path.glob("*.gguf")):  # never counted from its config silently
                        raise PipelineError(
                            f"{source}: holds config.json and {', '.join(ggufs)} but no safetensors, so what to count "
                            f"is ambiguous; name the .gguf file ({path / ggufs[0]}) or the config.json to count one"
                        )
                    entry["config_only"] = True  # no weights: counted from its config alone, and said so
        except OSError as exc:  # a folder that cannot be listed (no permission), a file system error
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        return entry
    looks_local = source.startswith((".", "/", "~")) or source.endswith((".json", ".gguf", ".safetensors"))
    if looks_local or not HUB_ID.fullmatch(source) or source.count("/") > 1:
        raise PipelineError(f"{source}: no such file or folder, and not a Hub id (owner/name)")
    return {"source": "hub", "hub_id": source, "revision": revision or "main"}


def count_source(source: str, revision: str | None = None, name: str | None = None, allow_pickle: bool = False) -> dict:
    """Everything `hmp count` prints, as plain data: summary row, conventions, tie, weight/bias split, blocks."""
    from pipeline import conventions, count, inventory, params, sources, splits, ties, tying, values

    entry = entry_for(source, revision, allow_pickle)
    name = _checked_name(name or _default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with tempfile.TemporaryDirectory(prefix="hmp-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        try:
            record = sources.materialise(spec, folder, hashes=False)  # links, never copies; no sha256 of each byte
            (folder / "provenance.json").write_text(json.dumps(record))
            inv, row = count.count_model(spec, folder)
            found = ties.value_evidence(folder, inv, name, values.CHUNK_ELEMENTS, spec.auto_class)
        except OSError as exc:  # a source folder or file the system will not let us read
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        except PipelineError as exc:  # name the user's files, not the temporary folder they were linked into
            origin = Path(entry.get("path") or entry.get("config_path") or folder)
            origin = origin if origin.is_dir() else origin.parent
            raise PipelineError(str(exc).replace(str(folder), str(origin))) from None
    found = {k: v for k, v in (found or {}).items() if k != "sample"}
    tie = tying.evidence(inv, row["declared_tied"], row["input_embedding"], row["output_embedding"], found)
    conv = conventions.conventions(inv, row)
    split = splits.split(inv)
    course = split[(split["definition"] == "course") & (split["component"] == "all")]
    return {
        "model": name,
        "source": {k: v for k, v in record.items() if k in ("source", "hub_id", "revision", "path")},
        "from_cache": record["source"] == "hub" and _offline(),
        "summary": {k: _plain(v) for k, v in row.items()},
        "conventions": [{k: _plain(c[k]) for k in ("convention", "params", "definition")} for c in conv],
        "tie": {k: _plain(v) for k, v in tie.items()},
        "weights_and_biases": {r.category: int(r.params) for r in course.itertuples()},
        "blocks": [{k: _plain(v) for k, v in r.items()} for r in blocks(inventory.parameters(inv)).to_dict("records")],
    }


def _checked_name(name: str, what: str) -> str:
    """A model name as the pipeline's (a DVC stage name and a folder name): else one line naming the option."""
    from pipeline import params

    if not params.NAME_RE.fullmatch(name) or len(name) > params.MAX_NAME:
        raise PipelineError(
            f"{what} {one_line(repr(name))}: a model name is 1 to {params.MAX_NAME} letters, digits, '-' and '_'"
        )
    return name


def blocks(params_inv) -> Any:
    """A torchinfo-style table: the model's top-level modules and each block, with parameters and running total."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for name, part in params_inv.groupby(_module_of(params_inv), sort=False):
        layer = part["layer"].dropna()
        rows.append(
            {
                "module": name,
                "layer": int(layer.iloc[0]) if len(layer) else None,
                "tensors": len(part),
                "params": int(part["numel"].sum()),
            }
        )
    table = pd.DataFrame(rows, columns=["module", "layer", "tensors", "params"])
    table["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)  # None outside the blocks, not NaN
    table["cumulative"] = table["params"].cumsum()
    return table


def _module_of(params_inv) -> Any:
    """Each parameter's block (`transformer.h.3`) or, outside the blocks, its module (`transformer.wte`)."""
    import pandas as pd

    names = params_inv["name"].str.rsplit(".", n=1).str[0]
    out = []
    for n, k in zip(names, params_inv["layer"], strict=True):
        mark = None if pd.isna(k) else f".{int(k)}."  # missing: not in a block
        out.append(n[: n.index(mark) + len(mark) - 1] if mark and mark in n + "." else n)
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: numpy and pandas scalars to Python, missing to None."""
    import math

    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _default_name(source: str) -> str:
    """A model name from its source: the last path part or Hub name, in the pipeline's name alphabet."""
    path = Path(source.rstrip("/"))
    if path.name == "config.json":
        stem = path.resolve().parent.name
    else:
        stem = path.stem if path.suffix in (".gguf", ".json") else path.name
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-") or "model"
    return name[:64]


def text(result: dict, per_layer: bool = False) -> str:
    """The readable form of count_source's result."""
    import pandas as pd

    from pipeline import conventions, inventory
    from pipeline.report import human  # the report's own short form (124.4M, 1.56B)

    s = result["summary"]
    src = result["source"]
    where = {
        "config": "its config alone (no weights)",
        "path": f"{src.get('path')}",
        "hub": f"{src.get('hub_id')} @ {str(src.get('revision'))[:12]}"
        + (" (from the local Hub cache: HF_HUB_OFFLINE is set)" if result["from_cache"] else ""),
    }[src["source"]]
    weights = "with weights" if s.get("checkpoint_tensors") is not None else "shapes only, no weights"
    total = int(s["total"])
    lines = [
        f"{result['model']}: {total:,} parameters ({human(total)}), {s['model_type']}, {weights}",
        f"  from {where}",
        f"  counted as {s['model_class']} ({inventory.class_reason(s['class_from'])})",
    ]
    if s.get("ignored_fields"):
        lines.append(f"  config.json fields the model never reads: {s['ignored_fields'].replace(';', ', ')}")
    if s.get("n_experts"):
        lines.append(
            f"  mixture of experts: {int(s['n_experts'])} experts, {int(s['experts_per_token'])} per token; "
            f"active per token {int(s['active']):,} ({human(int(s['active']))})"
        )
    if s.get("quant_method"):
        lines.append(f"  quantized ({s['quant_method']}): a naive sum of its header gives {s['checkpoint_tensors']:,}")
    conv = pd.DataFrame(result["conventions"]).dropna(subset=["params"])
    dense = not s.get("n_experts")  # a dense model's active counts equal its total: not shown
    conv = conv[~conv["convention"].isin(conventions.ACTIVE_TOOLS) | (not dense)]
    who = {**conventions.TOOLS, **conventions.ACTIVE_TOOLS}
    table = pd.DataFrame(
        {
            "convention": conv["convention"],
            "parameters": conv["params"].astype("int64"),
            "": conv["params"].map(lambda n: human(int(n))),
            "who prints it": conv["convention"].map(who),
        }
    )
    lines += ["", "Conventions (why every tool prints a different number; --json has each definition):"]
    lines.append(table.to_markdown(index=False, tablefmt="simple", intfmt=","))
    t = result["tie"]
    r = t.get("pearson_r")
    values = f"r = {r:.6f}, max |Δ| = {t['max_abs_diff']:.3g} ({t['method']})" if r is not None else t["method"]
    lines += [
        "",
        "Tie (input embedding and output unembedding):",
        f"  declared in the config: {_yes(t['declared_tied'])} · one tensor in the built model: "
        f"{_yes(t['structural_tied'])} · values: {values}",
    ]
    wb = result["weights_and_biases"]
    lines += ["", "Weights and biases (the course's split: names ending in .bias):"]
    lines += [f"  {cat:<7}{n:>16,}  {100 * n / total:8.4f} %" for cat, n in wb.items()]
    if per_layer:
        table = pd.DataFrame(result["blocks"])
        table["layer"] = table["layer"].map(lambda k: "" if pd.isna(k) else str(int(k)))
        lines += ["", "Per module and block (each tied tensor once, where it is first held):"]
        lines.append(table.to_markdown(index=False, tablefmt="simple", intfmt=",", colalign=("left",)))
    return "\n".join(lines)


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


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

    from pipeline import atomic, params

    conf = Path(params.CONF_DIR)
    if not (conf / "config.yaml").is_file():
        raise PipelineError(f"{conf}/config.yaml not found: run hmp add from the repository root")
    _checked_name(name, "name")
    if sweep is not None:
        _checked_name(sweep, "--sweep")  # a file name in conf/sweep/, never a path
    target = conf / "model" / f"{name}.yaml"
    if target.exists():
        raise PipelineError(f"{target} exists already; pick another name or edit it")
    entry = entry_for(source, revision, allow_pickle)
    if stated_size is not None:
        entry["stated_size"] = stated_size
    _no_interpolation(entry)
    spec = params.model_spec(name, entry)  # every field checked before a file is written
    # counted as `hmp count` counts it, so a model `dvc repro` would refuse is refused now, with nothing written
    counted = count_source(source, revision, name, allow_pickle)
    if spec.source == "hub":
        entry["revision"] = counted["source"]["revision"]  # the commit the Hub, or offline the cache, resolved
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
        params.write_params(overrides)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hmp", description="Exact parameter counts of any transformer.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("count", help="count a config.json, a checkpoint folder, a .gguf file or a Hub id")
    c.add_argument("source", help="config.json, checkpoint folder, .gguf file, or Hub id (owner/name)")
    c.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    c.add_argument("--name", help="the model's name in the output (default: from the source)")
    c.add_argument("--json", action="store_true", help="print JSON for scripts")
    c.add_argument("--per-layer", action="store_true", help="also a torchinfo-style table of modules and blocks")
    c.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP)
    a = sub.add_parser("add", help="add a model to conf/ and params.yaml, for dvc repro")
    a.add_argument("name", help="the model's name in the pipeline (letters, digits, '-' and '_')")
    a.add_argument("source", help="config.json, checkpoint folder, .gguf file, or Hub id (owner/name)")
    a.add_argument("--revision", help="Hub branch, tag or commit to pin (default: main, resolved to its commit)")
    a.add_argument("--sweep", help="the conf/sweep/ file to list it in (default: the sweep params.yaml records)")
    a.add_argument("--stated-size", help="the size its authors state, e.g. 117M (the report compares it)")
    a.add_argument("--allow-pickle", action="store_true", help=PICKLE_HELP + " (written as allow_pickle: true)")
    args = parser.parse_args(argv)
    try:
        _command(args)
    except PipelineError as exc:  # the stages' advice names model-file fields; here the user gave a source
        raise PipelineError(_for_hmp(str(exc))) from None


PICKLE_HELP = "load .bin/.pt checkpoints with torch.load(weights_only=True) (pickle can run code)"
# The stages' advice, as an hmp user can follow it: options instead of model-file fields
HMP_ADVICE = (
    (r"\buse source: config\b", "use its config.json instead"),
    (r"set allow_pickle: true in the model config", "pass --allow-pickle"),
    (r"set config_only: true to count it from its config alone", "give its config.json to count it alone"),
)


def _for_hmp(message: str) -> str:
    for pattern, advice in HMP_ADVICE:
        message = re.sub(pattern, advice, message)
    return message


def _command(args: argparse.Namespace) -> None:
    if args.command == "count":
        result = count_source(args.source, args.revision, args.name, args.allow_pickle)
        _say(json.dumps(result, indent=2) if args.json else text(result, args.per_layer))
    else:
        written = add(args.name, args.source, args.revision, args.sweep, args.stated_size, args.allow_pickle)
        _say(f"added {args.name}: wrote {', '.join(str(p) for p in written)}; now run `dvc repro`")


def _say(answer: str) -> None:
    """Print the answer and make sure it reached stdout: a full disk or a closed file is an error, not exit 0."""
    try:
        print(answer)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader stopped early (hmp count ... | head): entry_point ends quietly
    except OSError as exc:
        raise PipelineError(f"cannot write the answer to stdout ({exc.strerror or first_line(exc)})") from None


def entry_point() -> None:
    """The console script: one-line errors, never a traceback (as the stages)."""
    import os

    from pipeline.cli import run

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its config notes are not the answer either
    try:
        run(lambda: main(sys.argv[1:]), level=logging.WARNING)  # the stages' progress lines are not the answer
    except BrokenPipeError:
        # The reader closed the pipe (hmp count ... | head -1): nothing more can be said there. Point stdout
        # at /dev/null so the interpreter's own flush at exit stays quiet, and exit as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    entry_point()
