"""The role of each parameter (what kind of tensor it is) and its component (what part of the model it serves).

Decided by the type of the module that owns the tensor and the model's own accessors first; a tensor that
no module rule places gets its role from the tensor itself (a `*bias` is a bias, a single value a scalar,
ndim >= 2 a matrix, else a per-channel scale), so no module type stops a count, and each row keeps its
module path and class.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pipeline.model import moe
from pipeline.model.structure import Layout, is_attention, is_mixer_class

if TYPE_CHECKING:
    import torch

ROLES = {
    "matrix": "a weight matrix (Linear, GPT-2's Conv1D, routers, stacked experts; any other tensor of 2 or more "
    "dimensions)",
    "bias": "an additive bias (of a linear map or convolution, or a tensor named *bias)",
    "embedding": "an embedding table: token, position, segment, a vision tower's position table and class token, "
    "and an untied output head's matrix",
    "norm_gain": "a normalisation layer's gain",
    "norm_bias": "a normalisation layer's shift",
    "conv_kernel": "a convolution kernel (patch and audio front ends, Mamba's causal conv1d)",
    "state_space": "a state-space or recurrent mixer's own parameters (Mamba's A_log, D, dt_bias; RWKV's decays)",
    "attention_sink": "one learned logit per head that attention may give its weight to (gpt-oss)",
    "scalar": "a single learned value (a logit scale, an activation's parameter, a temperature)",
    "scale": "a learned per-channel or per-head vector that is not a bias (layer scales, gates)",
}
COMPONENTS = {
    "token_embedding": "the token embedding (get_input_embeddings(), and each tower's)",
    "position_embedding": "learned positions: a table with one row per position, or a vision tower's position table",
    "segment_embedding": "token-type rows (BERT's type_vocab_size)",
    "other_embedding": "other embedding tables outside the blocks (per-layer or codebook tables)",
    "input_projection": "what turns pixels, audio or narrow embeddings into the model's width outside the blocks: "
    "patch and stem convolutions, audio front ends",
    "attention": "self-attention inside a block (relative position biases and sinks included)",
    "cross_attention": "attention to another stack or tower (an encoder-decoder's decoder, Mllama's image layers)",
    "state_space": "a state-space or linear-recurrent sequence mixer (Mamba, gated DeltaNet, RWKV) inside a block",
    "router": "the router that picks each token's experts",
    "experts": "the routed experts (stacked tensors, the first dimension the expert)",
    "shared_experts": "what a mixture-of-experts block holds beside its routed experts, used by every token",
    "mlp": "the other linear maps of a block (the feed-forward network)",
    "convolution": "convolutions inside a block that are not part of its attention or mixer",
    "layer_norm": "normalisation layers",
    "pooler": "a pooler module outside the blocks",
    "projection": "linear maps outside the blocks: a multimodal projector, CLIP's text and visual projections, "
    "ELECTRA's embeddings_project",
    "output_head": "get_output_embeddings() and the head module around it",
    "misc": "learned tensors no other rule places (class and mask tokens, layer and logit scales); the row names "
    "its module",
}
_EMBEDDING_CLASS = re.compile(r"Embedding", re.IGNORECASE)
_EMBEDDING_ATTR = re.compile(r"emb|cls_token|class_token|mask_token|register|position|pos_", re.IGNORECASE)
_BIAS_ATTR = re.compile(r"(^|_)bias(_|$)")  # a tensor named *bias (LSTM's bias_ih_l0, in_proj_bias)
_FRONT_END_CLASS = re.compile(r"Embedding|FeatureEncoder|FeatureExtractor|FeatureProjection|Stem|Patch|Subsampl")


def is_norm(module: torch.nn.Module) -> bool:
    """A normalisation layer: torch's norm types, or a module typed *Norm holding at most weight and bias."""
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm, torch.nn.modules.batchnorm._NormBase)
    if isinstance(module, norms):
        return True
    own = {n for n, _ in module.named_parameters(recurse=False)}
    return bool(re.search(r"Norm$|Norm\d*d$", type(module).__name__)) and bool(own) and own <= {"weight", "bias"}


def is_linear(module: torch.nn.Module) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def is_conv(module: torch.nn.Module) -> bool:
    import torch

    return isinstance(module, torch.nn.modules.conv._ConvNd)


def is_embedding(module: torch.nn.Module) -> bool:
    import torch

    return isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag))


def is_sink(module: torch.nn.Module, attr: str) -> bool:
    """gpt-oss's attention sinks: one learned logit per head, owned by the attention module itself."""
    return attr == "sinks" and is_attention(module)


def is_mixer(module: torch.nn.Module) -> bool:
    """A state-space or recurrent sequence mixer (RWKV's time mixing is typed *Attention, and is one)."""
    import torch

    if isinstance(module, torch.nn.RNNBase):
        return True
    return is_mixer_class(type(module)) and not (
        is_norm(module) or is_linear(module) or is_conv(module) or is_embedding(module)
    )


def _is_ssm(module: torch.nn.Module) -> bool:
    """A mixer whose own tensors are its state-space parameters (an LSTM's are plain matrices and biases)."""
    import torch

    return is_mixer(module) and not isinstance(module, torch.nn.RNNBase)


def has_rule(module: torch.nn.Module, attr: str) -> bool:
    """A module rule (not the tensor fallback) gives this tensor its role."""
    return (
        (is_embedding(module) and attr == "weight")
        or ((is_linear(module) or is_conv(module) or is_norm(module)) and attr in ("weight", "bias"))
        or moe.is_experts(module)
        or (moe.is_router(module) and attr in ("weight", "bias"))
        or is_sink(module, attr)
    )


def role(module: torch.nn.Module, attr: str, is_untied_head: bool, p: Any) -> str:
    if is_embedding(module) and attr == "weight":
        return "embedding"
    if is_linear(module) and attr in ("weight", "bias"):
        return "bias" if attr == "bias" else "embedding" if is_untied_head else "matrix"
    if is_conv(module) and attr in ("weight", "bias"):
        return "bias" if attr == "bias" else "conv_kernel"
    if is_norm(module) and attr in ("weight", "bias"):
        return "norm_gain" if attr == "weight" else "norm_bias"
    if moe.is_experts(module):  # stacked expert matrices, and gpt-oss's stacked expert biases (*_bias)
        return "bias" if attr.endswith("bias") else "matrix"
    if moe.is_router(module) and attr in ("weight", "bias"):
        return "matrix" if attr == "weight" else "bias"
    if is_sink(module, attr):
        return "attention_sink"
    if _is_ssm(module):
        return "state_space"
    if _EMBEDDING_CLASS.search(type(module).__name__) or _EMBEDDING_ATTR.search(attr):
        return "embedding"  # a vision tower's position table and class token, wav2vec2's masked_spec_embed
    if _BIAS_ATTR.search(attr):
        return "bias"
    if p.numel() == 1:
        return "scalar"
    return "matrix" if p.dim() >= 2 else "scale"


class Placer:
    """component() for every parameter of one model, with what it needs computed once."""

    def __init__(self, model: torch.nn.Module, lay: Layout, modules: dict, input_emb: Any, output_emb: Any) -> None:
        self.model, self.lay, self.modules = model, lay, modules
        self.input_ids = {id(p) for p in input_emb.parameters()} if input_emb is not None else set()
        self.output_ids = {id(p) for p in output_emb.parameters()} if output_emb is not None else set()
        self.moe = moe.structure(model)
        self.head_root = _head_root(model, modules, output_emb)
        self.front_ids = set()  # each tower's get_input_embeddings() when it is not a token table (a patch conv)
        for root in lay.towers:
            try:
                found = modules[root].get_input_embeddings()
            except Exception:  # noqa: BLE001 - towers without the accessor, or that raise NotImplementedError
                continue
            if found is None or not hasattr(found, "parameters"):
                continue
            target = self.input_ids if is_embedding(found) else self.front_ids
            target.update(id(p) for p in found.parameters())
        self._positions: dict[int, set[int]] = {}
        self._in_blocks: dict[str, str] = {}  # _in_block by module path (a weight and its bias share it)

    def _position_sizes(self, path: str) -> set[int]:
        """Row counts of a position table in this tower: every *position* size of the config it reads."""
        root = self.lay.tower_root(path)
        config = getattr(self.modules[root], "config", None) if root is not None else None
        config = config if config is not None else self.model.config
        if id(config) not in self._positions:
            fields = config.to_dict()
            sizes = {v for k, v in fields.items() if "position" in k and isinstance(v, int) and v > 0}
            image, patch = fields.get("image_size"), fields.get("patch_size")
            if isinstance(image, int) and isinstance(patch, int) and patch > 0:  # a vision tower: one row per patch
                sizes.add((image // patch) ** 2)  # (and the class token's row: the offset allows it)
            self._positions[id(config)] = sizes
        return self._positions[id(config)]

    def _chain(self, path: str, stop: str) -> list[Any]:
        """Modules from path up to (not including) stop."""
        out, parts = [], path.split(".") if path else []
        for i in range(len(parts), 0, -1):
            p = ".".join(parts[:i])
            if p == stop:
                break
            out.append((p, self.modules[p]))
        return out

    def component(self, module: Any, path: str, attr: str, p: Any, role_: str) -> str:
        pid = id(p)
        found = self.moe.component(path)
        if found:
            return found
        if pid in self.input_ids:
            return "token_embedding"
        if pid in self.output_ids or (self.head_root and (path + ".").startswith(self.head_root + ".")):
            return "output_head"
        if is_norm(module):
            return "layer_norm"
        if is_sink(module, attr):
            return "attention"
        blocks, index = self.lay.block_of(path)
        if blocks is not None:
            if path not in self._in_blocks:
                self._in_blocks[path] = self._in_block(module, path, f"{blocks}.{index}")
            return self._in_blocks[path]
        if pid in self.front_ids:
            return "input_projection"
        if is_embedding(module):
            rows = module.weight.shape[0]
            if any(0 <= rows - n <= 2 for n in self._position_sizes(path)) or "Position" in type(module).__name__:
                return "position_embedding"  # OPT and BART add an offset of 2 rows
            if rows == getattr(self.model.config, "type_vocab_size", None):
                return "segment_embedding"
            return "other_embedding"
        if role_ == "embedding":
            return "position_embedding" if re.search(r"pos", attr, re.IGNORECASE) else "misc"
        chain = self._chain(path, "")
        if any("Position" in type(m).__name__ for _, m in chain):
            return "position_embedding"  # wav2vec2's positional convolution
        if any(re.search(r"Pooler|Pooling", type(m).__name__) for _, m in chain):
            return "pooler"
        if any(is_mixer(m) for _, m in chain):
            return "state_space"
        if is_conv(module) or any(_FRONT_END_CLASS.search(type(m).__name__) for _, m in chain):
            return "input_projection"
        if is_linear(module):
            return "projection"
        return "misc"

    def _in_block(self, module: Any, path: str, block_path: str) -> str:
        if any(_FRONT_END_CLASS.search(type(m).__name__) for _, m in self._chain(path, "")):
            return "input_projection"  # the layers of an audio front end (wav2vec2's feature encoder)
        chain = self._chain(path, block_path)
        for _, m in chain:  # the innermost module that is a sequence mixer decides
            if is_mixer(m):
                return "state_space"
            if is_attention(m):
                return "cross_attention" if any(q in self.lay.cross for q, _ in chain) else "attention"
        if is_linear(module) or moe.is_experts(module):
            return "mlp"
        if is_conv(module):
            return "convolution"
        return "misc"


def _head_root(model: torch.nn.Module, modules: dict, output_emb: Any) -> str | None:
    """Path of the head module around get_output_embeddings() (lm_head, cls), outside the base model."""
    if output_emb is None:
        return None
    path = next((p for p, m in modules.items() if m is output_emb), None)
    if not path:
        return None
    root = path.split(".", 1)[0]
    return None if root == getattr(model, "base_model_prefix", None) else root
