"""The count of a source: one call (count) from a config file, a checkpoint folder, a GGUF file, a Hub id or a
model of conf/model/ to a typed answer (Count): the summary row, every convention, the tie's evidence, the
weights and biases, the blocks. The stages' own library, run in a temporary folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.answers import source as sources_named


@dataclasses.dataclass(frozen=True)
class Count:
    """What `hmp count` prints; as_json() is its --json, field for field in this order."""

    model: str  # as the user knows it (a Hub id as written, a file's or folder's name)
    source: dict[str, Any]  # where it came from: source kind, hub_id, revision, path; conf: the conf/model/ file
    from_cache: bool  # a Hub source read from the local cache (HF_HUB_OFFLINE)
    summary: dict[str, Any]  # the count stage's summary row (results/summary.csv's columns)
    conventions: list[dict[str, Any]]  # {convention, params, definition}
    tie: dict[str, Any]  # declared, structural and value evidence of the input/output embedding tie
    weights_and_biases: dict[str, int]  # the course's split: {category: parameters}
    blocks: list[dict[str, Any]]  # {module, layer, tensors, params, cumulative}

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count(source: str, revision: str | None = None, name: str | None = None, allow_pickle: bool = False) -> Count:
    """Count SOURCE as the pipeline's stages would: download's checks and links, count, ties, bias."""
    from pipeline.core import params
    from pipeline.model import conventions, inventory, splits, tying
    from pipeline.values import reader
    from pipeline.values.ties import value_evidence

    entry = sources_named.entry_for(source, revision, allow_pickle)
    local = Path(source).expanduser().exists()
    conf = sources_named.conf_entry(source) if revision is None and not local else None
    shown = name or sources_named.shown_name(source)
    name = sources_named.checked_name(name or sources_named.default_name(source), "--name")
    spec = params.model_spec(name, entry)
    with sources_named.linked(spec, entry, source) as (folder, record):
        counted = sources_named.counted(spec, folder)
        inv, row = counted.inv, counted.row
        # the headers as read and the class as built, handed on: the meta model is the evidence's last user
        found = value_evidence(folder, inv, name, reader.CHUNK_ELEMENTS, spec.auto_class, counted.loaded, counted.built)
    found = {k: v for k, v in (found or {}).items() if k != "sample"}
    tie = tying.evidence(inv, row["declared_tied"], row["input_embedding"], row["output_embedding"], found)
    split = splits.split(inv)
    course = split[(split["definition"] == "course") & (split["component"] == "all")]
    return Count(
        model=shown,
        source={k: v for k, v in record.items() if k in ("source", "hub_id", "revision", "path")}
        | ({"conf": str(conf[0])} if conf else {}),
        from_cache=record["source"] == "hub" and _offline(),
        summary={k: _plain(v) for k, v in row.items()},
        conventions=[
            {k: _plain(c[k]) for k in ("convention", "params", "definition")} for c in conventions.conventions(inv, row)
        ],
        tie={k: _plain(v) for k, v in tie.items()},
        weights_and_biases={r.category: int(r.params) for r in course.itertuples()},
        blocks=[{k: _plain(v) for k, v in r.items()} for r in blocks(inventory.parameters(inv)).to_dict("records")],
    )


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
