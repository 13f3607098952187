"""Stage download (one DVC stage per model, download@<name>): materialise <paths.models>/<name>/.

Source config writes config.json from the model's architecture block (no network). Source path
takes config.json and the weights from a local folder; source hub from the Hugging Face Hub at the
model's revision. Every source writes provenance.json: where the files came from (with the resolved
commit sha for the Hub), their sizes and sha256.
"""

from __future__ import annotations

import argparse
import json
import logging

from pipeline import sources
from pipeline.core import atomic, compose, params
from pipeline.core.errors import PipelineError, about, run

log = logging.getLogger("download")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name under models: in params.yaml")
    args = parser.parse_args()
    compose.check_composed()  # dvc.yaml makes conf/ a dependency of this stage, so a conf/ edit lands here
    cfg = params.load()
    if args.model not in cfg.models:
        raise PipelineError(f"model '{args.model}': not in params.yaml models (have: {', '.join(cfg.models)})")
    spec = cfg.models[args.model]
    with about(spec.name), atomic.replacing_dir(cfg.models_dir(spec.name)) as tmp:
        record = sources.materialise(spec, tmp)
        (tmp / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    files = ", ".join(f["name"] for f in record["files"])
    log.info(
        "%s: source %s%s: %s", spec.name, spec.source, f" @ {record['revision']}" if record["revision"] else "", files
    )


if __name__ == "__main__":
    run(main)
