"""What one token of a forward computes: FLOPs counted two ways that tests hold equal.

The headline convention: 2 FLOPs per multiply-add of every matrix a token passes through (the attention
projections; the MLP, or the router, the k routed experts it is sent to and any shared expert; the output head, even
when it is tied to the embedding, whose lookup is no product), plus, per attention layer, the scores and the
weighted values over the keys it attends: 2 · keys · heads · (query-key width + value width) per token, the keys
being the whole context (FlopCounterMode's and PaLM's count of a T × T attention, causal mask or not), or the window
of a sliding layer. Norms, activations, rotary embeddings and softmax are not counted (FlopCounterMode counts
products only, and so does every convention below).

- closed_form: from the exact inventory (pipeline.model): each matrix's size by its component, the routed experts'
  at k of E, and the attention layers' widths from their modules;
- measured: torch.utils.flop_counter.FlopCounterMode over the model's own forward on fake tensors (no memory),
  with the two things it cannot count there counted as the model computes them on a GPU: attention (on fake CPU
  tensors PyTorch's CPU kernel is not one FlopCounterMode knows: a registered attention function counts its two
  products instead, over the window where the layer slides) and a mixture's experts (their token-by-expert loop
  depends on the router's values, which fake tensors do not have: each token is sent through exactly k experts,
  as products of the same sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLOPS_ATTENTION = "hmp_flops_attention"  # the attention function registered in transformers' AttentionInterface


@dataclass(frozen=True)
class Forward:
    """FLOPs per token of one forward, by component."""

    attention_projections: int
    attention_scores: int  # scores and weighted values over the keys attended
    mlp: int  # a dense MLP (and whatever other matrix is in the generating stack)
    router: int
    experts: int  # the k routed experts a token is sent to
    shared_experts: int
    head: int

    @property
    def total(self) -> int:
        return (self.attention_projections + self.attention_scores + self.mlp + self.router + self.experts
                + self.shared_experts + self.head)  # fmt: skip


def closed_form(inv: Any, row: dict, attention: list[tuple[int, int, int, int | None]], context: int) -> Forward:
    """From the inventory's parameter rows of the generating stack and its output head, and per attention layer
    (query heads, query-key width, value width, window or None)."""
    p = inv[(inv["kind"] == "parameter")]
    matrices = p[p["role"] == "matrix"]
    stack = matrices[matrices["tower"].fillna("text").isin(["text", "decoder"])]
    by = stack.groupby("component")["numel"].sum().to_dict()
    k, n = row.get("experts_per_token"), row.get("n_experts")
    routed = int(by.pop("experts", 0))
    experts = routed * int(k) // int(n) if routed and k and n else routed
    head = p[p["is_output_embedding"].astype(bool)]
    scores = sum(2 * min(context, w or context) * h * (dqk + dv) for h, dqk, dv, w in attention)
    attn = int(by.pop("attention", 0))
    router = int(by.pop("router", 0))
    shared = int(by.pop("shared_experts", 0))
    rest = int(sum(by.pop(c) for c in list(by) if c != "output_head"))
    return Forward(2 * attn, int(scores), 2 * rest, 2 * router, 2 * experts, 2 * shared, 2 * int(head["numel"].sum()))


def attention_layers(model: Any, config: Any) -> list[tuple[int, int, int, int | None]]:
    """(query heads, query-key width, value width, window) of each self-attention layer of the generating stack,
    read from its attention module (its projections' sizes), the window from the layer's config."""
    from pipeline.cost import cache
    from pipeline.model import structure

    lay, modules, stack = cache.generating_stack(model)
    if stack is None:
        return []
    layers = cache.layers(model, config, True)
    out = []
    for i, layer in enumerate(layers):
        if not layer.kv_per_token and not _attends(modules, f"{stack}.{i}", lay):
            continue
        found = [m for p, m in modules.items() if p.startswith(f"{stack}.{i}.") and structure.is_attention(m)
                 and not any((p + ".").startswith(c + ".") for c in lay.cross)]  # fmt: skip
        if found:
            out.append((*_widths(found[0], cache.text_config(config)), layer.window))
    return out


def _attends(modules: dict, path: str, lay: Any) -> bool:
    from pipeline.model import structure

    return any(p.startswith(path + ".") and structure.is_attention(m) and not any(
        (p + ".").startswith(c + ".") for c in lay.cross) for p, m in modules.items())  # fmt: skip


def _widths(module: Any, text: Any) -> tuple[int, int, int]:
    """(query heads, query-key width, value width) of one attention module."""
    heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
    heads = heads or getattr(text, "num_attention_heads", None)
    qk = getattr(module, "qk_head_dim", None) or getattr(module, "head_dim", None)
    v = getattr(module, "v_head_dim", None) or qk
    if not qk:
        from pipeline.cost.cache import head_dim

        qk = v = head_dim(text)
    return int(heads), int(qk), int(v)


def scans(model: Any, config: Any) -> bool:
    """The generating stack has state-space or recurrent mixers (their reference scans run token by token)."""
    from pipeline.cost import cache

    return any(layer.mixer for layer in cache.layers(model, config, True))


def measured(model: Any, context: int, batch: int = 1) -> int:
    """FLOPs per token of the model's own forward over batch × context tokens, every token's logits included, as
    FlopCounterMode counts it on fake tensors with attention and experts counted as above."""
    import copy

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.cost.prefill import fake_copy
    from pipeline.model import moe

    _register_attention()
    mode = FakeTensorMode()
    fake = copy.deepcopy(model)
    fake_copy(fake, mode, torch.bfloat16)
    fake.set_attn_implementation(FLOPS_ATTENTION)
    fake.eval()
    modules = dict(fake.named_modules())
    top_k = moe.settings(fake.config, moe.structure(fake), "model", modules)[1]
    for path in moe.structure(fake).experts:
        _route_exactly(modules[path], int(top_k or 1))
    with mode:
        ids = torch.zeros((batch, context), dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with mode, counter, torch.no_grad():
        fake(input_ids=ids, use_cache=False)
    return int(counter.get_total_flops()) // (batch * context)


def _register_attention() -> None:
    """FLOPS_ATTENTION: the two products of attention, query × keys and scores × values, as fake bmm's that
    FlopCounterMode counts, over the window of a sliding layer; its output shaped as transformers expects."""
    import torch
    from transformers import AttentionInterface

    def products(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
        b, h, t, dqk = query.shape
        keys = key.shape[-2]
        window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
        if isinstance(window, int) and 0 < window < keys:
            keys = window
        dv = value.shape[-1]
        scores = torch.bmm(query.reshape(b * h, t, dqk), query.new_empty((b * h, dqk, keys)))
        torch.bmm(scores, query.new_empty((b * h, keys, dv)))
        return query.new_empty((b, t, h, dv)), None

    AttentionInterface.register(FLOPS_ATTENTION, products)


def _route_exactly(experts: Any, k: int) -> None:
    """The experts module's forward replaced: each token through exactly k experts, as one product per stacked
    matrix of one expert's size (E × out × in: the token's k rows through out × in), the output zeros."""
    import torch

    stacked = [p for p in experts.parameters(recurse=False) if p.dim() == 3]
    hidden = int(getattr(getattr(experts, "config", None), "hidden_size", 0) or 0)

    def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        width = hidden or hidden_states.shape[-1]
        tokens = hidden_states.numel() // width
        for p in stacked:
            _, out, inp = p.shape
            torch.mm(hidden_states.new_empty((tokens * k, inp)), p[0].t())
        return torch.zeros_like(hidden_states.reshape(-1, width)).reshape(hidden_states.shape)

    experts.forward = forward


FLOPS_COLUMNS = ["model", "context", "forward_flops_per_token", "attention_projections", "attention_scores", "mlp",
                 "router", "experts", "shared_experts", "head", "other_products", "training_flops_per_token",
                 "six_n_flops_per_token", "measured"]  # fmt: skip


def curve(name: str, inv: Any, row: dict, model: Any, config: Any, settings: dict) -> Any:
    """FLOPs per token against the context for the pipeline's sweep (results/flops.csv): powers of two from 128 up
    to the context of the cost settings (0: the model's own positions), and that one; the closed form at each, the
    products it does not name measured once with FlopCounterMode at the longest (a model that scans: at 64 tokens).
    Empty for a model that does not generate from its own context (an encoder-decoder: not counted yet)."""
    import pandas as pd

    from pipeline.cost import cache

    limit, _ = cache.max_positions(model, config)
    asked = int(settings.get("context") or 0)
    top = min(asked, limit) if asked and limit else asked or limit
    if not top or getattr(config, "is_encoder_decoder", False) or not cache.layers(model, config, True):
        return pd.DataFrame(columns=FLOPS_COLUMNS)
    layers = attention_layers(model, config)
    at = min(top, 64) if scans(model, config) else top
    try:
        other = measured(model, at) - closed_form(inv, row, layers, at).total
        was_measured = True
    except Exception:  # noqa: BLE001 - a graph that cannot run on fake tensors: the closed form stands
        other, was_measured = 0, False
    rows = []
    for n in sorted({*(1 << k for k in range(7, 25) if 1 << k < top), top}):
        f = closed_form(inv, row, layers, n)
        total = f.total + other
        rows.append({"model": name, "context": n, "forward_flops_per_token": total, **vars(f),
                     "other_products": other, "training_flops_per_token": 3 * total,
                     "six_n_flops_per_token": 6 * int(row["total"]),
                     "measured": was_measured and n == top})  # fmt: skip
    return pd.DataFrame(rows, columns=FLOPS_COLUMNS)
