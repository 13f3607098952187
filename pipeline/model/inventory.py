"""The per-tensor inventory of a model, built on the meta device (no weights are ever allocated).

One row per unique parameter tensor, with:
- role and component (pipeline.model.roles: the type of the module that owns it and the model's own
  accessors first, the tensor itself last, so no module type stops a count);
- tower, block_list and layer (pipeline.model.structure: the sub-model, stack or tower that holds it, and
  its index in the block list it lies in).

Buffers (rotary frequencies, causal masks) are not parameters and are not counted.
A tied tensor has one row, under the name model.parameters() gives it, with its other names in `aliases`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.model import roles, structure

if TYPE_CHECKING:  # torch is imported lazily: only the count stage pays for it
    import torch

ROLES = tuple(roles.ROLES)
COMPONENTS = tuple(roles.COMPONENTS)
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
    "tower",
    "block_list",
    "layer",
    "experts",
    "aliases",
    "is_input_embedding",
    "is_output_embedding",
    "checkpoint_key",
    "stored_dtype",
    "bits_per_param",
]


def _owner(modules: dict, names: list[str]) -> tuple[str, str]:
    """(module path, attribute) of the owner whose type has a rule: the first name, else an alias (BERT's
    cls.predictions.bias is also cls.predictions.decoder.bias, a Linear bias). A weight-norm parametrization's
    tensors (conv.parametrizations.weight.original0) belong to the parametrized module."""
    owners = []
    for n in names:
        path, _, attr = n.rpartition(".")
        if ".parametrizations." in f".{path}.":
            head, _, rest = f".{path}".partition(".parametrizations.")
            path, attr = head.lstrip("."), rest.split(".", 1)[0]
        owners.append((path, attr))
    return next((o for o in owners if roles.has_rule(modules[o[0]], o[1])), owners[0])


def inventory(model: torch.nn.Module, name: str) -> pd.DataFrame:
    """One row per unique parameter tensor of model, with role, component, tower, layer and aliases."""
    modules = dict(model.named_modules())
    input_emb, output_emb = embeddings(model)
    input_ids = {id(p) for p in input_emb.parameters()} if input_emb is not None else set()
    output_ids = {id(p) for p in output_emb.parameters()} if output_emb is not None else set()
    lay = structure.layout(model)
    placer = roles.Placer(model, lay, modules, input_emb, output_emb)
    head_tower = "decoder" if lay.encoder_decoder else None
    if head_tower is None and input_emb is not None:
        head_tower = lay.tower_of(next((p for p, m in modules.items() if m is input_emb), ""))

    names: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(pname)

    out_path = next((p for p, m in modules.items() if m is output_emb), None) if output_emb is not None else None

    def tower(pname: str) -> str:
        path = pname.rpartition(".")[0]
        if head_tower and path == out_path:  # the head goes with the tower whose tokens it unembeds
            return head_tower
        return lay.tower_of(path)

    rows = []
    for pname, p in model.named_parameters():  # unique tensors, in the order model.parameters() gives
        module_path, attr = _owner(modules, names[id(p)])
        module = modules[module_path]
        role = roles.role(module, attr, id(p) in output_ids and id(p) not in input_ids, p)
        blocks, layer = lay.block_of(pname.rpartition(".")[0])
        towers = {tower(n) for n in names[id(p)]}
        component = placer.component(module, module_path, attr, p, role)
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
                "tower": towers.pop() if len(towers) == 1 else "shared",
                "block_list": blocks or "",
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


def embeddings(model: torch.nn.Module) -> tuple[Any, Any]:
    """The model's own accessors, get_input_embeddings() and get_output_embeddings(); None where it has none.

    Some classes have no single one (CLIPModel: a text and a vision tower) and raise NotImplementedError.
    """
    import torch

    found = []
    for accessor in (model.get_input_embeddings, model.get_output_embeddings):
        try:
            module = accessor()
        except (NotImplementedError, AttributeError):
            module = None
        found.append(module if isinstance(module, torch.nn.Module) else None)  # Perceiver's is a bare Parameter
    # an input embedding is a table (a module with a weight of its own): a vision model's patch convolution is not
    inp = found[0]
    if inp is not None and (roles.is_conv(inp) or getattr(inp, "weight", None) is None):
        inp = None
    return inp, found[1]


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


def _ancestors(path: str) -> Iterator[str]:
    """Module paths from the nearest parent to the root: a.b.c -> a.b, a, ''."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        yield ".".join(parts[:i])


def with_checkpoint(inv: pd.DataFrame, model: torch.nn.Module, rec: Any, metadata: list | None = None) -> pd.DataFrame:
    """The inventory with each parameter's checkpoint key, plus one row per checkpoint tensor that is not one.

    rec is a checkpoint.Reconciled. Buffers (kind buffer), tensors of a head the built class does not have
    (kind unused), of blocks it does not build (kind extra) and quantization metadata (scales, zero points,
    group indices: kind quant_metadata) are listed with their bytes but never counted as parameters.
    Parameter rows gain the dtype they are stored in and the bits each value takes on disk.
    """
    modules = dict(model.named_modules())
    lay = structure.layout(model)
    inv = inv.copy()
    inv["checkpoint_key"] = inv["name"].map(rec.key_of).fillna("")
    stored = {name: entries for name, entries in rec.sources.items()}
    inv["stored_dtype"] = inv["name"].map(lambda n: stored[n][0].dtype if n in stored else "")
    inv["bits_per_param"] = [
        sum(e.end - e.begin for e in stored[n]) * 8 / numel if n in stored and numel else None
        for n, numel in zip(inv["name"], inv["numel"], strict=True)
    ]

    def row(entry, kind: str, name: str, module_class: str, component: str, where: str | None) -> dict:
        blocks, layer = lay.block_of(where) if where is not None else (None, None)
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
            "tower": lay.tower_of(where) if where is not None else "",
            "block_list": blocks or "",
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
        in_attention = any(structure.is_attention(modules[p]) for p in chain if p in modules)
        name = f"{owner}.{entry.key.rpartition('.')[2]}" if owner else entry.key
        component = "attention" if in_attention else "buffer"
        rows.append(row(entry, "buffer", name, type(modules[owner]).__name__, component, owner))
    rows += [row(entry, "unused", entry.key, "", "unused", None) for entry in rec.unused]
    # Blocks the architecture does not build (DeepSeek-V3's multi-token-prediction layer): listed, never counted
    mtp = getattr(model.config, "num_nextn_predict_layers", None)
    rows += [
        row(entry, "extra", entry.key, "", "multi_token_prediction" if mtp else "extra", None) for entry in rec.extra
    ]
    rows += [row(e, "quant_metadata", e.key, "", "quantization", e.key.rpartition(".")[0]) for e in metadata or []]
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
