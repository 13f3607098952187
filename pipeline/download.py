"""Stage download (one DVC stage per model, download@<name>): materialise <paths.models>/<name>/.

Source config writes config.json from the model's architecture block (no network). Source path
copies config.json from a local folder. Every source writes provenance.json: where the files came
from, with their sizes and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from pipeline import atomic, params
from pipeline.cli import PipelineError, run

log = logging.getLogger("download")


def config_json(architecture: dict) -> bytes:
    """config.json bytes for an architecture block, stable from run to run."""
    return (json.dumps(architecture, indent=2, sort_keys=True) + "\n").encode()


def files_for(spec: params.ModelSpec) -> dict[str, bytes]:
    """The files of a model's folder, by name, before anything is written."""
    if spec.source == "config":
        return {"config.json": config_json(spec.architecture)}
    if spec.source == "path":
        folder = Path(spec.path)
        if not folder.is_dir():
            raise PipelineError(f"model '{spec.name}': path {folder} is not a folder")
        source = folder / "config.json"
        if not source.is_file():
            raise PipelineError(f"model '{spec.name}': {source} is missing")
        return {"config.json": source.read_bytes()}
    raise PipelineError(f"model '{spec.name}': source: {spec.source} is not supported yet (use source: config)")


def provenance(spec: params.ModelSpec, files: dict[str, bytes]) -> dict:
    return {
        "model": spec.name,
        "source": spec.source,
        "hub_id": spec.hub_id,
        "revision": spec.revision if spec.source == "hub" else None,
        "path": spec.path if spec.source == "path" else None,
        "files": [
            {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model name under models: in params.yaml")
    args = parser.parse_args()
    cfg = params.load()
    if args.model not in cfg.models:
        raise PipelineError(f"model '{args.model}': not in params.yaml models (have: {', '.join(cfg.models)})")
    spec = cfg.models[args.model]
    files = files_for(spec)
    files["provenance.json"] = (json.dumps(provenance(spec, files), indent=2) + "\n").encode()
    out = cfg.models_dir(spec.name)
    atomic.write_dir(out, files)
    log.info("%s: wrote %s (source %s)", spec.name, ", ".join(sorted(files)), spec.source)


if __name__ == "__main__":
    run(main)
