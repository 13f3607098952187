"""GGUF files (llama.cpp): tensors and architecture from the files' own metadata, read by
pipeline/formats/gguf_header.py.

A GGUF file holds its config as key-value metadata and every tensor's name, logical shape (in
ggml's order, fastest dimension first), quantization type and byte offset, then the data. A model
may be split into `name-00001-of-0000N.gguf` shards: counting from the first alone gives a fraction
of the model, so naming the first finds and checks every shard, and a missing one is an error. A
split set is read as one model: the metadata and the tensor tables of every shard, before the
architecture and the tie are decided (llama.cpp's splitter keeps the metadata in the first shard, but
the untied head may well be in the last).

The config is what transformers' load_gguf_checkpoint makes of the metadata, reproduced on the
metadata our bounded reader returns (transformers' own reader parses every token string of the
vocabulary, and reads the first shard only): its GGUF tables (GGUF_TO_TRANSFORMERS_MAPPING,
GGUF_CONFIG_DEFAULTS_MAPPING) and its per-architecture fix-ups. tests/formats/test_gguf_file.py checks the result
equals load_gguf_checkpoint's on several architectures. GGUF names map onto the model's parameter names
through transformers' own map (get_gguf_hf_weights_map, built on gguf's tensor-name tables). Counting
reads headers only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError, first_line
from pipeline.formats import gguf_header
from pipeline.formats.base import Format, RangeReader
from pipeline.formats.entries import Entry, plain_name, regular_file
from pipeline.formats.gguf_header import SKIPPED, Field

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_SHARDS = 512  # llama.cpp's splits of 400B-parameter models have tens of shards; 99,999 is a typo or a trap


def shards(path: Path) -> list[Path]:
    """Every file of a GGUF model, given its file (the first shard of a split set) or a folder holding it."""
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf"))
        firsts = [p for p in found if not SPLIT_RE.match(p.name) or SPLIT_RE.match(p.name)["no"] == "00001"]
        if len(firsts) != 1:
            if not firsts and found:
                what = f"shards of a split set ({found[0].name}, ...) but not its first (-00001-of-)"
            else:
                what = (
                    "no .gguf file"
                    if not firsts
                    else f"{len(firsts)} GGUF models ({', '.join(p.name for p in firsts)})"
                )
            raise PipelineError(f"{path}: holds {what}; name the file")
        path = firsts[0]
    regular_file(path)
    m = SPLIT_RE.match(path.name)
    if not m:
        return [path]
    no, count = int(m["no"]), int(m["count"])
    if not 1 <= count <= MAX_SHARDS:
        raise PipelineError(
            f"{path}: its name says a split set of {count:,} shards; a split GGUF has 1 to {MAX_SHARDS} (-of-0000N)"
        )
    if not 1 <= no <= count:
        raise PipelineError(f"{path}: its name says shard {no} of {count}, which a set of {count} does not have")
    if no != 1:
        raise PipelineError(f"{path}: shard {no} of {count}; name the first shard (-00001-of-)")
    names = [plain_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf", path) for i in range(1, count + 1)]
    out = []
    for i, name in enumerate(names):
        shard = path.parent / name
        if not (shard.exists() or shard.is_symlink()):
            raise PipelineError(f"{path}: shard {i + 1} of {count}, {name}, is missing from {path.parent}")
        out.append(regular_file(shard))
    return out


def _split_numbers(path: Path, fields: dict[str, Field]) -> tuple[Any, Any]:
    return tuple(fields[k].value if k in fields else None for k in ("split.no", "split.count"))


def headers(paths: list[Path]) -> list[gguf_header.Header]:
    """The header of every shard, each checked against its place in the set."""
    out = [gguf_header.read(p) for p in paths]
    count = len(paths)
    if count == 1 and _split_numbers(paths[0], out[0].fields)[1] not in (None, 1):  # a shard renamed as a model
        no, said = _split_numbers(paths[0], out[0].fields)
        which = f"shard {no + 1}" if isinstance(no, int) else "a shard"  # split.no counts from 0
        raise PipelineError(
            f"{paths[0]}: its metadata says it is {which} of a {said!r}-shard split set; name its first shard as "
            "the set names it (-00001-of-)"
        )
    if count > 1:
        total = sum(len(h.tensors) for h in out)
        for i, (path, h) in enumerate(zip(paths, out, strict=True)):
            no, said = _split_numbers(path, h.fields)
            if no != i or said != count:
                raise PipelineError(f"{path}: its metadata says shard {no} of {said}, its name shard {i} of {count}")
            listed = h.fields.get("split.tensors.count")
            if listed is not None and listed.value != total:
                raise PipelineError(
                    f"{path}: split.tensors.count says {listed.value!r} tensors; its {count} shards hold {total:,}"
                )
    return out


def entries(paths: list[Path]) -> list[Entry]:
    """Every tensor of a (split) GGUF model: GGUF name, logical shape in PyTorch's order, ggml type, bytes."""
    out: list[Entry] = []
    seen: dict[str, str] = {}
    for path, h in zip(paths, headers(paths), strict=True):
        for t in h.tensors:
            if t.name in seen:
                raise PipelineError(f"{path}: tensor {t.name!r} is also in {seen[t.name]}")
            seen[t.name] = path.name
            out.append(Entry(t.name, t.type_name, tuple(reversed(t.dims)), path.name, t.begin, t.end))
    return out


def metadata(paths: list[Path]) -> dict[str, Field]:
    """The metadata of a whole (split) model: every shard's pairs, in file order; a pair two shards disagree on
    is an error (split.no excepted: it is each shard's own number)."""
    merged: dict[str, Field] = {}
    origin: dict[str, Path] = {}
    for path, h in zip(paths, headers(paths), strict=True):
        for key, field in h.fields.items():
            if key == "split.no":
                continue
            if key in merged and merged[key] != field:
                raise PipelineError(
                    f"{path}: metadata {key!r} is {_shown(field)}, but {_shown(merged[key])} in {origin[key].name}"
                )
            merged.setdefault(key, field)
            origin.setdefault(key, path)
    return merged


def _shown(field: Field) -> str:
    return f"{field.count:,} skipped items" if field.value is SKIPPED else repr(field.value)[:80]


def architecture(paths: list[Path]) -> str:
    """general.architecture: the GGUF name of the model's family (picks transformers' tensor processor)."""
    arch = metadata(paths).get("general.architecture")
    return _as_text(arch.value, "general.architecture", paths[0]) if arch and arch.type == gguf_header.STRING else ""


# --- the config, as transformers' load_gguf_checkpoint makes it -----------------------------------------


def _as_text(raw: bytes, key: str, where: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{where}: no architecture transformers can read (metadata {key!r} is not UTF-8)") from None


def _items(field: Field, key: str, where: Path) -> list[Any]:
    """What transformers' read_field gives: one parsed value per data item (a scalar or string is one item)."""
    if field.value is SKIPPED:
        raise PipelineError(
            f"{where}: no architecture transformers can read (metadata {key!r}: a config value of "
            f"{field.count:,} items or bytes, longer than the {gguf_header.DECODE_ARRAY:,} items or "
            f"{gguf_header.DECODE_STRING:,} bytes a config value is read with)"
        )
    items = list(field.value) if field.type == gguf_header.ARRAY else [field.value]
    return [_as_text(v, key, where) if isinstance(v, bytes) else v for v in items]


def _value(field: Field, key: str, where: Path) -> Any:
    """transformers' value of a pair: its items, or the item itself when there is one (a 1-item array too)."""
    items = _items(field, key, where)
    return items[0] if len(items) == 1 else items


def config(paths: list[Path]) -> dict[str, Any]:
    """The model's config.json fields: what load_gguf_checkpoint(return_tensors=False)["config"] gives, read from
    every shard (its tie from all shards' tensors, where transformers looks at the first file's only)."""
    try:
        cfg = _transformers_config(metadata(paths), [t.name for h in headers(paths) for t in h.tensors], paths[0])
    except PipelineError:
        raise
    except Exception as exc:  # transformers' fix-ups on values of unexpected types (max() of a number, ...)
        why = f"{type(exc).__name__}: {first_line(exc)}"
        raise PipelineError(f"{paths[0]}: no architecture transformers can read ({why})") from None
    return json.loads(json.dumps(cfg))  # plain JSON values (tuples to lists), so config.json is stable


def _transformers_config(meta: dict[str, Field], tensor_names: list[str], where: Path) -> dict[str, Any]:
    """transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint's config, step for step, on our metadata.

    Each step below is one of that function's (transformers 5.x), in its order and with its quirks (a
    1-item array is its item; "mistral" must be one of general.name's items), so the result is the same;
    tests/formats/test_gguf_file.py holds them equal. Only the values the config uses are decoded.
    """
    from transformers.integrations import GGUF_CONFIG_DEFAULTS_MAPPING
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    def read_field(key: str) -> list[Any]:
        return _items(meta[key], key, where) if key in meta else []

    found = read_field("general.architecture")
    if not found or not isinstance(found[0], str):
        raise PipelineError(f"{where}: its metadata names no architecture (general.architecture)")
    architecture = found[0]
    model_name = read_field("general.name")
    config: dict[str, Any] = {}

    updated_architecture = _renamed(architecture, model_name, config)

    if "stablelm" in architecture:  # its biases and parallel residual are read off the tensor names
        bias_names = {"attn_q.bias", "attn_k.bias", "attn_v.bias"}
        config["use_qkv_bias"] = any(b in name for name in tensor_names for b in bias_names)
        config["use_parallel_residual"] = not any("ffn_norm" in name for name in tensor_names)

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES and updated_architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise PipelineError(
            f"{where}: no architecture transformers can read (GGUF model with architecture {architecture} "
            "is not supported yet)"
        )

    # untied when an output.weight is stored, in any shard (falcon and bloom are tied regardless)
    config["tie_word_embeddings"] = "output.weight" not in tensor_names or architecture in ("falcon", "bloom")

    defaults = GGUF_CONFIG_DEFAULTS_MAPPING.get(
        updated_architecture, GGUF_CONFIG_DEFAULTS_MAPPING.get(architecture) or {}
    )
    for key, value in defaults.items():
        config.setdefault(key, value)

    tokens = _table_values(meta, architecture, updated_architecture, config, where)
    _family_fixes(meta, updated_architecture, config, where)

    if "vocab_size" not in config and tokens is not None:  # transformers: len(tokenizer.ggml.tokens)
        # a 1-item list is its item in transformers, so then the length is that string's
        config["vocab_size"] = (
            len(_value(tokens, "tokenizer.ggml.tokens", where)) if tokens.count == 1 else tokens.count
        )
    return config


def _renamed(architecture: str, model_name: list[Any], config: dict[str, Any]) -> str:
    """The model type transformers reads a GGUF architecture as (and the T5 flags it sets on the way)."""
    if "llama" in architecture and "mistral" in model_name:  # llama.cpp files Mistral under llama
        updated_architecture = "mistral"
    elif "t5" in architecture or "t5encoder" in architecture:
        config["is_gated_act"] = True
        if model_name and "umt5" in str(model_name[0]).lower():
            updated_architecture = "umt5"
            if "t5encoder" in architecture:
                config["architectures"] = ["UMT5EncoderModel"]
        else:
            if "t5encoder" in architecture:
                config["architectures"] = ["T5EncoderModel"]
            updated_architecture = "t5"
    else:
        updated_architecture = architecture
    if "qwen2moe" in architecture:
        updated_architecture = "qwen2_moe"
    elif "gpt_oss" in architecture or "gpt-oss" in architecture:
        updated_architecture = "gpt_oss"
    elif "qwen3moe" in architecture:
        updated_architecture = "qwen3_moe"
    elif "minimax-m2" in architecture:
        updated_architecture = "minimax_m2"

    return updated_architecture


def _table_values(
    meta: dict[str, Field], architecture: str, updated_architecture: str, config: dict[str, Any], where: Path
) -> Field | None:
    """Every metadata value transformers' table maps to a config field, into config; the token list's field."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    tables = GGUF_TO_TRANSFORMERS_MAPPING["config"]
    tokenizer_table = GGUF_TO_TRANSFORMERS_MAPPING["tokenizer"]
    tokens: Field | None = None
    for gguf_key, field in meta.items():
        renamed = gguf_key.replace(architecture, updated_architecture)
        prefix, _, config_key = renamed.partition(".")
        if tokenizer_table.get(prefix, {}).get(config_key) == "tokens":
            tokens = field  # for vocab_size below: its length is all that is needed
        target = tables.get(prefix, {}).get(config_key)
        if target is None or target == -1:
            continue  # not a config value: never decoded
        value = _value(field, gguf_key, where)
        if isinstance(value, str) and architecture in value:
            value = value.replace(architecture, updated_architecture)
        config[target] = value

    return tokens


def _family_fixes(meta: dict[str, Field], updated_architecture: str, config: dict[str, Any], where: Path) -> None:
    """transformers' fix-ups of the config of some families, in its order."""
    if config["model_type"] == "gemma3":  # the GGUF holds the text backbone only
        config["model_type"] = "gemma3_text"
    if config["model_type"] == "gemma4":
        config["model_type"] = "gemma4_text"
        config["eos_token_id"] = [1, 106, 50]  # transformers: Gemma 4's three end-of-generation tokens
    if config.get("model_type") == "minimax_m2":
        scoring = config.get("scoring_func")
        if isinstance(scoring, int):
            config["scoring_func"] = {0: "none", 1: "softmax", 2: "sigmoid"}.get(scoring, "softmax")
    if config["model_type"] == "lfm2":
        kv_heads = config["num_key_value_heads"]  # one per layer; 0 for a convolution layer
        config["num_key_value_heads"] = max(kv_heads)
        config["block_auto_adjust_ff_dim"] = False
        config["full_attn_idxs"] = [i for i, n in enumerate(kv_heads) if n > 0]
    if updated_architecture == "gpt_oss" and "gpt-oss.rope.scaling.type" in meta:
        config["rope_scaling"] = _gpt_oss_rope(meta, where)


def _gpt_oss_rope(meta: dict[str, Field], where: Path) -> dict[str, Any]:
    """gpt-oss's rope scaling, as its GGUF metadata says it."""
    # transformers reads these through `field.parts[0]`, which in gguf's reader is the key's length, not
    # the value (so it gives rope_type 25); the values themselves are what it means to read
    rope = {"rope_type": _value(meta["gpt-oss.rope.scaling.type"], "gpt-oss.rope.scaling.type", where)}
    for key, field in meta.items():
        suffix = key.removeprefix("gpt-oss.rope.scaling.")
        if suffix == key or suffix == "type":
            continue
        value = _value(field, key, where)
        if suffix in ("factor", "attention_factor", "beta_fast", "beta_slow"):
            value = float(value)
        elif suffix in ("original_context_length", "original_max_position_embeddings"):
            suffix, value = "original_max_position_embeddings", int(value)
        rope[suffix] = value
    return rope


# --- the format's interface (pipeline/formats/base.py) ------------------------------------------------------
FIRST_READ = 256 << 10  # a census reads a GGUF header in growing steps from here (a tokenizer makes it MBs)
MAX_HEADER = 128 << 20


def models(names: list[str]) -> list[str]:
    """The GGUF models among a folder's or repository's file names: single files and first shards of split sets."""
    out = []
    for name in names:
        if not name.endswith(".gguf"):
            continue
        m = SPLIT_RE.match(Path(name).name)
        if not m or m["no"] == "00001":
            out.append(name)
    return out


def split_names(name: str) -> list[str]:
    """Every file name of the model whose (first) file is name: itself, or the shards its split name says."""
    m = SPLIT_RE.match(Path(name).name)
    if not m:
        return [name]
    count = int(m["count"])
    if m["no"] != "00001" or not 1 <= count <= MAX_SHARDS:
        raise PipelineError(f"{name}: list the first shard of a split set (-00001-of-)")
    stem = str(Path(name).parent / m["stem"]) if "/" in name else m["stem"]
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


class GGUF(Format):
    """llama.cpp's files: the config in their metadata, llama.cpp's tensor names, ggml's block types."""

    name = "gguf"
    suffixes = (".gguf",)
    carries_config = True
    name_scheme = "gguf"
    packed_types = True

    def files(self, names: list[str], folder: Path | None = None) -> list[str]:
        if not any(n.endswith(".gguf") for n in names):
            return []
        if folder is not None:
            return [p.name for p in shards(folder)]
        found = models(names)
        if not found:
            return []
        if len(found) != 1:
            what = f"{len(found)} GGUF models ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
            raise PipelineError(f"{what}: list one as owner/name/FILE.gguf")
        return split_names(found[0])

    def shard_set(self, path: Path) -> list[Path]:
        return shards(path)

    def entries(self, folder: Path, files: list[str]) -> list[Entry]:
        return entries([folder / f for f in files])

    def config(self, paths: list[Path]) -> dict:
        return config(paths)

    def architecture(self, paths: list[Path]) -> str:
        return architecture(paths)

    def header_prefix(self, rf: RangeReader, where: str) -> bytes:
        """The first bytes of a GGUF file up to the start of its data: read in growing steps until it parses."""
        if rf.size is None:
            rf.read(0, 8)  # the answer says the file's size
        size = rf.size
        take = min(FIRST_READ, size)
        while True:
            data = rf.read(0, take)
            header = gguf_header.parse_prefix(data, size, where)
            if header is not None:
                return data[: header.data_start]
            if take >= MAX_HEADER or take >= size:
                raise PipelineError(f"{where}: no GGUF header ends in its first {take:,} bytes")
            take = min(take * 4, size, MAX_HEADER)


FORMAT = GGUF()
