"""The per-tensor inventory of a model, built on the meta device (no weights are ever allocated).

One row per unique parameter tensor. Its role comes from the type of the module that owns it and
its component from the model's own accessors and module tree, never from name patterns:

- role: matrix (Linear/Conv1D weight), bias (Linear/Conv1D bias), embedding (Embedding weight, and
  the output head's matrix, which is the unembedding), norm_gain and norm_bias (normalisation layers:
  LayerNorm, and RMSNorm-style modules with a weight and no bias);
- component: token_embedding (get_input_embeddings()), position_embedding (an Embedding outside the
  blocks with one row per position), segment_embedding (one with type_vocab_size rows, BERT's token
  types), attention (inside the block's attention module), mlp (the other matrices of a block),
  layer_norm (normalisation layers), pooler (a *Pooler module outside the blocks) and output_head
  (get_output_embeddings() and the head module around it, when it has tensors of its own).

A parameter that no rule recognises is an error naming its module path, never filed as "other".
Buffers (rotary frequencies, causal masks) are not parameters and are not counted.

A tied tensor has one row, under the name model.parameters() gives it, with its other names in `aliases`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.model import moe

if TYPE_CHECKING:  # torch is imported lazily: only the count stage pays for it
    import torch

ROLES = ("matrix", "bias", "embedding", "norm_gain", "norm_bias", "attention_sink")
COMPONENTS = (
    "token_embedding",
    "position_embedding",
    "segment_embedding",
    "attention",
    "router",
    "experts",
    "shared_experts",
    "mlp",
    "layer_norm",
    "pooler",
    "output_head",
)
COLUMNS = [
    "model",
    "kind",
    "name",
    "shape",
    "numel",
    "dtype",
    "module_class",
    "role",
    "component",
    "layer",
    "experts",
    "aliases",
    "is_input_embedding",
    "is_output_embedding",
    "checkpoint_key",
    "stored_dtype",
    "bits_per_param",
]
_ATTENTION_CLASS = re.compile(r"Attention|Attn", re.IGNORECASE)


def _is_norm(module: torch.nn.Module) -> bool:
    """A normalisation layer: torch's norm types, or a module typed *Norm holding at most weight and bias."""
    import torch

    if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)):
        return True
    own = {n for n, _ in module.named_parameters(recurse=False)}
    return type(module).__name__.endswith("Norm") and bool(own) and own <= {"weight", "bias"}


def _is_linear(module: torch.nn.Module) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def _block_list(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """The ModuleList holding the transformer blocks: num_hidden_layers children of one class."""
    import torch

    n_layers = getattr(model.config, "num_hidden_layers", None)
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and len(module) > 0:
            if len({type(child) for child in module}) == 1:
                return path, module
    return None


def _ancestors(path: str) -> Iterator[str]:
    """Module paths from the nearest parent to the root: a.b.c -> a.b, a, ''."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        yield ".".join(parts[:i])


def inventory(model: torch.nn.Module, name: str) -> pd.DataFrame:
    """One row per unique parameter tensor of model, with role, component, layer and aliases."""
    modules = dict(model.named_modules())
    input_emb, output_emb = embeddings(model)
    input_ids = {id(p) for p in input_emb.parameters()} if input_emb is not None else set()
    output_ids = {id(p) for p in output_emb.parameters()} if output_emb is not None else set()
    blocks = _block_list(model)
    block_prefix = blocks[0] + "." if blocks else None
    moe_parts = moe.structure(model)

    names: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(pname)

    head_root = _head_root(model, modules, output_emb)
    rows = []
    for pname, p in model.named_parameters():  # unique tensors, in the order model.parameters() gives
        # the owner whose type has a rule: the first name, else an alias (BERT's cls.predictions.bias
        # is also cls.predictions.decoder.bias, a Linear bias)
        owners = [n.rpartition(".") for n in names[id(p)]]
        module_path, _, attr = next((o for o in owners if _has_rule(modules[o[0]], o[2])), pname.rpartition("."))
        module = modules[module_path]
        role = _role(module, attr, id(p) in output_ids and id(p) not in input_ids, pname)
        layer = _layer_of(pname, block_prefix)
        component = moe_parts.component(module_path) or _component(
            model, modules, module, module_path, pname, id(p), input_ids, output_ids, layer, block_prefix, head_root
        )
        rows.append(
            {
                "model": name,
                "kind": "parameter",
                "name": pname,
                "shape": "x".join(str(s) for s in p.shape),
                "numel": p.numel(),
                "dtype": str(p.dtype).removeprefix("torch."),
                "module_class": type(module).__name__,
                "role": role,
                "component": component,
                "layer": layer,
                "experts": p.shape[0] if component == "experts" else None,  # how many experts the tensor stacks
                "aliases": ";".join(names[id(p)][1:]),
                "is_input_embedding": id(p) in input_ids and attr == "weight",
                "is_output_embedding": id(p) in output_ids and attr == "weight",
                "checkpoint_key": "",
                "stored_dtype": "",
                "bits_per_param": None,
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("layer", "experts"):
        df[column] = df[column].astype("Int64")
    return df


def _is_sink(module: torch.nn.Module, attr: str) -> bool:
    """gpt-oss's attention sinks: one learned logit per head, owned by the attention module itself."""
    return attr == "sinks" and bool(_ATTENTION_CLASS.search(type(module).__name__))


def _has_rule(module: torch.nn.Module, attr: str) -> bool:
    import torch

    return (
        (isinstance(module, torch.nn.Embedding) and attr == "weight")
        or (_is_linear(module) and attr in ("weight", "bias"))
        or (_is_norm(module) and attr in ("weight", "bias"))
        or moe.is_experts(module)
        or (moe.is_router(module) and attr in ("weight", "bias"))
        or _is_sink(module, attr)
    )


def _head_root(model: torch.nn.Module, modules: dict, output_emb: torch.nn.Module | None) -> str | None:
    """Path of the head module around get_output_embeddings() (lm_head, cls), outside the base model."""
    if output_emb is None:
        return None
    path = next(p for p, m in modules.items() if m is output_emb)
    root = path.split(".", 1)[0]
    return None if root == getattr(model, "base_model_prefix", None) else root


def _role(module: torch.nn.Module, attr: str, is_untied_head: bool, pname: str) -> str:
    import torch

    if isinstance(module, torch.nn.Embedding) and attr == "weight":
        return "embedding"
    if _is_linear(module):
        if attr == "weight":
            return "embedding" if is_untied_head else "matrix"
        if attr == "bias":
            return "bias"
    if _is_norm(module):
        return "norm_gain" if attr == "weight" else "norm_bias"
    if moe.is_experts(module):  # stacked expert matrices, and gpt-oss's stacked expert biases (*_bias)
        return "bias" if attr.endswith("bias") else "matrix"
    if moe.is_router(module) and attr in ("weight", "bias"):
        return "matrix" if attr == "weight" else "bias"
    if _is_sink(module, attr):
        return "attention_sink"
    raise PipelineError(
        f"parameter {pname}: no role rule for {type(module).__name__}.{attr} "
        "(known: Embedding, Linear, Conv1D, normalisation layers, routed experts, routers, attention sinks)"
    )


def _component(
    model, modules, module, module_path, pname, pid, input_ids, output_ids, layer, block_prefix, head_root
) -> str:
    import torch

    if pid in input_ids:
        return "token_embedding"
    if pid in output_ids or (head_root and (module_path == head_root or module_path.startswith(head_root + "."))):
        return "output_head"
    if _is_norm(module):
        return "layer_norm"
    if _is_sink(module, pname.rpartition(".")[2]):
        return "attention"
    if isinstance(module, torch.nn.Embedding) and layer is None:
        # Learned positions: one row per position (OPT adds an offset of 2 rows).
        max_positions = getattr(model.config, "max_position_embeddings", None)
        if max_positions and 0 <= module.num_embeddings - max_positions <= 2:
            return "position_embedding"
        if module.num_embeddings == getattr(model.config, "type_vocab_size", None):
            return "segment_embedding"
    if layer is None and _is_linear(module):
        chain = [module_path, *_ancestors(module_path)]
        if any(type(modules[p]).__name__.endswith("Pooler") for p in chain if p in modules):
            return "pooler"
    if layer is not None and _is_linear(module):
        block_path = block_prefix + str(layer)
        for parent in _ancestors(module_path):
            if parent == block_path or not parent.startswith(block_path):
                break
            if _ATTENTION_CLASS.search(type(modules[parent]).__name__):
                return "attention"
        return "mlp"
    raise PipelineError(
        f"parameter {pname}: no component rule for {type(module).__name__} at '{module_path}' "
        f"(known: {', '.join(COMPONENTS)})"
    )


def embeddings(model: torch.nn.Module) -> tuple[Any, Any]:
    """The model's own accessors, get_input_embeddings() and get_output_embeddings(); None where it has none.

    Some classes have no single one (CLIPModel: a text and a vision tower) and raise NotImplementedError.
    """
    found = []
    for accessor in (model.get_input_embeddings, model.get_output_embeddings):
        try:
            found.append(accessor())
        except (NotImplementedError, AttributeError):
            found.append(None)
    return found[0], found[1]


def embedding_names(model: torch.nn.Module) -> tuple[str, str]:
    """Parameter names of get_input_embeddings().weight and get_output_embeddings().weight ('' if absent).

    Found by module identity, so a tied head still reports its own name (lm_head.weight).
    """
    paths = {id(m): path for path, m in model.named_modules(remove_duplicate=False)}
    inp, out = embeddings(model)
    return (
        f"{paths[id(inp)]}.weight" if inp is not None else "",
        f"{paths[id(out)]}.weight" if out is not None else "",
    )


def _layer_of(path: str, block_prefix: str | None) -> int | None:
    """Index of the block a module or parameter path lies in (None outside the blocks)."""
    if block_prefix and (path + ".").startswith(block_prefix):
        return int(path[len(block_prefix) :].split(".", 1)[0])
    return None


def with_checkpoint(inv: pd.DataFrame, model: torch.nn.Module, rec: Any, metadata: list | None = None) -> pd.DataFrame:
    """The inventory with each parameter's checkpoint key, plus one row per checkpoint tensor that is not one.

    rec is a checkpoint.Reconciled. Buffers (kind buffer), tensors of a head the built class does not have
    (kind unused), of blocks it does not build (kind extra) and quantization metadata (scales, zero points,
    group indices: kind quant_metadata) are listed with their bytes but never counted as parameters.
    Parameter rows gain the dtype they are stored in and the bits each value takes on disk.
    """
    modules = dict(model.named_modules())
    blocks = _block_list(model)
    block_prefix = blocks[0] + "." if blocks else None
    inv = inv.copy()
    inv["checkpoint_key"] = inv["name"].map(rec.key_of).fillna("")
    stored = {name: entries for name, entries in rec.sources.items()}
    inv["stored_dtype"] = inv["name"].map(lambda n: stored[n][0].dtype if n in stored else "")
    inv["bits_per_param"] = [
        sum(e.end - e.begin for e in stored[n]) * 8 / numel if n in stored and numel else None
        for n, numel in zip(inv["name"], inv["numel"], strict=True)
    ]

    def row(entry, kind: str, name: str, module_class: str, component: str, layer: int | None) -> dict:
        return {
            "model": inv["model"].iloc[0],
            "kind": kind,
            "name": name,
            "shape": "x".join(str(s) for s in entry.shape),
            "numel": entry.numel,
            "dtype": entry.dtype,
            "module_class": module_class,
            "role": kind,
            "component": component,
            "layer": layer,
            "experts": None,
            "aliases": "",
            "is_input_embedding": False,
            "is_output_embedding": False,
            "checkpoint_key": entry.key,
            "stored_dtype": entry.dtype,
            "bits_per_param": None,
        }

    rows = []
    for entry, owner in rec.buffers:
        chain = [owner, *_ancestors(owner)]
        in_attention = any(_ATTENTION_CLASS.search(type(modules[p]).__name__) for p in chain if p in modules)
        name = f"{owner}.{entry.key.rpartition('.')[2]}" if owner else entry.key
        component = "attention" if in_attention else "buffer"
        rows.append(
            row(entry, "buffer", name, type(modules[owner]).__name__, component, _layer_of(owner, block_prefix))
        )
    rows += [row(entry, "unused", entry.key, "", "unused", None) for entry in rec.unused]
    # Blocks the architecture does not build (DeepSeek-V3's multi-token-prediction layer): listed, never counted
    mtp = getattr(model.config, "num_nextn_predict_layers", None)
    rows += [
        row(entry, "extra", entry.key, "", "multi_token_prediction" if mtp else "extra", None) for entry in rec.extra
    ]
    rows += [
        row(e, "quant_metadata", e.key, "", "quantization", _layer_of(e.key.rpartition(".")[0], block_prefix))
        for e in metadata or []
    ]
    if rows:
        inv = pd.concat([inv, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
    for column in ("layer", "experts"):
        inv[column] = inv[column].astype("Int64")
    return inv


def parameters(inv: pd.DataFrame) -> pd.DataFrame:
    """The parameter rows of an inventory (buffers from a checkpoint left out)."""
    return inv[inv["kind"] == "parameter"]


def summarize(inv: pd.DataFrame, top_k: int | None = None) -> dict[str, Any]:
    """The per-model counts under each named definition (see DEFINITIONS); top_k: experts per token, if MoE."""
    inv = parameters(inv)
    total = int(inv["numel"].sum())
    experts = inv[inv["component"] == "experts"]
    routed = int(experts["numel"].sum())
    # each stacked tensor holds E experts' copies (its first dimension); a token uses top_k of them
    per_expert = experts["numel"] // experts["experts"]
    used = int(per_expert.sum()) * top_k if top_k else routed
    head = inv[inv["is_output_embedding"]]
    head_params = int(head["numel"].sum())
    tied = bool((head["is_input_embedding"]).any())
    embedding = int(inv.loc[inv["role"] == "embedding", "numel"].sum())
    bias_named = int(inv.loc[inv["name"].str.endswith(".bias"), "numel"].sum())
    return {
        "total": total,
        "total_untied": total + (head_params if tied else 0),
        "head_params": head_params,
        "structural_tied": tied,
        "embedding": embedding,
        "non_embedding": total - embedding,
        "bias_named": bias_named,
        "bias_named_share": bias_named / total,
        "active": total - routed + used,
        "routed_expert_params": routed if top_k else None,
    }


# One line per count, side by side (STYLE.md point 3). The report prints these.
DEFINITIONS = {
    "total": "unique trainable parameters: what sum(p.numel() for p in model.parameters()) counts",
    "total_untied": "the total if the output head had its own matrix instead of the tied token embedding",
    "head_params": "the output head's matrix (vocab × width), whether it is tied or its own",
    "structural_tied": "get_output_embeddings().weight is get_input_embeddings().weight (the same tensor)",
    "embedding": "token and position embeddings plus an untied output head's matrix",
    "non_embedding": "total minus embedding (Kaplan et al. 2020's non-embedding count)",
    "bias_named": "parameters whose name ends in .bias (the course's definition; LayerNorm shifts included)",
    "bias_named_share": "bias_named / total",
    "active": "parameters one token's forward pass uses: all but the routed experts, plus k/E of each routed-expert "
    "tensor (k experts per token of E); the total for a dense model",
    "routed_expert_params": "parameters of the routed experts, all E of every layer (empty for a dense model)",
}
