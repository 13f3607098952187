"""What each layer of a generating model keeps while it generates, read from the built model's own layers.

The layers are the blocks of the stack that generates tokens (the text tower of a composite model, the
decoder of an encoder-decoder), found by pipeline.model.structure; each block's kind comes from the modules
it holds, never from a name pattern:
- a self-attention layer caches keys and values for every token (2 × KV heads × head width values; a
  multi-head latent attention layer caches its latent and rotary key, kv_lora_rank + qk_rope_head_dim),
  at most its window for a sliding-window layer;
- a state-space or recurrent layer keeps a fixed state per sequence, whatever the context: its causal
  convolution's last inputs per channel, a kernel's width of them as transformers keeps them (its
  LinearAttentionLayer holds the conv state the mixer gives it, padded to the kernel: modeling_mamba pads with
  `F.pad(x, (conv_kernel - n, 0))`; the minimal state is kernel − 1), and its recurrent state (Mamba:
  intermediate × d_state; Mamba-2: heads × head width × d_state; gated DeltaNet: value heads × key width ×
  value width) in float32, as transformers' scans accumulate it whatever the weights' dtype (modeling_mamba's
  `state.float()`, the gated delta rule's float32 inputs), read from the mixer module's own sizes; a mixer
  whose state this module cannot derive is reported as unknown;
- a cross-attention layer caches the keys and values of the encoder's output once per input;
- a layer that shares an earlier layer's cache (the last num_kv_shared_layers of Gemma 3n and Gemma 4) adds none;
- vision and audio towers, and encoders, generate nothing and cache nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError
from pipeline.core.sizes import HEAD_DIM_FIELDS
from pipeline.model import roles, structure

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Layer:
    kv_per_token: int  # values one token adds to this layer's self-attention cache
    window: int | None  # at most this many tokens cached (a sliding window); None: the whole context
    state: int | None  # values of fixed per-sequence state (0: none; None: a mixer whose state is not derived)
    cross_kv_per_input_token: int  # values cached per input token for cross-attention
    mixer: str  # class of the state-space mixer ('' for none)
    state_float32: int = 0  # of the state's values, those held in float32 whatever the cache dtype (recurrent)


def text_config(config: Any) -> Any:
    """The config of the part that generates text (a composite's text_config, an encoder-decoder's decoder)."""
    try:
        return config.get_text_config(decoder=True)
    except Exception:  # noqa: BLE001 - configs without sub-configs, or an older signature
        return config


def head_dim(config: Any) -> int:
    for name in HEAD_DIM_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return config.hidden_size // config.num_attention_heads


def attention_width(config: Any) -> int:
    """Query heads × head width (Kaplan's d_attn); 0 for a model with no attention heads (Mamba). A heterogeneous
    config (per-layer heads) gives its first layer's."""
    layers = layer_configs(config)
    try:
        heads = getattr(layers[0], "num_attention_heads", None)
        return heads * head_dim(layers[0]) if heads else 0
    except Exception:  # noqa: BLE001 - a config whose heads cannot be read globally
        return 0


def _kv_width(config: Any, module: Any = None) -> int:
    """Values one token adds to one attention layer's cache. The attention module's own count of key/value heads
    comes first where it keeps one (Falcon's multi-query attention keeps 1 whatever num_kv_heads says), else the
    config's."""
    if getattr(config, "kv_lora_rank", None):  # multi-head latent attention caches the latent and the rope key
        return config.kv_lora_rank + config.qk_rope_head_dim
    own = [getattr(module, a, None) for a in ("num_key_value_heads", "num_kv_heads")]
    own = [v for v in own if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    width = getattr(module, "head_dim", None)
    kv_heads = own[0] if own else getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    width = width if isinstance(width, int) and not isinstance(width, bool) and width > 0 else head_dim(config)
    return 2 * kv_heads * width


# Layer types whose cache holds at most a window of tokens (transformers' cache_utils LAYER_TYPE_CACHE_MAPPING):
# the window is the config field beside each (Llama 4's chunked layers keep at most attention_chunk_size)
WINDOWED_TYPES = {"sliding_attention": "sliding_window", "chunked_attention": "attention_chunk_size"}


def _windows(config: Any, layers: int) -> list[int | None]:
    types = getattr(config, "layer_types", None)
    if types and len(types) == layers:  # per-layer types (gpt-oss, Gemma, Llama 4): only windowed layers
        return [_window(config, WINDOWED_TYPES[t]) if t in WINDOWED_TYPES else None for t in types]
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return [_window(config, "sliding_window")] * layers  # one window for every layer (Mistral)
    return [None] * layers


def _window_of(windows: dict[int, list[int | None]], config: Any, layers: int, i: int) -> int | None:
    """Layer i's window, from its config's windows (worked out once per config, kept in windows)."""
    if id(config) not in windows:
        windows[id(config)] = _windows(config, layers)
    return windows[id(config)][i]


def _window(config: Any, field: str) -> int | None:
    """A window the cache keeps, from its config field: a whole number of tokens, at least 1 (None: unset)."""
    value = getattr(config, field, None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PipelineError(f"{field}={value!r}: a window of attention is a whole number of tokens, at least 1")
    return value


# Attribute names of learned position tables held as plain embeddings (GPT-2's wpe, BERT's position_embeddings)
POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
# Config fields that state how many positions a model takes, when its generating stack has no position table
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_target_positions", "max_sequence_length")


def max_positions(model: torch.nn.Module, config: Any) -> tuple[int | None, str]:
    """The most tokens one sequence of the generating stack can hold, and where that comes from: the rows of its
    learned position table less their offset (Whisper's decoder: 448 of max_target_positions; BART and OPT keep 2
    rows more), else a positions field its config class declares (rotary models: max_position_embeddings), else
    None: a model with relative positions or none at all (T5, Mamba) sets no limit of its own."""
    import torch

    modules = dict(model.named_modules())
    lay = structure.layout(model)
    wanted = {"decoder"} if lay.encoder_decoder else {"text"}
    for path, module in modules.items():
        if not isinstance(module, torch.nn.Embedding) or lay.tower_of(path) not in wanted:
            continue
        if "Position" in type(module).__name__ or path.rpartition(".")[2] in POSITION_TABLES:
            rows = module.num_embeddings - int(getattr(module, "offset", 0) or 0)
            return rows, f"the rows of its position table {path}"
    from pipeline.model.config_file import declared_fields

    text = text_config(config)
    declared = declared_fields(type(text))
    for field in POSITION_FIELDS:
        value = getattr(text, field, None)
        if field in declared and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"its config's {field}"
    return None, "no position table and no positions field: its positions set no limit"


def layer_configs(text: Any) -> list[Any]:
    """Each layer's config where the config is heterogeneous (Gemma 4's per-layer KV heads and head widths: its
    global value raises), else [the one config]."""
    try:
        n = len(getattr(text, "per_layer_config", None) or [None])
    except Exception:  # noqa: BLE001 - a config whose per-layer view cannot be sized (Blt's has no layers)
        return [text]
    return _layer_configs(text, n)


def _layer_configs(text: Any, n: int) -> list[Any]:
    """Each layer's config: a heterogeneous config's own per-layer view (Gemma 4, Step 3.7), else the one config."""
    try:
        per = getattr(text, "per_layer_config", None)
        if per is not None and len(per) == n:
            return [per[i] for i in range(n)]
    except Exception:  # noqa: BLE001, S110 - a config without per-layer views
        pass
    return [text] * n


def _state(inside: list[tuple[str, Any]]) -> tuple[int | None, int]:
    """Fixed per-sequence state of one block's mixers, from the mixer modules' own sizes, and of it the recurrent
    values held in float32; (None, 0) when a mixer's kind is not known here."""
    import torch

    conv = sum(
        m.in_channels * m.kernel_size[0]
        for _, m in inside
        if isinstance(m, torch.nn.Conv1d) and m.groups == m.in_channels and m.groups > 1
    )
    recurrent, known = 0, False
    for _, m in inside:
        n = getattr(m, "ssm_state_size", None)
        heads, width, inner = (getattr(m, a, None) for a in ("num_heads", "head_dim", "intermediate_size"))
        kv = [getattr(m, a, None) for a in ("num_v_heads", "head_k_dim", "head_v_dim")]
        if isinstance(n, int) and isinstance(heads, int) and isinstance(width, int):
            recurrent += heads * width * n  # Mamba-2 and its hybrids: heads × head width × N
        elif isinstance(n, int) and isinstance(inner, int):
            recurrent += inner * n  # Mamba: intermediate × N
        elif all(isinstance(v, int) for v in kv):
            recurrent += kv[0] * kv[1] * kv[2]  # gated DeltaNet: one key × value matrix per value head
        elif "ShortConv" not in type(m).__name__:
            continue
        known = True  # (a short convolution keeps only its last inputs)
    return (conv + recurrent, recurrent) if known else (None, 0)


def _generates(model: Any, causal: bool) -> bool:
    """The model generates tokens: a causal LM, or any class with a generation head (a VLM, an encoder-decoder)."""
    try:
        return causal or bool(model.can_generate())
    except Exception:  # noqa: BLE001 - a class without the method
        return causal


def generating_stack(model: torch.nn.Module) -> tuple[Any, dict[str, Any], str | None]:
    """(the model's layout, its modules by path, the path of its generating stack's block list or None): the
    longest block list of the text tower, or of the decoder of an encoder-decoder."""
    lay = structure.layout(model)
    modules = dict(model.named_modules())
    wanted = {"decoder"} if lay.encoder_decoder else {"text"}
    stacks = [b for b in lay.block_lists if lay.tower_of(b) in wanted]
    return lay, modules, max(stacks, key=lambda b: len(modules[b])) if stacks else None


def layers(model: torch.nn.Module, config: Any, causal: bool) -> list[Layer]:
    """One Layer per block of the generating stack; [] for a model that generates nothing. Kept per model, config
    and causal (structure.kept): a plan's way forward asks again for every option."""
    kept, key = structure.kept(model), ("cache layers", id(config), causal)
    if key not in kept:
        kept[key] = (config, _layers(model, config, causal))  # the config held: its id stays its own
    return list(kept[key][1])


def _layers(model: torch.nn.Module, config: Any, causal: bool) -> list[Layer]:
    if not _generates(model, causal):
        return []
    lay, modules, stack = generating_stack(model)
    if stack is None:
        return []
    text = text_config(config)
    n = len(modules[stack])
    per = _layer_configs(text, n)
    widths: dict[tuple, int] = {}
    windows: dict[int, list[int | None]] = {}  # per layer config (one for most models)
    out = []
    for i, inside in enumerate(structure.in_blocks(modules, stack)):
        mixers = [m for _, m in inside if roles.is_mixer(m)]
        attention = [
            p
            for p, m in inside
            if structure.is_attention(m)
            and not roles.is_mixer(m)
            and not any((p + ".").startswith(c + ".") for c in lay.cross)
        ]
        cross = any(p in lay.cross for p, _ in inside)
        width = 0
        if attention or cross:
            key = (id(per[i]), type(modules[attention[0]]) if attention else None)
            if key not in widths:
                try:
                    widths[key] = _kv_width(per[i], modules[attention[0]] if attention else None)
                except (AttributeError, TypeError, ZeroDivisionError):
                    raise PipelineError(
                        f"{type(model).__name__}: its layer {i} attends, but its config gives no attention heads "
                        "to size the KV cache by"
                    ) from None
            width = widths[key]
        state, float32 = _state(inside) if mixers else (0, 0)
        out.append(
            Layer(
                kv_per_token=width if attention else 0,
                window=_window_of(windows, per[i], n, i) if attention else None,
                state=state,
                cross_kv_per_input_token=width if cross else 0,
                mixer=type(mixers[0]).__name__ if mixers else "",
                state_float32=float32,
            )
        )
    # the last num_kv_shared_layers layers reuse the cache of an earlier layer of their kind (Gemma 3n, Gemma 4)
    shared = getattr(text, "num_kv_shared_layers", None)
    if isinstance(shared, int) and 0 < shared < len(out):
        out[-shared:] = [
            Layer(0, None, layer.state, layer.cross_kv_per_input_token, layer.mixer, layer.state_float32)
            for layer in out[-shared:]
        ]
    return out
