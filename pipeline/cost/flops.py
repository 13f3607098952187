"""What one token of a forward computes: FLOPs counted two ways that tests hold equal.

The headline convention: 2 FLOPs per multiply-add of every matrix a token passes through (the attention
projections; the MLP, or the router, the k routed experts it is sent to and any shared expert; the output head, even
when it is tied to the embedding, whose lookup is no product), plus, per attention layer, the scores and the
weighted values over the keys it attends: 2 · keys · heads · (query-key width + value width) per token, the keys
being the whole context (FlopCounterMode's and PaLM's count of a T × T attention, causal mask or not), or the window
of a sliding layer. A state-space or recurrent mixer: its projections, its short causal convolution (one output per
token) and, for Mamba, the readout of its d_inner × d_state state. An encoder-decoder: its encoder per source token
(and a speech encoder's convolution stem), the decoder's cross-attention keys and values once per source token, and
per target token the decoder, its cross-attention's queries, outputs and scores over the source. Norms, activations,
rotary embeddings, softmax and a scan's elementwise updates are not counted (FlopCounterMode counts products only).

- closed_form: from the exact inventory (pipeline.model): each matrix's size by its component, the routed experts'
  at k of E, and the attention layers' widths from their modules;
- measured: torch.utils.flop_counter.FlopCounterMode over the model's own forward on fake tensors (no memory),
  with the two things it cannot count there counted as the model computes them on a GPU: attention (on fake CPU
  tensors PyTorch's CPU kernel is not one FlopCounterMode knows: a registered attention function counts its two
  products instead, over the window where the layer slides) and a mixture's experts (their token-by-expert loop
  depends on the router's values, which fake tensors do not have: each token is sent through exactly k experts,
  as products of the same sizes). The model runs as pipeline.cost.prefill's shallow copy (two blocks of each
  kind), each block counted as often as its kind occurs, so the largest models count in about a second. What the
  closed form does not name (a chunked scan's products: Mamba-2's, a gated delta rule's) is the "other products".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.model import structure

FLOPS_ATTENTION = "hmp_flops_attention"  # the attention function registered in transformers' AttentionInterface


@dataclass(frozen=True)
class Forward:
    """FLOPs per token of one forward, by component (an encoder-decoder's: per token of its decoder)."""

    attention_projections: int
    attention_scores: int  # scores and weighted values over the keys attended
    mlp: int  # a dense MLP (and whatever other matrix is in the generating stack)
    router: int
    experts: int  # the k routed experts a token is sent to
    shared_experts: int
    head: int
    state_space: int = 0  # the projections of state-space and recurrent mixers (Mamba's in/x/dt/out, linear attention)
    convolutions: int = 0  # their short causal convolutions: 2 · channels · kernel per token (one output each)
    scan: int = 0  # Mamba's readout of its d_inner × d_state state per token (C · h, a product: 2 · d_inner · d_state)
    cross_attention: int = (
        0  # an encoder-decoder's cross-attention: query and output projections, scores over the source
    )

    @property
    def total(self) -> int:
        return sum(vars(self).values())


@dataclass(frozen=True)
class Source:
    """An encoder-decoder's FLOPs per token of its source: the encoder's, and the decoder's cross-attention keys and
    values, projected once from the encoder's output."""

    attention_projections: int
    attention_scores: int
    mlp: int  # and whatever other matrix the encoder holds
    cross_keys_values: int
    convolutions: int = 0  # a speech encoder's convolution stem over its frames, per source token

    @property
    def total(self) -> int:
        return sum(vars(self).values())


CROSS_KV = ("k", "v", "k_proj", "v_proj", "key", "value")  # the cross-attention projections that read the source


def _matrices(inv: Any) -> tuple[Any, Any]:
    """(the parameter rows, the matrices' rows with a column 'reads_source': a cross-attention key or value)."""
    p = inv[(inv["kind"] == "parameter")]
    m = p[p["role"] == "matrix"].copy()
    module = m["name"].str.rsplit(".", n=2).str[-2]
    m["reads_source"] = (m["component"] == "cross_attention") & module.isin(CROSS_KV)
    return p, m


def closed_form(inv: Any, row: dict, attention: list[tuple[int, int, int, int | None]], context: int,
                cross: list[tuple[int, int, int, int | None]] = (), source: int = 0) -> Forward:  # fmt: skip
    """From the inventory's parameter rows of the generating stack and its output head, and per attention layer
    (query heads, query-key width, value width, window or None); an encoder-decoder's cross-attention layers attend
    the source's tokens."""
    p, matrices = _matrices(inv)
    towers = p["tower"].fillna("text").isin(["text", "decoder"])
    stack = matrices[matrices["tower"].fillna("text").isin(["text", "decoder"]) & ~matrices["reads_source"]]
    by = stack.groupby("component")["numel"].sum().to_dict()
    k, n = row.get("experts_per_token"), row.get("n_experts")
    routed = int(by.pop("experts", 0))
    experts = routed * int(k) // int(n) if routed and k and n else routed
    head = p[p["is_output_embedding"].astype(bool)]
    scores = sum(2 * min(context, w or context) * h * (dqk + dv) for h, dqk, dv, w in attention)
    cross_scores = sum(2 * source * h * (dqk + dv) for h, dqk, dv, _ in cross)
    convs = p[towers & (p["role"] == "conv_kernel")]["numel"].sum()
    mamba = p[towers & (p["role"] == "state_space") & p["name"].str.endswith("A_log") & p["shape"].str.contains("x")]
    named = {c: int(by.pop(c, 0)) for c in ("attention", "router", "shared_experts", "state_space", "cross_attention")}
    rest = int(sum(by.pop(c) for c in list(by) if c != "output_head"))
    cross_attention = 2 * named["cross_attention"] + int(cross_scores)
    return Forward(2 * named["attention"], int(scores), 2 * rest, 2 * named["router"], 2 * experts,
                   2 * named["shared_experts"], 2 * int(head["numel"].sum()), 2 * named["state_space"],
                   2 * int(convs), 2 * int(mamba["numel"].sum()), cross_attention)  # fmt: skip


def padding(inv: Any) -> int:
    """FLOPs per sequence of the k − 1 outputs a reference causal convolution computes beyond one per token (it pads
    both ends, then drops them; a causal kernel, causal_conv1d's, does not): 2 · channels · kernel · (kernel − 1)
    per convolution. FlopCounterMode counts them on the reference path; the headline does not."""
    p = inv[(inv["kind"] == "parameter") & (inv["role"] == "conv_kernel")]
    p = p[p["tower"].fillna("text").isin(["text", "decoder"])]
    kernel = p["shape"].str.rsplit("x", n=1).str[-1].astype(int)
    return int((2 * p["numel"] * (kernel - 1)).sum())


def source_form(inv: Any, attention: list[tuple[int, int, int, int | None]], source: int, stem: int = 0) -> Source:
    """An encoder-decoder's FLOPs per source token: the encoder's matrices and self-attention over the source, and
    the decoder's cross-attention keys and values; stem: its convolutions' FLOPs over the whole source (conv_stem)."""
    _, matrices = _matrices(inv)
    encoder = matrices[matrices["tower"] == "encoder"]
    projections = int(encoder[encoder["component"] == "attention"]["numel"].sum())
    rest = int(encoder["numel"].sum()) - projections
    scores = sum(2 * min(source, w or source) * h * (dqk + dv) for h, dqk, dv, w in attention)
    kv = 2 * int(matrices[matrices["reads_source"]]["numel"].sum())
    return Source(2 * projections, int(scores), 2 * rest, kv, stem // source if source else 0)


def conv_stem(model: Any, frames: int) -> int:
    """The FLOPs of a speech encoder's 1-D convolutions in order over frames input frames (2 per multiply-add of
    each output position: out = ⌊(in + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1, torch.nn.Conv1d's)."""
    import torch

    from pipeline.cost import cache

    lay, modules, _ = cache.generating_stack(model)
    total = 0
    for path, m in modules.items():
        if isinstance(m, torch.nn.Conv1d) and lay.tower_of(path) == "encoder":
            (k,), (s,), (d,) = m.kernel_size, m.stride, m.dilation
            pad = m.padding[0] if isinstance(m.padding, tuple) else 0
            frames = (frames + 2 * pad - d * (k - 1) - 1) // s + 1
            total += 2 * m.weight.numel() * frames
    return total


def attention_layers(model: Any, config: Any) -> list[tuple[int, int, int, int | None]]:
    """(query heads, query-key width, value width, window) of each self-attention layer of the generating stack,
    read from its attention module (its projections' sizes), the window from the layer's config."""
    from pipeline.cost import cache

    lay, modules, stack = cache.generating_stack(model)
    if stack is None:
        return []
    text = cache.text_config(config)
    out = []
    inside = structure.in_blocks(modules, stack)
    for i, layer in enumerate(cache.layers(model, config, True)):  # a layer without attention has no module
        found = _attention(inside[i], lambda p: not _inside(p, lay.cross))
        if found is not None:
            out.append((*_widths(found, text), layer.window))
    return out


def cross_layers(model: Any) -> list[tuple[int, int, int, None]]:
    """An encoder-decoder's cross-attention layers in its decoder: (query heads, query-key width, value width, None)."""
    from pipeline.cost import cache

    lay, modules, stack = cache.generating_stack(model)
    if stack is None or not lay.encoder_decoder:
        return []
    text = cache.text_config(model.config)
    found = [_attention(block, lambda p: _inside(p, lay.cross)) for block in structure.in_blocks(modules, stack)]
    return [(*_widths(m, text), None) for m in found if m is not None]


def encoder_layers(model: Any) -> list[tuple[int, int, int, None]]:
    """An encoder-decoder's encoder self-attention layers: (query heads, query-key width, value width, None)."""
    from pipeline.cost import cache

    lay, modules, _ = cache.generating_stack(model)
    if not lay.encoder_decoder:
        return []
    stacks = [b for b in lay.block_lists if lay.tower_of(b) == "encoder"]
    if not stacks:
        return []
    stack = max(stacks, key=lambda b: len(modules[b]))
    text = cache.text_config(model.config)
    found = [_attention(block, lambda p: not _inside(p, lay.cross)) for block in structure.in_blocks(modules, stack)]
    return [(*_widths(m, text), None) for m in found if m is not None]


def _inside(path: str, parents: set[str]) -> bool:
    return any((path + ".").startswith(c + ".") for c in parents)


def _attention(inside: list[tuple[str, Any]], keep: Any) -> Any:
    """The attention module of one block (its modules inside, as structure.in_blocks gives them) that keep(path)
    accepts, the one that knows its heads where several nest."""
    found = [m for p, m in inside if structure.is_attention(m) and keep(p)]
    knows = [m for m in found if getattr(m, "num_heads", None) or getattr(m, "num_attention_heads", None)
             or getattr(m, "n_heads", None)]  # fmt: skip
    return (knows or found or [None])[0]


def _widths(module: Any, text: Any) -> tuple[int, int, int]:
    """(query heads, query-key width, value width) of one attention module."""
    heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
    heads = heads or getattr(module, "n_heads", None)
    heads = heads or getattr(text, "num_attention_heads", None)
    qk = (
        getattr(module, "qk_head_dim", None)
        or getattr(module, "head_dim", None)
        or getattr(module, "key_value_proj_dim", None)
    )
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
    """FLOPs of the model's own forward over batch × context tokens (an encoder-decoder's: of its decoder, beside its
    encoder's source, pipeline.cost.prefill.source_length), every token's logits included, as FlopCounterMode counts
    it on fake tensors with attention and experts counted as above. Run on the first two blocks of each kind
    (pipeline.cost.prefill.Runner's shallow copy), each block counted as many times as its kind occurs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.cost import prefill

    _register_attention()
    runner = prefill.runner(model, "bfloat16", True, attention=FLOPS_ATTENTION, prepare=_routed)
    if ("flops", context, batch) in runner.results:  # this size counted before (the model is kept: hmp serve)
        return runner.results[("flops", context, batch)]
    fake = runner.model
    ids, source = runner.ids(batch, context), runner.source(batch, context)
    inputs = {runner.source_input: source, "decoder_input_ids": ids} if runner.seq2seq else {"input_ids": ids}
    counter = FlopCounterMode(display=False)
    with runner.mode, counter, torch.no_grad():
        fake(**inputs, use_cache=False)
    total = int(counter.get_total_flops())
    if runner.kept is not None:
        total += _unkept(model, type(fake).__name__, runner.kept, counter.get_flop_counts())
    runner.results[("flops", context, batch)] = total
    return total


def _routed(runner: Any) -> None:
    """The fake copy's experts routed exactly (_route_exactly), once per runner."""
    from pipeline.model import moe

    fake, found = runner.model, moe.structure(runner.model)
    top_k = moe.settings(fake.config, found, "model", modules := dict(fake.named_modules()))[1]
    for path in found.experts:
        _route_exactly(modules[path], int(top_k or 1))


def _unkept(model: Any, root: str, kept: list[int], counts: dict) -> int:
    """The FLOPs of the blocks the shallow copy left out: each as its kind's first kept block counted."""
    from pipeline.cost import cache, prefill

    _, modules, stack = cache.generating_stack(model)
    blocks = modules[stack]
    keys = prefill.block_kinds(blocks, prefill.per_layer_lists(cache.text_config(model.config), len(blocks)))
    per_block = []
    for j in range(len(kept)):
        name = f"{root}.{stack}.{j}"
        if name not in counts:
            raise KeyError(f"FlopCounterMode saw no module {name}: the shallow copy's blocks cannot be scaled")
        per_block.append(sum(counts[name].values()))
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return sum(per_block[kept.index(first[key])] for i, key in enumerate(keys) if i not in kept)


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

    def forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = hidden_states.numel() // hidden_states.shape[-1]  # its input's width: a latent one (Nemotron 3)
        for p in stacked:
            _, out, inp = p.shape
            torch.mm(hidden_states.new_empty((tokens * k, inp)), p[0].t())
        return torch.zeros_like(hidden_states)

    experts.forward = forward


FLOPS_COLUMNS = ["model", "context", "forward_flops_per_token", "attention_projections", "attention_scores", "mlp",
                 "router", "experts", "shared_experts", "head", "state_space", "convolutions", "scan",
                 "cross_attention", "source_tokens", "per_source_token", "other_products", "training_flops_per_token",
                 "six_n_flops_per_token", "measured"]  # fmt: skip


SCANNED = 64  # a model with state-space or recurrent mixers is measured at most this long: its scans go token by token


@dataclass(frozen=True)
class Counted:
    """One model's forward at one context: the closed forms and what FlopCounterMode counts beyond them."""

    forward: Forward  # per token (of an encoder-decoder's decoder)
    source: Source | None  # an encoder-decoder's, per source token
    source_tokens: int
    other: int  # FLOPs of the whole forward (batch × tokens) that the closed forms do not name
    measured_at: int | None  # the context FlopCounterMode ran at (None: not run, or could not run)
    unmeasured: str | None  # why it could not
    layers: list  # the self-attention layers (attention_layers)

    def total(self, context: int, batch: int) -> int:
        """FLOPs of the forward of batch × context tokens (and an encoder-decoder's source)."""
        return batch * (context * self.forward.total + self.source_tokens * (self.source.total if self.source else 0))


def counted(
    inv: Any, row: dict, model: Any, config: Any, context: int, batch: int = 1, measure: bool = True
) -> Counted:
    """The closed forms at the context and, measure: FlopCounterMode's count of the model's own forward beyond them
    (at most SCANNED tokens for a model that scans, scaled to the context per token)."""
    from pipeline.cost import prefill

    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    speech = getattr(model, "main_input_name", None) == "input_features"
    if seq2seq and getattr(model, "main_input_name", "input_ids") not in ("input_ids", "input_features"):
        raise PipelineError(f"its encoder takes {model.main_input_name}, not text or a spectrogram: its FLOPs are not "
                            "counted")  # fmt: skip
    layers = attention_layers(model, config)
    cross, encoder = (cross_layers(model), encoder_layers(model)) if seq2seq else ([], [])

    def at(n: int) -> Counted:
        s = prefill.source_length(config, n) if seq2seq else 0
        stem = conv_stem(model, 2 * s) if speech else 0  # the spectrogram's frames, as prefill.Runner.source makes
        src = source_form(inv, encoder, s, stem) if seq2seq else None
        return Counted(closed_form(inv, row, layers, n, cross, s), src, s, 0, None, None, layers)

    here = at(context)
    if not measure:
        return here
    n = min(context, SCANNED) if scans(model, config) else context
    there = at(n)
    try:
        other = measured(model, n, batch) - there.total(n, batch) - batch * padding(inv)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot run on fake tensors: the closed form stands
        return dataclasses.replace(here, unmeasured=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    scaled = other * (context + here.source_tokens) // (n + there.source_tokens)  # as much per token
    return dataclasses.replace(here, other=scaled, measured_at=n)


def curve(name: str, inv: Any, row: dict, model: Any, config: Any, settings: dict) -> Any:
    """FLOPs per token against the context for the pipeline's sweep (results/flops.csv): powers of two from 128 up
    to the context of the cost settings (0: the model's own positions), and that one; the closed form at each, the
    products it does not name measured once with FlopCounterMode at the longest (a model that scans: at 64 tokens).
    An encoder-decoder's row is per token of its source and its target (source_tokens; per_source_token), its
    components the decoder's per target token. Empty for a model that generates nothing."""
    import pandas as pd

    from pipeline.cost import cache

    limit, _ = cache.max_positions(model, config)
    asked = int(settings.get("context") or 0)
    top = min(asked, limit) if asked and limit else asked or limit
    if not top or not cache.layers(model, config, True):
        return pd.DataFrame(columns=FLOPS_COLUMNS)
    try:
        longest = counted(inv, row, model, config, top)
    except PipelineError:  # an encoder-decoder whose encoder reads neither text nor a spectrogram: hmp flops says so
        return pd.DataFrame(columns=FLOPS_COLUMNS)
    rows = []
    for n in sorted({*(1 << k for k in range(7, 25) if 1 << k < top), top}):
        c = counted(inv, row, model, config, n, measure=False)
        other = longest.other * (n + c.source_tokens) // (top + longest.source_tokens)
        total = round((c.total(n, 1) + other) / (n + c.source_tokens))
        rows.append({"model": name, "context": n, "forward_flops_per_token": total, **vars(c.forward),
                     "source_tokens": c.source_tokens, "per_source_token": c.source.total if c.source else 0,
                     "other_products": round(other / (n + c.source_tokens)), "training_flops_per_token": 3 * total,
                     "six_n_flops_per_token": 6 * int(row["total"]),
                     "measured": longest.measured_at is not None and n == top})  # fmt: skip
    return pd.DataFrame(rows, columns=FLOPS_COLUMNS)
