"""Stage ties: per model, is the output unembedding the input embedding? Writes <paths.ties>.

From the structure always (declared in the config, same tensor in the built model); from the values
when the model has weights: streamed from the checkpoint when it stores both matrices, else the
course's check on the model loaded through transformers. The value evidence of a model with weights is
cached (<paths.memo>/ties, pipeline/core/memo.py), keyed by its files, its inventory, the chunk size and the code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from pipeline.core import atomic, memo, params, results
from pipeline.core.errors import about, run
from pipeline.model import tying
from pipeline.values.ties import value_evidence

log = logging.getLogger("ties")


SAMPLE_COLUMNS = ["model", "input", "output"]  # every k-th pair of the two embedding matrices' values


def evidence(cfg: params.Params, name: str, inv: pd.DataFrame, cache: memo.Memo) -> dict | None:
    """value_evidence of one model, from the cache when its files and inventory are unchanged (a model without
    weight files is quick to answer, so only models with weights are cached)."""
    folder, chunk, auto_class = cfg.models_dir(name), int(cfg.values["chunk_elements"]), cfg.models[name].auto_class
    if not folder.is_dir() or not any(p.suffix in (".safetensors", ".gguf") for p in folder.iterdir()):
        return value_evidence(folder, inv, name, chunk, auto_class)
    prov = json.loads((folder / "provenance.json").read_text())
    inv_file = Path(cfg.paths["inventory"]) / f"{name}.csv"
    key = cache.key(prov, memo.folder_state(folder), memo.file_digest(inv_file), chunk, auto_class)
    found = cache.fetch(key, _decoded)
    if found is None:
        found = value_evidence(folder, inv, name, chunk, auto_class)
        if found is not None and "sample" in found:
            found = {**found, "sample": memo.frame_to_plain(found["sample"])}
        found = _decoded(cache.put(key, {"found": found}))
    return found


def _decoded(payload: dict) -> dict | None:
    found = payload["found"]
    if found is None:
        return None
    if not isinstance(found, dict):
        raise TypeError("not a ties entry")
    return {**found, "sample": memo.frame_from_plain(found["sample"])} if "sample" in found else dict(found)


def main() -> None:
    cfg = params.load()
    summary = results.summary(cfg)
    cache = memo.Memo(cfg.paths["memo"], "ties")
    rows, samples = [], [pd.DataFrame(columns=SAMPLE_COLUMNS)]
    for name in cfg.models:
        inv = results.inventory(cfg, name)
        s = summary.loc[name]
        with about(name):
            found = evidence(cfg, name, inv, cache)
        if found and "sample" in found:
            samples.append(found.pop("sample").assign(model=name)[SAMPLE_COLUMNS])
        rows.append(tying.evidence(inv, s["declared_tied"], s["input_embedding"], s["output_embedding"], found))
        r = rows[-1]
        log.info(
            "%s: declared tied %s, same tensor %s, r %s", name, r["declared_tied"], r["structural_tied"], r["pearson_r"]
        )
    with atomic.batch():
        atomic.write_csv(cfg.paths["ties"], pd.DataFrame(rows, columns=tying.COLUMNS))
        atomic.write_csv(cfg.paths["tie_sample"], pd.concat(samples, ignore_index=True))
    cache.prune()
    log.info("%d models: %s", len(cfg.models), cache.summary())


if __name__ == "__main__":
    run(main)
