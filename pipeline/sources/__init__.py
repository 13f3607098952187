"""Where a model's files come from: its config (no network), a local folder, or the Hub at a pinned revision.

Hub access goes through huggingface_hub's snapshot_download into the normal Hugging Face cache, and
fetches only config.json and the safetensors files (plus their index). Pickle checkpoints are refused
unless the model config sets allow_pickle; then they are loaded with torch.load(weights_only=True)
and converted to safetensors, so every later stage reads one safe format.

May import pipeline.core, pipeline.formats and pipeline.model (fetch: range needs the architecture to know which
byte ranges are the embeddings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline.core import atomic
from pipeline.core.errors import PipelineError, first_line, read_json_object
from pipeline.core.params import ModelSpec
from pipeline.formats import entries, gguf_file, safetensors_file
from pipeline.model import reconcile

log = logging.getLogger("download")

SAFETENSORS_PATTERNS = ["config.json", "*.safetensors", safetensors_file.SAFETENSORS_INDEX]
PICKLE_PATTERNS = ["*.bin", safetensors_file.PICKLE_INDEX]


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_json(architecture: dict) -> bytes:
    """config.json bytes for an architecture block, stable from run to run."""
    return (json.dumps(architecture, indent=2, sort_keys=True) + "\n").encode()


def is_gguf(path: Path) -> bool:
    """A .gguf file, or a folder holding one (and no config.json of its own)."""
    if path.suffix == ".gguf":
        return True
    return path.is_dir() and any(path.glob("*.gguf")) and not (path / "config.json").exists()


def check_architecture(spec: ModelSpec, config_path: Path, config: dict | None = None) -> None:
    """A model from a folder or the Hub may also give an architecture block: each field must be in the file, equal.

    config is the file's content when it does not come from config_path itself (a GGUF file's metadata).
    """
    if config is None:
        config = read_json_object(entries.regular_file(config_path), f"model '{spec.name}'")
    if config.get("auto_map") and config.get("model_type") is None:
        raise PipelineError(f"model '{spec.name}': {config_path} needs remote code (auto_map); it is never run")
    arch = spec.architecture or {}
    defaults = _class_defaults(config) if any(key not in config for key in arch) else {}
    for key, value in arch.items():
        if key not in config:  # save_pretrained leaves out fields at their default: compare with that
            if key in defaults and defaults[key] == value:
                continue
            default = f" (its default is {defaults[key]!r})" if key in defaults else ""
            raise PipelineError(
                f"model '{spec.name}': architecture.{key}={value!r} but {config_path} has no field {key}{default}"
            )
        if config[key] != value:
            raise PipelineError(
                f"model '{spec.name}': architecture.{key}={value!r} but {config_path} says {config[key]!r}"
            )


PROBE_TIMEOUT = 5  # seconds: an unreachable Hub is reported at once, not after huggingface_hub's ~25 s of retries


def hub_unreachable() -> str | None:
    """None when the Hub endpoint answers at all (any HTTP status), else why it cannot be reached.

    One HEAD through huggingface_hub's own client, without its retries: those are for a Hub that
    answers, and would turn an endpoint that does not into half a minute of warnings.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT)
    except Exception as exc:  # the HTTP client's connect, timeout and TLS errors
        return first_line(exc)
    return None


def hub_offline_reason() -> str | None:
    """None when the Hub can be asked; else why not, as a clause: offline mode set, or the endpoint not answering."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set (offline mode)"
    if reason := hub_unreachable():
        return f"the Hub at {constants.ENDPOINT} cannot be reached ({reason})"
    return None


def _class_defaults(config: dict) -> dict:
    """The default fields of config.json's config class (what a file that leaves a field out means)."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return {}
    return CONFIG_MAPPING[model_type]().to_dict()


def fetch_hub(spec: ModelSpec) -> tuple[Path, str]:
    """snapshot_download config.json and the safetensors files at spec.revision; (snapshot folder, commit sha).

    Offline (HF_HUB_OFFLINE) or when the endpoint does not answer a first probe, the local cache alone
    is used, and a model missing there is one line within seconds saying which case it is and how to
    work offline. Online, huggingface_hub draws its own progress bars (no bar of ours around them).
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from pipeline.core import progress
    from pipeline.formats import remote

    revision = spec.revision or "main"
    where = f"{spec.hub_id}@{revision}"
    cache = constants.HF_HUB_CACHE
    offline = hub_offline_reason()
    bars = progress.hub_tqdm()

    def snapshot(rev: str, patterns: list[str]) -> Path:
        return Path(
            snapshot_download(
                spec.hub_id,
                revision=rev,
                allow_patterns=patterns,
                local_files_only=bool(offline),
                tqdm_class=bars,
                library_name=remote.LIBRARY_NAME,
            )
        )

    try:
        folder = snapshot(revision, SAFETENSORS_PATTERNS)
        if spec.allow_pickle and not safetensors_file.weight_files(folder, allow_pickle=True)[0]:
            folder = snapshot(folder.name, [*SAFETENSORS_PATTERNS, *PICKLE_PATTERNS])
    except LocalEntryNotFoundError as exc:
        if offline:
            fix = (
                "HF_HUB_OFFLINE=1 works from a pre-filled cache: fill it where the Hub can be reached "
                "(the same run without HF_HUB_OFFLINE)"
                if constants.is_offline_mode()
                else "pre-fill the cache and set HF_HUB_OFFLINE=1"
            )
            raise PipelineError(
                f"model '{spec.name}': {offline} and {where} is not in the cache {cache}; {fix}, or use source: config"
            ) from None
        cause = f" ({first_line(exc.__cause__)})" if exc.__cause__ else ""  # it answered the probe, then failed
        raise PipelineError(
            f"model '{spec.name}': the Hub at {constants.ENDPOINT} did not serve {where}{cause} and it is not in "
            f"the cache {cache}; try again, or pre-fill the cache and set HF_HUB_OFFLINE=1, or use source: config"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise PipelineError(
            f"model '{spec.name}': hub_id {spec.hub_id} is not a repository the Hub serves "
            "(or it is private or gated: set HF_TOKEN to a token that may read it)"
        ) from None
    except RevisionNotFoundError:
        raise PipelineError(f"model '{spec.name}': revision {revision} not found in {spec.hub_id}") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"model '{spec.name}': cannot fetch {where} ({first_line(exc)}); use source: config, or pre-fill the cache"
        ) from None
    if offline and not constants.is_offline_mode():
        log.warning("%s: %s; %s is taken from the cache", spec.name, offline, where)
    return folder, folder.name


def fetch_ranges(spec: ModelSpec, out: Path) -> dict:
    """Range-read a Hub checkpoint: config.json, every safetensors header, and the embedding matrices only.

    Writes config.json, remote_headers.json and embeddings.safetensors into out; returns provenance fields.
    """
    from huggingface_hub import constants

    from pipeline.formats import remote
    from pipeline.model import build, config_file, inventory

    if offline := hub_offline_reason():
        raise PipelineError(
            f"model '{spec.name}': {offline} and fetch: range reads {spec.hub_id} from the Hub; use fetch: download "
            f"with a pre-filled cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE=1, or source: config"
        )
    try:
        sha = remote.resolve_revision(spec.hub_id, spec.revision or "main")
    except PipelineError as exc:
        raise PipelineError(f"model '{spec.name}': {exc}; use source: config, or pre-fill the cache") from None
    headers = remote.hub_headers()
    opened: dict[str, remote.RangeFile] = {}

    def rf(name: str) -> remote.RangeFile:
        if name not in opened:
            opened[name] = remote.RangeFile(remote.hub_url(spec.hub_id, name, sha), headers)
        return opened[name]

    try:
        (out / "config.json").write_bytes(rf("config.json").read_all())
        try:
            index_blob = rf(safetensors_file.SAFETENSORS_INDEX).read_all()
        except FileNotFoundError:
            files = [safetensors_file.SAFETENSORS_SINGLE]
        else:
            index_path = out / safetensors_file.SAFETENSORS_INDEX
            index_path.write_bytes(index_blob)
            files = safetensors_file.shard_names(index_path)
            index_path.unlink()
        stored = {}
        for name in files:
            data_start, header = remote.read_header(rf(name))
            if rf(name).size is None:
                raise PipelineError(f"{rf(name).url}: the server did not say how long the file is (Content-Range)")
            safetensors_file.entries_from_header(header, data_start, name, rf(name).size, rf(name).url)
            stored[name] = {"size": rf(name).size, "data_start": data_start, "header": header}
    except FileNotFoundError as exc:
        raise PipelineError(f"model '{spec.name}': {exc.args[0]} not found on the Hub") from None
    except PipelineError as exc:
        raise PipelineError(f"model '{spec.name}': {exc}; use source: config, or pre-fill the cache") from None
    check_architecture(spec, out / "config.json")
    remote.write_headers(out, stored)
    # Which tensors are the embeddings: the model's own accessors on the meta-built architecture.
    config = config_file.load_config(out, spec.name)
    model = build.build_meta(config, spec.name, spec.auto_class)
    entries = remote.remote_entries(out)
    rec = reconcile.reconcile(model, entries, spec.name, base_only=build.is_base_class(type(model), config))
    input_name, output_name = inventory.embedding_names(model)
    keys = rec.key_of.get(input_name, "").split(";") + rec.key_of.get(output_name, "").split(";")
    by_key = {e.key: e for e in entries}
    wanted = [by_key[k] for k in dict.fromkeys(k for k in keys if k)]
    remote.copy_ranges(opened, wanted, out / remote.EMBEDDINGS, f"{spec.name}: embeddings")
    return {
        "revision": sha,
        "bytes_fetched": sum(f.bytes_fetched for f in opened.values()),
        "bytes_fetched_by_file": {name: f.bytes_fetched for name, f in sorted(opened.items())},
        "checkpoint_bytes": sum(info["size"] for info in stored.values()),
    }


def pickle_to_safetensors(spec: ModelSpec, folder: Path, files: list[str], out: Path) -> None:
    """Load pickle shards with torch.load(weights_only=True); write one model.safetensors, each tensor once."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name in files:
        try:
            state = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a file it cannot unpickle safely
            raise PipelineError(
                f"model '{spec.name}': {folder / name}: not loadable with weights_only=True ({first_line(exc)})"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PipelineError(f"model '{spec.name}': {folder / name}: not a state dict of tensors")
        for key, tensor in state.items():
            ident = (
                tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
                tuple(tensor.shape),
            )
            if ident in seen:
                continue  # a tied alias stored twice in the pickle: keep the first name only
            seen.add(ident)
            tensors[key] = tensor.contiguous()
    save_file(tensors, str(out / safetensors_file.SAFETENSORS_SINGLE), metadata={"format": "pt"})


def _gguf_beside_config(spec: ModelSpec, folder: Path, files: list[str]) -> list[str]:
    """The .gguf files of a folder that has its own config.json: never counted silently.

    With other weights (safetensors, or pickle with allow_pickle) those are counted and the GGUF files are
    named as not counted; with config_only the config alone is counted, said the same way. With neither,
    which to count is ambiguous: refused, saying how to pick.
    """
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if not ggufs:
        return []
    if not files and not spec.config_only:
        raise PipelineError(
            f"model '{spec.name}': {folder} holds config.json and {', '.join(ggufs)} but no safetensors, so what "
            f"to count is ambiguous; name the .gguf file itself ({folder / ggufs[0]}) to count it, or set "
            "config_only: true to count config.json alone"
        )
    counted = ", ".join(files) if files else "config.json alone (config_only)"
    log.warning("%s: %s not counted: %s is (name the .gguf file to count it)", spec.name, ", ".join(ggufs), counted)
    return ggufs


def materialise(spec: ModelSpec, out: Path, hashes: bool = True) -> dict:
    """Fill folder out with config.json and the weights of spec; return the provenance record.

    hashes=False leaves out each file's sha256 (reading every byte): `hmp count` wants its answer in seconds.
    """
    revision = None
    converted_from: list[str] = []
    not_counted: list[str] = []
    fetched: dict = {}
    if spec.source == "hub" and spec.fetch == "range":
        fetched = fetch_ranges(spec, out)
        revision = fetched["revision"]
    elif spec.source == "config":  # architecture already holds config_path's fields, overridden by its own
        (out / "config.json").write_bytes(config_json(spec.architecture))
        folder, files, fmt = None, [], ""
    elif spec.source == "path" and is_gguf(Path(spec.path)):
        # a .gguf file (the first shard of a split set) or a folder holding one: the config is its metadata
        paths = gguf_file.shards(Path(spec.path))
        config = gguf_file.config(paths)  # from every shard's metadata and tensor table
        check_architecture(spec, paths[0], config)
        gguf_file.entries(paths)  # every shard's tensor table must read before a byte is copied
        for path in paths:
            atomic.link(path, out / path.name, out)
        (out / "config.json").write_bytes(config_json(config))
    else:
        if spec.source == "path":
            folder = Path(spec.path)
            if not folder.is_dir():
                raise PipelineError(f"model '{spec.name}': path {folder} is not a folder")
        else:
            folder, revision = fetch_hub(spec)
        check_architecture(spec, folder / "config.json")
        # Everything is checked in the source folder before a byte is copied: shard names stay inside
        # it, every file is a regular file, every header keeps the format's rules.
        files, fmt = safetensors_file.weight_files(folder, allow_pickle=spec.allow_pickle)
        not_counted = _gguf_beside_config(spec, folder, files)
        if not files and not spec.config_only:
            raise PipelineError(
                f"model '{spec.name}': {folder} has config.json but no weights (*.safetensors); "
                "set config_only: true to count it from its config alone"
            )
        if fmt == "safetensors":
            safetensors_file.read_checkpoint(folder, files)
        atomic.link(folder / "config.json", out / "config.json", out)
        if fmt == "pickle":
            pickle_to_safetensors(spec, folder, files, out)
            converted_from = files
        elif files:
            index = folder / safetensors_file.SAFETENSORS_INDEX
            if index.is_file():
                atomic.link(index, out / safetensors_file.SAFETENSORS_INDEX, out)
            for name in files:
                atomic.link(folder / name, out / name, out)
    if not fetched and spec.source != "config":
        weights = [p for p in out.iterdir() if p.suffix in (".safetensors", ".gguf")]
        size = sum(p.stat().st_size for p in weights)
        fetched = {"checkpoint_bytes": size, "bytes_fetched": size if spec.source == "hub" else None}
    return {
        "model": spec.name,
        "source": spec.source,
        "fetch": spec.fetch if spec.source == "hub" else None,
        "checkpoint_bytes": fetched.get("checkpoint_bytes"),
        "bytes_fetched": fetched.get("bytes_fetched"),
        "bytes_fetched_by_file": fetched.get("bytes_fetched_by_file"),
        "hub_id": spec.hub_id,
        "revision_requested": spec.revision if spec.source == "hub" else None,
        "revision": revision,
        "path": str(spec.path) if spec.source == "path" else None,
        "converted_from_pickle": converted_from,
        **({"not_counted": not_counted} if not_counted else {}),
        "files": [
            {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p) if hashes else None}
            for p in sorted(out.iterdir())
            if p.is_file()
        ],
    }
