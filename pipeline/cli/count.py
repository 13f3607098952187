"""`hmp count SOURCE`: the model entry a source reads as (a config file, a folder, a GGUF file, a Hub id), the
stages' own library run on it in a temporary folder, and the readable form of the answer.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line, one_line

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
        from pipeline import sources
        from pipeline.formats import safetensors_file

        entry: dict[str, Any] = {"source": "path", "path": str(path)}
        try:
            if path.is_dir() and not sources.is_gguf(path):
                if not (path / "config.json").is_file():
                    raise PipelineError(f"{source}: a checkpoint folder needs its config.json")
                if not safetensors_file.weight_files(path, allow_pickle=True)[0]:
                    if ggufs := sorted(p.name for p in path.glob("*.gguf")):  # never counted from its config silently
                        raise PipelineError(
                            f"{source}: holds config.json and {', '.join(ggufs)} but no safetensors, so what to count "
                            f"is ambiguous; name the .gguf file ({path / ggufs[0]}) or the config.json to count one"
                        )
                    entry["config_only"] = True  # no weights: counted from its config alone, and said so
        except OSError as exc:  # a folder that cannot be listed (no permission), a file system error
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        return entry
    conf = conf_entry(source) if revision is None else None
    if conf is not None:  # a model of the project's own conf/model/ (hmp count gpt2): counted as that entry is
        return conf[1]
    looks_local = source.startswith((".", "/", "~")) or source.endswith((".json", ".gguf", ".safetensors"))
    if looks_local or not HUB_ID.fullmatch(source) or source.count("/") > 1:
        raise PipelineError(f"{source}: no such file or folder, and not a Hub id (owner/name)")
    return {"source": "hub", "hub_id": source, "revision": revision or "main"}


# Where `hmp count NAME` looks for conf/model/NAME.yaml: the project in the working folder, then the project
# this package was installed from (make setup installs it in place)
CONF_MODELS = (Path("conf") / "model", Path(__file__).resolve().parents[2] / "conf" / "model")


def conf_entry(source: str) -> tuple[Path, dict[str, Any]] | None:
    """(the file, its entry) of a model the project's conf/model/ names, for a bare name (gpt2); else None. Relative
    paths in the entry are the project's, so they are made absolute against that project's folder."""
    import yaml

    if not re.fullmatch(r"[A-Za-z0-9][\w-]*", source):
        return None
    for folder in CONF_MODELS:
        path = folder / f"{source}.yaml"
        if path.is_file():
            entry = yaml.safe_load(path.read_text()) or {}
            if not isinstance(entry, dict):
                raise PipelineError(f"{path}: not a model entry (a mapping of fields)")
            root = path.resolve().parents[2]
            for key in ("path", "config_path"):
                if isinstance(entry.get(key), str) and not Path(entry[key]).expanduser().is_absolute():
                    entry[key] = str(root / entry[key])
            return path, entry
    return None


def count_source(source: str, revision: str | None = None, name: str | None = None, allow_pickle: bool = False) -> dict:
    """Everything `hmp count` prints, as plain data: summary row, conventions, tie, weight/bias split, blocks."""
    from pipeline import sources
    from pipeline.core import params
    from pipeline.model import conventions, inventory, splits, tying
    from pipeline.model.count import count_model
    from pipeline.values import reader
    from pipeline.values.ties import value_evidence

    entry = entry_for(source, revision, allow_pickle)
    conf = conf_entry(source) if revision is None and not Path(source).expanduser().exists() else None
    shown = name or shown_name(source)
    name = checked_name(name or _default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with tempfile.TemporaryDirectory(prefix="hmp-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        try:
            record = sources.materialise(spec, folder, hashes=False)  # links, never copies; no sha256 of each byte
            (folder / "provenance.json").write_text(json.dumps(record))
            inv, row = count_model(spec, folder)
            found = value_evidence(folder, inv, name, reader.CHUNK_ELEMENTS, spec.auto_class)
        except OSError as exc:  # a source folder or file the system will not let us read
            raise PipelineError(f"{source}: cannot be read ({exc.strerror or first_line(exc)})") from None
        except PipelineError as exc:  # name the user's files, not the temporary folder they were linked into
            text = str(exc)
            if entry.get("config_path"):  # the folder's config.json is the user's file, by its own name
                text = text.replace(str(folder / "config.json"), str(entry["config_path"]))
            origin = Path(entry.get("path") or entry.get("config_path") or folder)
            origin = origin if origin.is_dir() else origin.parent
            raise PipelineError(text.replace(str(folder), str(origin))) from None
    found = {k: v for k, v in (found or {}).items() if k != "sample"}
    tie = tying.evidence(inv, row["declared_tied"], row["input_embedding"], row["output_embedding"], found)
    conv = conventions.conventions(inv, row)
    split = splits.split(inv)
    course = split[(split["definition"] == "course") & (split["component"] == "all")]
    return {
        "model": shown,
        "source": {k: v for k, v in record.items() if k in ("source", "hub_id", "revision", "path")}
        | ({"conf": str(conf[0])} if conf else {}),
        "from_cache": record["source"] == "hub" and _offline(),
        "summary": {k: _plain(v) for k, v in row.items()},
        "conventions": [{k: _plain(c[k]) for k in ("convention", "params", "definition")} for c in conv],
        "tie": {k: _plain(v) for k, v in tie.items()},
        "weights_and_biases": {r.category: int(r.params) for r in course.itertuples()},
        "blocks": [{k: _plain(v) for k, v in r.items()} for r in blocks(inventory.parameters(inv)).to_dict("records")],
    }


def checked_name(name: str, what: str) -> str:
    """A model name as the pipeline's (a DVC stage name and a folder name): else one line naming the option."""
    from pipeline.core import params

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
    for n, blocks, k in zip(names, params_inv["block_list"].fillna(""), params_inv["layer"], strict=True):
        out.append(n if pd.isna(k) or not blocks else f"{blocks}.{int(k)}")
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


def shown_name(source: str) -> str:
    """The model's name as the user knows it: a Hub id as written, else the file's or folder's own name
    (meta-llama__Llama-3.1-8B of meta-llama__Llama-3.1-8B.json; the folder's name for a config.json)."""
    path = Path(source.rstrip("/"))
    if not path.exists() and HUB_ID.fullmatch(source) and source.count("/") == 1:
        return source
    if path.name == "config.json":
        return path.resolve().parent.name or "model"
    return (path.stem if path.suffix in (".gguf", ".json") else path.name) or "model"


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

    from pipeline.model import build, conventions
    from pipeline.report.text import human  # the report's own short form (124.4M, 1.56B)

    s = result["summary"]
    src = result["source"]
    where = {
        "config": "its config alone (no weights)" + (f", as {src['conf']} gives it" if src.get("conf") else ""),
        "path": f"{src.get('path')}",
        "hub": f"{src.get('hub_id')} @ {str(src.get('revision'))[:12]}"
        + (" (from the local Hub cache: HF_HUB_OFFLINE is set)" if result["from_cache"] else ""),
    }[src["source"]]
    weights = "with weights" if s.get("checkpoint_tensors") is not None else "shapes only, no weights"
    total = int(s["total"])
    lines = [
        f"{result['model']}: {total:,} parameters ({human(total)}), model type {s['model_type']}, {weights}",
        f"  from {where}",
        f"  counted as {s['model_class']} ({build.class_reason(s['class_from'])})",
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
    who = {**conventions.TOOLS, **conventions.ACTIVE_TOOLS, **conventions.PART_TOOLS}
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
    if s.get("tie_note"):
        lines.append(f"  {s['tie_note']}")
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
