"""The structure a model's own classes give it: towers, block lists and the embeddings each tower reads.

- Towers: the sub-models of a composite model, each built for one of its config's sub-configs
  (text_config: `text`, vision_config: `vision`, audio_config: `audio`, any other: its key without
  `_config`), found by the `.config` each sub-model holds; the encoder and decoder of an encoder-decoder,
  from `get_encoder()` and `get_decoder()`. A parameter lies in the innermost tower that holds it. Outside
  every tower: a composite model's output head goes with the tower whose token embedding it unembeds,
  the rest is the `projector`; an encoder-decoder's head goes with the `decoder` and the rest (T5's
  shared embedding) is `shared`. A model with neither is one tower, named by the input its class reads
  (`main_input_name`: token ids `text`, pixels `vision`, audio `audio`). A tensor held in two towers is
  `shared`.
- Block lists: every outermost ModuleList whose items are modules with modules of their own (GPT-2's
  `transformer.h`, T5's `encoder.block` and `decoder.block`, a vision tower's `encoder.layers`), so a
  hybrid's mixed attention and state-space layers are one list. A parameter's layer is its index in
  the list that holds it.
"""

from __future__ import annotations

import functools
import re
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TOWERS = ("text", "vision", "audio", "projector", "encoder", "decoder", "shared")
# Module classes of attention, and of state-space and linear-recurrent sequence mixers (Mamba, Mamba-2,
# gated DeltaNet, RWKV, Griffin's RG-LRU, LFM2's short convolutions, MiniMax's lightning attention), matched on a
# class's name without its model family's prefix (own_name): a family's name says nothing of its modules.
ATTENTION_CLASS = re.compile(r"Attention|Attn", re.IGNORECASE)
MIXER_CLASS = re.compile(
    r"Mamba|Mixer|SSM|DeltaNet|DeltaAttention|LinearAttention|Lightning|Recurrent|Rglru|ShortConv|Rwkv\w*Attention|"
    r"xLSTM|mLSTM|sLSTM|Hyena",
    re.IGNORECASE,
)
# A whole layer (a block nested in another: Zamba2's hybrid layer holds an attention decoder layer) is no
# attention module of its own, whatever its name says.
LAYER_CLASS = re.compile(r"(Layer|Block)$")
CROSS_CLASS = re.compile(r"Cross|EncDec", re.IGNORECASE)


def tower_name(key: str) -> str:
    """The tower a sub-config key names: text_config -> text, vision_config -> vision, audio_config -> audio."""
    key = key.removesuffix("_config")
    for word, tower in (("text", "text"), ("vision", "vision"), ("visual", "vision"), ("image", "vision")):
        if word in key:
            return tower
    for word in ("audio", "speech", "sound"):
        if word in key:
            return "audio"
    return key


def modality(module: Any) -> str:
    """The tower a model class is, by the input it reads (main_input_name)."""
    name = str(getattr(module, "main_input_name", "input_ids"))
    if any(w in name for w in ("pixel", "image", "video")):
        return "vision"
    if any(w in name for w in ("input_values", "input_features", "audio", "spectrogram", "speech")):
        return "audio"
    return "text"


@dataclass
class Layout:
    """Towers and block lists of one model; paths are module paths ('' the root)."""

    towers: dict[str, str]  # tower root path -> tower name
    block_lists: list[str]
    composite: bool
    encoder_decoder: bool
    default: str  # the tower of a parameter outside every tower root
    cross: set[str] = field(default_factory=set)  # attention modules that attend to another stack

    def tower_root(self, path: str) -> str | None:
        best = None
        for root in self.towers:
            if (path + ".").startswith(root + ".") and (best is None or len(root) > len(best)):
                best = root
        return best

    def tower_of(self, path: str) -> str:
        root = self.tower_root(path)
        return self.towers[root] if root is not None else self.default

    def block_of(self, path: str) -> tuple[str, int] | tuple[None, None]:
        """(block list path, index) of the block a module or parameter path lies in; (None, None) outside."""
        for blocks in self.block_lists:
            if (path + ".").startswith(blocks + "."):
                index = path[len(blocks) + 1 :].split(".", 1)[0]
                if index.isdigit():
                    return blocks, int(index)
        return None, None


def _has_children(module: torch.nn.Module) -> bool:
    return any(True for _ in module.children())


def _block_lists(modules: dict[str, Any]) -> list[str]:
    import torch

    found: list[str] = []
    for path, module in modules.items():
        if not isinstance(module, torch.nn.ModuleList) or not len(module):
            continue
        if any((path + ".").startswith(f + ".") for f in found if f) or not all(_has_children(c) for c in module):
            continue
        found.append(path)
    return found


def _sub_config_keys(config: Any) -> dict[int, str]:
    from transformers import PretrainedConfig

    keys = {}
    for key in getattr(config, "sub_configs", None) or {}:
        sub = getattr(config, key, None)
        if isinstance(sub, PretrainedConfig):
            keys[id(sub)] = key
    return keys


# What is worked out once per built model (its layout here; its cache layers and fake-tensor runners in
# pipeline.cost): a model's modules do not change after it is built (pipeline.cost.prefill's shallow copy is a model
# of its own). Weak keys: it goes with its model.
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kept(model: Any) -> dict[Any, Any]:
    """The dict of what this process keeps for model, each use under a key of its own; a fresh one each time for an
    object that cannot be weakly referenced."""
    try:
        return _KEPT.setdefault(model, {})
    except TypeError:
        return {}


def layout(model: torch.nn.Module) -> Layout:
    """The towers, block lists and cross-attention modules of model (kept per model; not to be changed)."""
    found = kept(model)
    if "layout" not in found:
        found["layout"] = _layout(model)
    return found["layout"]


def in_blocks(modules: dict[str, Any], stack: str) -> list[list[tuple[str, Any]]]:
    """The modules under each block of the block list at path stack, as (path, module) in modules' order (the block
    itself left out): one pass over modules, whatever the depth."""
    out: list[list[tuple[str, Any]]] = [[] for _ in modules[stack]]
    prefix = stack + "."
    for path, module in modules.items():
        if path.startswith(prefix):
            index, dot, _ = path[len(prefix) :].partition(".")
            if dot and index.isdigit() and int(index) < len(out):
                out[int(index)].append((path, module))
    return out


def _layout(model: torch.nn.Module) -> Layout:
    from transformers import PretrainedConfig

    modules = dict(model.named_modules())
    config = model.config
    subs = _sub_config_keys(config)
    sub_types = {}
    for key in getattr(config, "sub_configs", None) or {}:
        sub = getattr(config, key, None)
        if isinstance(sub, PretrainedConfig):
            sub_types.setdefault(type(sub), []).append(key)
    towers: dict[str, str] = {}
    for path, module in modules.items():
        own = getattr(module, "config", None)
        if not path or not isinstance(own, PretrainedConfig) or own is config:
            continue
        key = subs.get(id(own))
        if key is None and len(sub_types.get(type(own), [])) == 1:  # a sub-model given a copy of its sub-config
            key = sub_types[type(own)][0]
        if key is not None and not any((path + ".").startswith(r + ".") for r in towers):
            towers[path] = tower_name(key)
    composite = bool(towers)
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if encoder_decoder:
        paths = {id(m): p for p, m in modules.items()}
        for accessor, name in (("get_encoder", "encoder"), ("get_decoder", "decoder")):
            try:
                stack = getattr(model, accessor)()
            except Exception:  # noqa: BLE001 - a class without the accessor has no such stack
                stack = None
            if stack is not None and paths.get(id(stack)):
                towers[paths[id(stack)]] = name
        encoder_decoder = {"encoder", "decoder"} <= set(towers.values())
    default = "shared" if encoder_decoder else "projector" if composite else modality(model)
    out = Layout(towers, _block_lists(modules), composite, encoder_decoder, default)
    out.cross = _cross_attention(modules, out)
    return out


def is_attention(module: Any) -> bool:
    return _attention_class(type(module))


@functools.cache
def _attention_class(cls: type) -> bool:
    name = own_name(cls)
    return bool(ATTENTION_CLASS.search(name)) and not is_mixer_class(cls) and not LAYER_CLASS.search(name)


# RWKV's time mixing is typed RwkvSelfAttention: its family's name is what makes it a mixer
RWKV_MIXER = re.compile(r"^Rwkv\w*Attention$")
# What a class of a mixer family (Mamba, xLSTM) is called when it is the family's own mixing layer
FAMILY_LAYER = ("", "Layer", "Block", "Mixer")


@functools.cache  # a class's name and its modeling module's families do not change (sys.modules holds it)
def is_mixer_class(cls: type) -> bool:
    """A state-space or recurrent mixer's class, by its name without its model family's prefix: GptOssMLP is an
    MLP (not 'SSM'), RecurrentGemmaAttention is attention and RecurrentGemmaRglru a mixer; in a family that is
    itself a mixer (Mamba, xLSTM), its plain layer or block."""
    family = model_family(cls)
    rest = cls.__name__[len(family) :]
    if MIXER_CLASS.search(rest) or RWKV_MIXER.search(cls.__name__):
        return True
    return bool(family) and bool(MIXER_CLASS.search(family)) and rest in FAMILY_LAYER


_FAMILIES: dict[str, tuple[str, ...]] = {}


def model_family(cls: type) -> str:
    """The model family's prefix of a transformers module class (RecurrentGemma of RecurrentGemmaAttention): the
    longest prefix its modeling module's own *PreTrainedModel class gives; '' for a class outside transformers."""
    import sys

    where = getattr(cls, "__module__", "") or ""
    if not where.startswith("transformers.models."):
        return ""
    if where not in _FAMILIES:
        found = vars(sys.modules[where]) if where in sys.modules else {}
        _FAMILIES[where] = tuple(
            n.removesuffix("PreTrainedModel")
            for n, v in found.items()
            if n.endswith("PreTrainedModel") and isinstance(v, type) and v.__module__ == where
        )
    return max((p for p in _FAMILIES[where] if p and cls.__name__.startswith(p)), key=len, default="")


def own_name(cls: type) -> str:
    """A class's name without its model family's prefix (Attention of RecurrentGemmaAttention)."""
    return cls.__name__[len(model_family(cls)) :]


def _cross_attention(modules: dict[str, Any], lay: Layout) -> set[str]:
    """Attention modules that attend to another stack: a class or flag that says so, or, in a decoder block of an
    encoder-decoder that holds two attention modules (BART, Whisper: self_attn, then encoder_attn), the second."""
    cross = {p for p, m in modules.items() if is_attention(m) and (CROSS_CLASS.search(type(m).__name__))}
    cross |= {p for p, m in modules.items() if getattr(m, "is_cross_attention", False) is True and is_attention(m)}
    if lay.encoder_decoder:
        for blocks in lay.block_lists:
            if lay.tower_of(blocks) != "decoder":
                continue
            for block_path in (f"{blocks}.{i}" for i in range(len(modules[blocks]))):
                outer: list[str] = []
                for p, m in modules.items():
                    if p.startswith(block_path + ".") and is_attention(m):
                        if not any(p.startswith(o + ".") for o in outer):
                            outer.append(p)
                if len(outer) >= 2 and not any(o in cross for o in outer):
                    cross.update(outer[1:])
    return cross
