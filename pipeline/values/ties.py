"""Value evidence of a tie: Pearson r and max |difference| of the input and output embedding matrices, streamed
from the checkpoint when it stores both, else the course's check on the model (or on its embedding alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import formats
from pipeline.core.errors import PipelineError
from pipeline.formats import remote, safetensors_file
from pipeline.model import build, config_file, tying
from pipeline.values import correlate, moments
from pipeline.values.reader import Reader, readable


def value_evidence(
    model_dir: Path,
    inv: pd.DataFrame,
    name: str,
    chunk_elements: int,
    auto_class: str = "auto",
    loaded: formats.Loaded | None = None,
    built: Any = None,
) -> dict | None:
    """stored_separately, pearson_r, max_abs_diff and method for a model with weights; None without.

    loaded: the folder's weight files as the count read them (else read here); built: the count's
    model.count.Built (its class and meta model, which the embedding-only check fills in), else built here.
    """
    loaded = formats.load(model_dir, name) if loaded is None else loaded
    regrouped, fmt = loaded.regrouped, loaded.fmt
    entries = regrouped.entries
    if not entries:
        return None
    in_key, out_key = tying.stored_keys(inv)
    if not inv["is_input_embedding"].any():  # a vision or audio encoder reads pixels or audio, not tokens
        return {"stored_separately": False, "method": "no token embedding in this architecture"}
    if not in_key:
        raise PipelineError("the input embedding is not in the checkpoint", model=name)
    if fmt == "remote":  # only the embedding matrices were fetched, into one local file
        entries = safetensors_file.read_entries(model_dir / remote.EMBEDDINGS)
    by_key = {e.key: e for e in entries}
    unreadable = [by_key[k] for k in (in_key, out_key) if k and not readable(by_key[k], regrouped.scales)]
    if unreadable:
        return {
            "stored_separately": bool(out_key),
            "method": f"no value evidence: {unreadable[0].key} is stored as {unreadable[0].dtype}, not floats",
        }
    if out_key:
        reader = Reader(model_dir, entries + regrouped.metadata, chunk_elements, regrouped.scales)
        acc = correlate.correlate_stored(reader, in_key, out_key)
        method = tying.STREAMED + (" (fetched by HTTP range reads)" if fmt == "remote" else "")
    elif not (inv["is_output_embedding"]).any():
        return {"stored_separately": False, "method": "no output embedding in this architecture"}
    elif fmt == "remote":
        acc = tie_check_from_embedding(model_dir, entries, in_key, chunk_elements, auto_class, built)
        method = tying.RANGE_TIED
    elif fmt == "gguf":  # from_pretrained loads no GGUF from a model folder: the embedding alone, the same check
        acc = tie_check_from_embedding(model_dir, entries, in_key, chunk_elements, auto_class, built)
        method = tying.GGUF_TIED
    elif fmt != "safetensors":  # a format transformers does not load: the embedding alone, the same check
        acc = tie_check_from_embedding(model_dir, entries, in_key, chunk_elements, auto_class, built)
        method = tying.OTHER_FORMAT_TIED.format(fmt=fmt)
    elif regrouped.method or sum(e.end - e.begin for e in entries) > _physical_memory() // 4:
        # quantized (loading it whole needs its quantizer's kernels), or too big to load whole:
        # the same check with only the embedding matrix materialised
        acc = tie_check_from_embedding(model_dir, entries, in_key, chunk_elements, auto_class, built)
        method = tying.EMBEDDING_ONLY
    else:
        acc = course_check(model_dir, chunk_elements, auto_class, built)
        method = tying.COURSE
    return {
        "stored_separately": bool(out_key),
        "pearson_r": acc.pearson_r,
        "max_abs_diff": acc.max_abs_diff,
        "method": method,
        "sample": acc.sample(),
    }


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tie_check_from_embedding(
    model_dir: Path, entries: list, in_key: str, chunk_elements: int, auto_class: str, built: Any = None
) -> moments.CoMoments:
    """The course's check without the whole model: the stored embedding goes into the meta-built model (the
    count's own, when given: it is changed), transformers re-ties the head (tie_weights), and the two accessors'
    weights are correlated."""
    import torch

    if built is not None:
        model = built.model
    else:
        config = config_file.load_config(model_dir, str(model_dir.name))
        model = build.build_meta(config, str(model_dir.name), auto_class)
    reader = Reader(model_dir, entries, chunk_elements)
    weight = reader.tensor(in_key)  # the embedding alone, in its stored dtype (float32 when dequantized)
    model.get_input_embeddings().weight = torch.nn.Parameter(weight, requires_grad=False)
    model.tie_weights()
    out = model.get_output_embeddings().weight
    if out.is_meta:
        raise PipelineError(f"{model_dir.name}: tie_weights() did not tie the head to the fetched embedding")
    return correlate.correlate_tensors(model.get_input_embeddings().weight, out, chunk_elements)


def course_check(
    model_dir: Path, chunk_elements: int, auto_class: str = "auto", built: Any = None
) -> moments.CoMoments:
    """Load the model with transformers (local files only, no remote code) and correlate its two embeddings."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the Hub's GPT-2 files carry attn.bias masks transformers skips by design
    if built is not None:
        cls = built.cls
    else:
        cls, _ = build.model_class(config_file.load_config(model_dir, model_dir.name), model_dir.name, auto_class)
    model = cls.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    return correlate.correlate_tensors(
        model.get_input_embeddings().weight, model.get_output_embeddings().weight, chunk_elements
    )
