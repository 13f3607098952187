"""Sizes and bounds: a stated size (117M) as an integer, and the bounds every size field of a config must keep, at
any depth, before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pipeline.core.errors import PipelineError

# Architecture fields that count layers, and the most a model may have (the deepest published
# transformers have about 130; a cap keeps a typo such as 10**12 from building modules until memory runs out).
LAYER_FIELDS = ("n_layer", "num_hidden_layers", "num_layers", "n_layers")


MAX_LAYERS = 1024


# Other architecture fields that are sizes: whole numbers in [1, MAX_SIZE].
SIZE_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_ctx",
    "n_embd",
    "n_head",
    "n_inner",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "ffn_dim",
    "head_dim",
)


MAX_SIZE = 10**9


# Every other whole number of a config, at any depth (text_config, vision_config, an encoder's fields, a
# list such as Swin's depths), is bounded too, by what its name says it counts, so that no field (BART's
# decoder_layers, a composite's text_config.num_hidden_layers) can make transformers build modules until
# memory runs out. Words of a field name (split at "_") that make it a count of stacked modules:
DEPTH_WORDS = frozenset({"layers", "blocks", "depth", "depths", "stages", "loops", "cycles", "repeats"})


EXPERT_WORDS = frozenset({"experts"})  # routed experts: Switch Transformers has 2,048 per layer


MAX_EXPERTS = 1 << 16


# ...and words that make it an identifier or a constant, not a size (token ids, indices, rope_theta, seeds).
NOT_SIZE_WORDS = frozenset({"id", "ids", "idx", "index", "theta", "seed", "base", "label2id", "id2label"})


# (width, heads) pairs: the width must be divisible by the number of heads (unless head_dim is explicit).
WIDTH_HEADS = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"))


# Fields that give the per-head width explicitly (GLM-4.5: hidden_size 5120, 96 heads of head_dim 128).
HEAD_DIM_FIELDS = ("head_dim", "attention_head_dim", "attention_head_size", "d_kv", "kv_channels", "qk_head_dim")


# (query heads, key/value heads): grouped-query attention shares each KV head among a whole number of heads.
HEADS_KV = (("num_attention_heads", "num_key_value_heads"), ("n_head", "n_head_kv"))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def rounds_to(count: int, stated: str) -> bool:
    """Does count, rounded as stated is written (46.7B: to 0.1 B), give stated? The check for a card's figure."""
    m = _SIZE_RE.match(str(stated))
    if not m:
        return False
    number, unit = m.groups()
    decimals = len(number.partition(".")[2])
    step = _UNITS[unit.upper()] // 10**decimals if _UNITS[unit.upper()] >= 10**decimals else 1
    return (2 * count + step) // (2 * step) * step == parse_size(stated, "")  # round half up, in integers


def parse_size(text: Any, model: str) -> int:
    """Parse a stated size such as 117M, 1.5B or 1542M into an integer count of parameters."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise PipelineError(f"stated_size={text!r} is not a size like 117M or 1.5B", model=model)
    number, unit = m.groups()
    whole, _, frac = number.partition(".")
    scale = _UNITS[unit.upper()]
    return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)


def _bound(key: str, top_level: bool) -> tuple[int, int] | None:
    """The [low, high] a config field's whole-number values must keep, from its name; None: not a size."""
    if key in LAYER_FIELDS and top_level:
        return 1, MAX_LAYERS
    if key == "head_dim":
        return 0, MAX_SIZE  # 0: derived from the width (GLM-5's default)
    if key in SIZE_FIELDS:
        return 1, MAX_SIZE
    words = set(key.lower().split("_"))
    if words & NOT_SIZE_WORDS:
        return None
    if words & EXPERT_WORDS:
        return 0, MAX_EXPERTS
    if words & DEPTH_WORDS or key in LAYER_FIELDS:
        return 0, MAX_LAYERS
    return -MAX_SIZE, MAX_SIZE  # negative values build nothing (-1 often means "unset")


MAX_CONFIG_DEPTH = 8  # sub-configs nest two or three deep (a composite's text_config.rope_scaling); more is not one


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integral(value: Any) -> bool:
    """A whole number, or a float holding one (transformers' own MusicFlamingo default has 1200.0 positions)."""
    return _whole_number(value) or isinstance(value, float) and value.is_integer()


def _fits(key: str, value: Any) -> bool:
    """A named size field's value has the right type: a whole number (a layer count may not be 12.0)."""
    return _whole_number(value) if key in LAYER_FIELDS else _integral(value)


def _config_path(path: str) -> bool:
    """The config itself or a sub-config transformers reads as one (text_config, vision_config.encoder_config): a
    size there that holds no number breaks the build; anywhere else in a file (Cohere's transf_decoder.config_dict)
    it is data transformers leaves alone."""
    return all(part.endswith("_config") for part in path.split(".") if part)


def _size_problems(
    node: dict[str, Any], path: str, top_level: bool, depth: int = 0, typed: bool = True
) -> Iterator[str]:
    """Each field of a config tree whose whole number is out of its bound, as 'path=value must be ...'."""
    if depth > MAX_CONFIG_DEPTH:
        yield f"{path} nests sub-configs more than {MAX_CONFIG_DEPTH} deep"
        return
    for key, value in node.items():
        key = str(key)
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield from _size_problems(value, where, False, depth + 1, typed)
            continue
        bound = _bound(key, top_level)
        if bound is None:
            continue
        low, high = bound
        named = key in LAYER_FIELDS or key in SIZE_FIELDS
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):  # per-block configs (DeciLM's block_configs)
                yield from _size_problems(item, where, False, depth + 1, typed)
            elif (
                (_integral(item) if named else _whole_number(item))
                and not low <= item <= high
                or (named and (typed or _config_path(path)) and not _fits(key, item))
            ):
                if named and item is None:
                    continue  # unset: the config class's default applies (GPT-2's n_inner: null)
                shown = value if len(repr(value)) <= 80 else item
                span = f"from {low:,} to {high:,}" if low > -MAX_SIZE else f"of at most {high:,}"
                yield f"{where}={shown!r} must be a whole number {span}"
                break


def check_sizes(name: str, arch: dict[str, Any], where: str = "architecture.", typed: bool = True) -> None:
    """Sizes are whole numbers in range (every field of every sub-config, by what its name counts), widths
    split evenly into heads, heads evenly into KV heads (at the top level and in each sub-config).

    typed: the values were typed by a person, so a size field that holds no number is refused wherever it is; in a
    downloaded file's (typed=False) only where transformers reads it as a size (the config and its *_config
    sub-configs): Cohere's ASR config carries a vocab_size of 'None' in a dict transformers never builds from."""
    for problem in _size_problems(arch, "", True, typed=typed):
        raise PipelineError(f"{where}{problem}", model=name)
    again = where if where.endswith(".") else ""  # a file's path (`config.json: `) is said once per line
    for path, node in _sub_configs(arch, ""):
        prefix = f"{path}." if path else ""
        heads_only = any(_whole_number(node.get(f)) and node.get(f) for f in HEAD_DIM_FIELDS)
        for width, heads in WIDTH_HEADS:
            w, h = node.get(width), node.get(heads)
            if _whole_number(w) and _whole_number(h) and w > 0 and h > 0 and not heads_only and w % h:
                raise PipelineError(
                    f"{where}{prefix}{width}={w} is not divisible by {again}{prefix}{heads}={h}", model=name
                )
        for heads, kv in HEADS_KV:
            q, k = node.get(heads), node.get(kv)
            if _whole_number(q) and _whole_number(k) and k > 0 and q % k:
                raise PipelineError(
                    f"{where}{prefix}{heads}={q} is not a multiple of {again}{prefix}{kv}={k} "
                    "(each key/value head serves a whole number of query heads)",
                    model=name,
                )


def _sub_configs(node: dict[str, Any], path: str, depth: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """The config itself and every sub-config in it (text_config, vision_config, ...), with their key paths."""
    yield path, node
    if depth >= MAX_CONFIG_DEPTH:
        return
    for key, value in node.items():
        if isinstance(value, dict) and key not in ("label2id", "id2label"):
            yield from _sub_configs(value, f"{path}.{key}" if path else str(key), depth + 1)
