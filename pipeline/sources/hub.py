"""The Hugging Face Hub as a source: whole files through snapshot_download into the normal cache (offline: the cache
alone), or only the headers and the embeddings' byte ranges (fetch: range); an unreachable Hub is one line
within seconds, saying which case it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.core.errors import UNAVAILABLE, PipelineError, first_line
from pipeline.core.params import ModelSpec
from pipeline.formats import safetensors_file
from pipeline.model import reconcile
from pipeline.sources.checks import check_architecture

log = logging.getLogger("download")

SAFETENSORS_PATTERNS = ["config.json", "*.safetensors", safetensors_file.SAFETENSORS_INDEX]
PICKLE_PATTERNS = ["*.bin", safetensors_file.PICKLE_INDEX]
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
                f"{offline} and {where} is not in the cache {cache}; {fix}",
                model=spec.name,
                kind=UNAVAILABLE,
                advice="config_source",
            ) from None
        cause = f" ({first_line(exc.__cause__)})" if exc.__cause__ else ""  # it answered the probe, then failed
        raise PipelineError(
            f"the Hub at {constants.ENDPOINT} did not serve {where}{cause} and it is not in "
            f"the cache {cache}; try again, or pre-fill the cache and set HF_HUB_OFFLINE=1",
            model=spec.name,
            kind=UNAVAILABLE,
            advice="config_source",
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise PipelineError(
            f"hub_id {spec.hub_id} is not a repository the Hub serves "
            "(or it is private or gated: set HF_TOKEN to a token that may read it)",
            model=spec.name,
        ) from None
    except RevisionNotFoundError:
        raise PipelineError(f"revision {revision} not found in {spec.hub_id}", model=spec.name) from None
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"cannot fetch {where} ({first_line(exc)}); pre-fill the cache",
            model=spec.name,
            kind=UNAVAILABLE,
            advice="config_source",
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
            f"{offline} and fetch: range reads {spec.hub_id} from the Hub; use fetch: download "
            f"with a pre-filled cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE=1, or source: config",
            model=spec.name,
        )
    try:
        sha = remote.resolve_revision(spec.hub_id, spec.revision or "main")
    except PipelineError as exc:
        raise PipelineError(
            f"{exc.message}; pre-fill the cache", model=spec.name, kind=exc.kind, advice="config_source"
        ) from None
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
        raise PipelineError(f"{exc.args[0]} not found on the Hub", model=spec.name) from None
    except PipelineError as exc:
        raise PipelineError(
            f"{exc.message}; pre-fill the cache", model=spec.name, kind=exc.kind, advice="config_source"
        ) from None
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
