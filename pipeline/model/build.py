"""Which transformers class a config is counted as, and building it on the meta device (shapes only, no memory,
no init, no remote code), recording what the model reads from its config while it is built.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError, first_line

if TYPE_CHECKING:
    import torch

# auto_class: which transformers auto class picks the model class (auto: the class config.json names in
# `architectures`, else the first of FALLBACK with a class for the config). The mapping names are
# transformers' own (transformers.models.auto.modeling_auto).
AUTO_CLASSES = {
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING",
    "image_text_to_text": "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING",
    "seq2seq_lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING",
    "speech_seq2seq": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING",
    "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING",
    "base": "MODEL_MAPPING",
}

# The order `auto` tries when config.json names no class: a generative head first (what people download
# and run), the bare model last. causal_lm is skipped where its class is a stand-in: for an encoder-decoder
# it is the decoder alone (BartForCausalLM: 254,084,096 of bart-large's 406,291,456), and for an encoder
# with a masked-LM head (BERT, RoBERTa) it is the encoder rewired as a decoder (BertLMHeadModel).
FALLBACK = ("causal_lm", "image_text_to_text", "seq2seq_lm", "speech_seq2seq", "masked_lm", "base")


def _mapping(auto_class: str) -> Any:
    from transformers.models.auto import modeling_auto

    return getattr(modeling_auto, AUTO_CLASSES[auto_class])


def _mapped(auto_class: str, config: Any, mapping: Any = None) -> type | None:
    """The class transformers' auto class auto_class builds for config, or None when it has none."""
    mapping = _mapping(auto_class) if mapping is None else mapping
    try:
        if type(config) not in mapping:
            return None
        found = mapping[type(config)]
    except Exception as exc:  # a class whose module needs an optional package (ImportError) and the like
        raise PipelineError(f"cannot load the model class: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(found, list | tuple):
        return found
    # several classes for one config: the one `architectures` names, else the first, as from_config picks
    # (transformers.models.auto.auto_factory._get_model_class, 5.x)
    named = {cls.__name__: cls for cls in found}
    return next((named[a] for a in getattr(config, "architectures", None) or [] if a in named), found[0])


def is_base_class(cls: type, config: Any) -> bool:
    """cls is the bare model of its config (AutoModel's class: no head of its own)."""
    return _mapped("base", config) is cls


def is_causal_class(cls: type, config: Any) -> bool:
    """cls generates text token by token from its own past (a KV cache): AutoModelForCausalLM's class."""
    return _mapped("causal_lm", config) is cls and not getattr(config, "is_encoder_decoder", False)


def model_class(config: Any, name: str, auto_class: str = "auto") -> tuple[type, str]:
    """_model_class, with the class checked loadable: a class needing a package that is not installed is a
    stand-in of transformers' that raises on first use (torchaudio, timm): one line naming the package."""
    try:
        cls, how = _model_class(config, name, auto_class)
        getattr(cls, "config_class", None)
    except ImportError as exc:
        raise PipelineError(f"the model class cannot be loaded: {first_line(exc)}", model=name) from None
    return cls, how


def _model_class(config: Any, name: str, auto_class: str = "auto") -> tuple[type, str]:
    """The transformers class counted for config, and how it was chosen: architectures, auto_class:<kind> or
    fallback:<kind> (class_reason() says it in words).

    auto: the class config.json names (`architectures[0]`, the class the checkpoint was saved from),
    else the first auto class of FALLBACK that has one. An explicit auto_class picks that auto class's
    class; an encoder-decoder is never counted as its decoder alone.
    """

    kind = type(config).__name__
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    if auto_class != "auto":
        if auto_class == "causal_lm" and encoder_decoder:
            raise PipelineError(
                f"{kind} is an encoder-decoder; auto_class: causal_lm would count its decoder "
                "alone; use auto_class: auto or seq2seq_lm",
                model=name,
            )
        cls = _mapped(auto_class, config)
        if cls is None:
            raise PipelineError(f"auto_class: {auto_class} has no class for {kind}", model=name)
        return cls, f"auto_class:{auto_class}"
    named = getattr(config, "architectures", None) or []
    if named:
        missing = _missing_class(str(named[0]))
        if missing is None:
            return _named_class(config, name, str(named[0]))
        cls, how = _model_class_by_kind(config, name, encoder_decoder)
        return cls, f"{how}:named:{missing}"  # transformers' auto classes do the same: the name is not theirs
    return _model_class_by_kind(config, name, encoder_decoder)


def _missing_class(wanted: str) -> str | None:
    """wanted, when transformers exports no such name (the repository's own class, as Kimi-K2.5's
    KimiK25ForConditionalGeneration); None when it does (even if it cannot be loaded: that is said later)."""
    import transformers

    try:
        getattr(transformers, wanted)
    except AttributeError:
        return wanted
    except Exception:  # noqa: BLE001 - a class needing an optional package: it exists
        return None
    return None


def _model_class_by_kind(config: Any, name: str, encoder_decoder: bool) -> tuple[type, str]:
    """The first auto class of FALLBACK, then of every other auto class, that has a class for config."""
    kind = type(config).__name__
    stand_in = encoder_decoder or (
        _mapped("masked_lm", config) is not None and not getattr(config, "is_decoder", False)
    )
    for candidate in FALLBACK:
        if candidate == "causal_lm" and stand_in:
            continue
        cls = _mapped(candidate, config)
        # a class for one of the config's sub-configs is a part of the model (MllamaForCausalLM: its text model)
        if cls is not None and not _for_a_sub_config(cls, config):
            return cls, f"fallback:{candidate}"
    # then every other auto class transformers has, in name order (text-to-waveform: MusicGen)
    from transformers.models.auto import modeling_auto

    for attr in sorted(dir(modeling_auto)):
        if not (attr.startswith("MODEL_FOR_") and attr.endswith("_MAPPING")) or attr in AUTO_CLASSES.values():
            continue
        cls = _mapped(attr, config, getattr(modeling_auto, attr))
        if cls is not None and not _for_a_sub_config(cls, config):
            return cls, f"fallback:{attr.removeprefix('MODEL_FOR_').removesuffix('_MAPPING').lower()}"
    raise PipelineError(f"transformers has no model class for {kind}", model=name)


def _named_class(config: Any, name: str, wanted: str) -> tuple[type, str]:
    """The class config.json's `architectures` names, as transformers builds it.

    A class that takes this config (or its text sub-config) is built as named. A config that transformers read
    as another type than the named class takes (a Mistral file with layer_types is read as a MinistralConfig) is
    built as transformers' own auto class of the named class's kind builds it from that config
    (MinistralForCausalLM), as from_pretrained does; a config read as the named class's own config class (a
    model_type of the repository's own) is said to be. Refused only when no class built into transformers fits.
    """
    import transformers
    from transformers import PreTrainedModel

    from pipeline.model import config_file

    kind = type(config).__name__
    try:
        cls = getattr(transformers, wanted)
    except AttributeError:
        raise PipelineError(
            f"config.json names the class {wanted}, which transformers "
            f"{transformers.__version__} does not have (code shipped with a model is never run); "
            f"set auto_class to one of {', '.join(AUTO_CLASSES)} to count it as that kind of model",
            model=name,
        ) from None
    except Exception as exc:  # a class needing an optional package (timm, ...)
        raise PipelineError(
            f"the class {wanted} cannot be loaded: {type(exc).__name__}: {first_line(exc)}", model=name
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise PipelineError(f"config.json's architectures names {wanted}, not a model class", model=name)
    expected = getattr(cls, "config_class", None)
    text = config.sub_configs.get("text_config")
    how, said = config_file.read_as(config) or ("", "")
    if expected is None or isinstance(config, expected) or expected is text:
        return cls, (f"own_config:{said or '-'}:{kind}" if how == "own" else "architectures")
    for auto_class in _auto_kinds_of(cls) if how == "converted" else ():
        built = _mapped_name(auto_class, config)
        if built is not None and not _for_a_sub_config(built, config):
            return built, f"converted:{auto_class}:{wanted}:{kind}"
    also = f", and no auto class of its kind has a class for the {kind} transformers read it as" if how else ""
    raise PipelineError(
        f"config.json names the class {wanted}, which takes a {expected.__name__}, not this {kind}{also}", model=name
    )


def _auto_kinds_of(cls: type) -> list[str]:
    """The auto classes whose mapping lists cls (causal_lm for MistralForCausalLM): the project's kinds first, then
    transformers' other mappings by name (MODEL_FOR_..._MAPPING)."""
    from transformers.models.auto import modeling_auto

    others = sorted(
        a.removesuffix("_NAMES")
        for a in dir(modeling_auto)
        if a.startswith("MODEL_FOR_") and a.endswith("_MAPPING_NAMES")
    )
    kinds = list(AUTO_CLASSES) + [k for k in others if k not in AUTO_CLASSES.values()]
    found = []
    for kind in kinds:
        table = getattr(modeling_auto, AUTO_CLASSES.get(kind, kind) + "_NAMES", None) or {}
        names = {n for v in table.values() for n in (v if isinstance(v, (tuple, list)) else (v,))}
        if cls.__name__ in names:
            found.append(kind)
    return found


def _mapped_name(kind: str, config: Any) -> type | None:
    """_mapped for a kind named by the project (causal_lm) or by transformers' mapping name."""
    from transformers.models.auto import modeling_auto

    if kind in AUTO_CLASSES:
        return _mapped(kind, config)
    mapping = getattr(modeling_auto, kind, None)
    return None if mapping is None else _mapped(kind, config, mapping)


def _for_a_sub_config(cls: type, config: Any) -> bool:
    """cls takes one of config's sub-configs, not config itself: it builds a part of the model."""
    subs = {type(getattr(config, key, None)) for key in getattr(config, "sub_configs", None) or {}}
    wanted = getattr(cls, "config_class", None)
    return wanted is not None and wanted is not type(config) and wanted in subs


def class_reason(class_from: str) -> str:
    """model_class()'s how, in words: 'the class config.json names in architectures', ..."""
    kind, _, rest = class_from.partition(":")
    if kind == "architectures":
        return "the class config.json names in architectures"
    if kind == "own_config":
        model_type, _, config_class = rest.partition(":")
        said = "no model_type" if model_type == "-" else f"model_type {model_type!r}"
        return (
            f"the class config.json names in architectures; its {said} is not built into transformers, so the file "
            f"was read as that class's own {config_class} (the repository's own code, if any, is never run)"
        )
    if kind == "converted":
        auto_class, _, rest = rest.partition(":")
        named, _, config_class = rest.partition(":")
        return (
            f"config.json names {named}, but transformers reads the file as a {config_class}; its auto class "
            f"({_kind_words(auto_class)}) builds this class from it, as from_pretrained does"
        )
    if kind == "auto_class":
        return f"auto_class: {rest}"
    which, _, named = rest.partition(":named:")
    if named:
        return (
            f"config.json names {named}, which transformers does not have (the repository's own code is never "
            f"run); the first auto class transformers has for its config, as its auto classes build it: "
            f"{_kind_words(which)}"
        )
    return f"config.json names no class; the first auto class transformers has for it: {which}"


def _kind_words(kind: str) -> str:
    return kind if kind in AUTO_CLASSES else kind.removeprefix("MODEL_FOR_").removesuffix("_MAPPING").lower()


def build_meta(config: Any, name: str, auto_class: str = "auto") -> torch.nn.Module:
    """Instantiate config's model class on the meta device: shapes only, no memory, no init, no remote code."""
    return build_meta_reading(config, name, auto_class)[0]


_BUILD_LOCK = threading.Lock()  # the read recorder patches a class: one build at a time per process


def build_meta_reading(
    config: Any, name: str, auto_class: str = "auto", cls: type | None = None
) -> tuple[torch.nn.Module, frozenset[str]]:
    """build_meta, and the names of every config attribute the model's code read while it was built.

    cls: the class model_class() resolved already (resolved once per count), else resolved here.

    A config.json field its class does not declare is still kept on the config, and model code may read it
    by name (GLM-4.5's head_dim); one never read while building cannot have changed a single shape.
    """
    import torch
    from transformers import PretrainedConfig

    if cls is None:
        cls, _ = model_class(config, name, auto_class)
    if getattr(cls, "config_class", None) is not None and cls.config_class is config.sub_configs.get("text_config"):
        config = config.get_text_config()  # a text-only class of a composite config, as the auto classes do
    read: set[str] = set()
    original = PretrainedConfig.__getattribute__

    def recording(self: Any, key: str) -> Any:
        read.add(key)
        return original(self, key)

    with _BUILD_LOCK:
        PretrainedConfig.__getattribute__ = recording
        try:
            with torch.device("meta"), _initialisers_skipped():
                model = cls._from_config(config)
        except Exception as exc:  # transformers' boundary: an impossible config raises many types
            raise PipelineError(
                f"cannot build the architecture: {type(exc).__name__}: {first_line(exc)}", model=name
            ) from None
        finally:
            PretrainedConfig.__getattribute__ = original
    return model, frozenset(read)


@contextlib.contextmanager
def _initialisers_skipped() -> Any:
    """torch's weight initialisers (those transformers' own no_init_weights silences for from_pretrained: its
    TORCH_INIT_FUNCTIONS in its TORCH_MODULES_TO_PATCH) as no-ops that return their tensor, while a model is built
    on the meta device: no value is made there, and nn.Linear's reset_parameters alone was a quarter of a count.
    transformers' own tying (post_init's tie_weights) runs as it always does."""
    import sys

    try:
        from transformers.initialization import TORCH_INIT_FUNCTIONS, TORCH_MODULES_TO_PATCH
    except ImportError:  # a transformers without them: the initialisers run, as they did
        yield
        return

    def untouched(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    originals = []
    try:
        for module in (sys.modules.get(m) for m in TORCH_MODULES_TO_PATCH):
            for name in TORCH_INIT_FUNCTIONS if module is not None else ():
                if hasattr(module, name):
                    originals.append((module, name, getattr(module, name)))
                    setattr(module, name, untouched)
        yield
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
