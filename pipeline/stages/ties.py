"""Stage ties: per model, is the output unembedding the input embedding? Writes <paths.ties>.

From the structure always (declared in the config, same tensor in the built model); from the values
when the model has weights: streamed from the checkpoint when it stores both matrices, else the
course's check on the model loaded through transformers.
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.core import atomic, params, results
from pipeline.core.errors import about, run
from pipeline.model import tying
from pipeline.values.ties import value_evidence

log = logging.getLogger("ties")


SAMPLE_COLUMNS = ["model", "input", "output"]  # every k-th pair of the two embedding matrices' values


def main() -> None:
    cfg = params.load()
    summary = results.summary(cfg)
    chunk = int(cfg.values["chunk_elements"])
    rows, samples = [], [pd.DataFrame(columns=SAMPLE_COLUMNS)]
    for name in cfg.models:
        inv = results.inventory(cfg, name)
        s = summary.loc[name]
        with about(name):
            found = value_evidence(cfg.models_dir(name), inv, name, chunk, cfg.models[name].auto_class)
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


if __name__ == "__main__":
    run(main)
