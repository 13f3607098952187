"""Reading the pipeline's own CSVs back, only for the models in the current params (stale files are ignored)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.core.params import Params


def _read(path: Path, what: str, **kwargs) -> pd.DataFrame:
    from pipeline.core import atomic

    atomic.recover()  # a count stage killed between its renames is finished first: files of one run only
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], **kwargs)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; {what} (run `dvc repro`)") from None


def inventory(cfg: Params, name: str) -> pd.DataFrame:
    """The inventory CSV the count stage wrote for model name."""
    inv = _read(Path(cfg.paths["inventory"]) / f"{name}.csv", "the count stage writes it", converters={"aliases": str})
    inv["layer"] = inv["layer"].astype("Int64")
    return inv


def summary(cfg: Params) -> pd.DataFrame:
    """results/summary.csv indexed by model; fails if a model of the sweep is missing from it."""
    table = _read(Path(cfg.paths["summary"]), "the count stage writes it").set_index("model", drop=False)
    missing = [name for name in cfg.models if name not in table.index]
    if missing:
        raise PipelineError(f"{cfg.paths['summary']} has no row for it (run the count stage)", model=missing[0])
    return table.loc[list(cfg.models)]


def table(cfg: Params, key: str) -> pd.DataFrame:
    """A per-model CSV (ties, bias) restricted to the models in params, in sweep order."""
    df = _read(Path(cfg.paths[key]), "the pipeline writes it")
    df = df[df["model"].isin(list(cfg.models))]
    order = {name: i for i, name in enumerate(cfg.models)}
    return df.sort_values("model", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def census(cfg: Params) -> pd.DataFrame:
    """The census stage's rows, claims kept as text as the repositories wrote them; none without a census.list."""
    if not (cfg.census or {}).get("list"):
        return pd.DataFrame()
    text = {"error", "flags", "index_total", "hub_total", "index_explained", "hub_explained", "source", "revision"}
    return _read(Path(cfg.paths["census"]), "the census stage writes it", dtype={c: str for c in text})


def grid(cfg: Params) -> pd.DataFrame:
    """The what-if grid the count stage wrote."""
    return _read(Path(cfg.paths["whatif"]), "the count stage writes it")


PUBLISHED_COLUMNS = ["model", "stated_size", "benchmark", "metric", "value", "source"]


def published(cfg: Params) -> pd.DataFrame:
    """The cited published results (paths.published): every row whole, its value a positive number, its table named."""
    path = Path(cfg.paths["published"])
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; it holds the published results the report plots") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a CSV file ({str(exc).strip().splitlines()[0]})") from None
    if list(table.columns) != PUBLISHED_COLUMNS:
        raise PipelineError(f"{path}: columns must be {','.join(PUBLISHED_COLUMNS)}, not {','.join(table.columns)}")
    for i, row in enumerate(table.itertuples(index=False), start=2):  # line 1 is the header
        empty = [c for c in PUBLISHED_COLUMNS if not str(getattr(row, c)).strip()]
        if empty:
            raise PipelineError(f"{path}: line {i}: {empty[0]} is empty")
        try:
            value = float(row.value)
        except ValueError:
            raise PipelineError(f"{path}: line {i}: value {row.value!r} is not a number") from None
        if not value > 0:
            raise PipelineError(f"{path}: line {i}: value {row.value} must be above 0")
        if "table" not in row.source.lower():
            raise PipelineError(f"{path}: line {i}: source {row.source!r} names no table")
    return table.astype({"value": float})
