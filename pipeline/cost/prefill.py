"""What the transformers engine allocates in a prefill and the decoding step after it, measured as PyTorch accounts
for it: the model run on fake tensors (torch's FakeTensorMode: shapes and dtypes, no memory, no GPU, any size), as
`generate` runs them: `model(input_ids, use_cache=True, logits_to_keep=1)` under no_grad, with scaled-dot-product
attention, then one token with the cache it returned (the prefill's outputs dropped but the cache, as generate's
loop deletes them).

live_peak() follows every storage an operator allocates and frees (a TorchDispatchMode), so its peak is the same
figure as torch.distributed._tools.mem_tracker.MemTracker's activations at its peak (the weights apart), at a
fraction of MemTracker's time; tracker_peak() runs MemTracker itself, for `hmp fit --measure` and the tests.

A model that cannot run on fake tensors (shapes that depend on values, kernels without fake implementations)
gets its reason, and the plan says its formula stands alone.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

from pipeline.cost.live import cache_bytes, live_bytes

ATTENTION = "sdpa"  # transformers' default where the model supports it
# A fused attention kernel as a serving engine runs it for every model (vLLM's FlashAttention, sinks included):
# registered in transformers' AttentionInterface, it allocates the output and a float32 log-sum-exp per query row
KERNEL = "hmp_fused_kernel"


@dataclass(frozen=True)
class Measured:
    """One prefill of batch × context tokens on fake tensors."""

    batch: int
    context: int
    activations: int  # bytes allocated at the peak beyond the weights: caches, hidden states, logits, temporaries
    cache: int  # bytes of the storages the returned cache holds (keys, values, states; a view keeps all its storage)
    decode: int | None  # the same at the peak of the next token's step (the cache grows by one token); None: failed


class Unmeasured(Exception):
    """The model cannot run its prefill on fake tensors; the message says why."""


class Runner:
    """The model on fake tensors in the compute dtype, built once for several prefills."""

    def __init__(self, model: Any, dtype: str, causal: bool, shallow: bool = True, attention: str = ATTENTION):
        """shallow: run the first two blocks of each kind (a kind: the block's modules, their shapes and its layer
        type), renumbered, the config told so; what a prefill holds beyond its cache does not grow with the depth,
        so the plan measures it on a few blocks. kept then names the blocks run (None: all)."""
        import torch
        from torch._subclasses.fake_tensor import FakeTensorMode

        if not causal and not _can_generate(model):
            raise Unmeasured("not a generating model: no prefill to measure")
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        self.source_input = getattr(model, "main_input_name", "input_ids") if self.seq2seq else None
        if self.source_input not in (None, "input_ids", "input_features"):
            raise Unmeasured(f"its encoder takes {self.source_input}, not text or a spectrogram")
        self.compute = getattr(torch, dtype)
        self.encoded: Any = None  # an encoder-decoder's encoder output, held through the generation as generate does
        self.mode = FakeTensorMode()
        try:
            fake, self.depth, self.kept = _shallow_copy(model) if shallow else (copy.deepcopy(model), None, None)
            fake_copy(fake, self.mode, getattr(torch, dtype))
        except Exception as exc:  # noqa: BLE001 - a model that cannot be faked is a reason, said in the plan
            raise Unmeasured(f"cannot run on fake tensors: {type(exc).__name__}: {first_line(exc)}") from None
        if attention == KERNEL:
            _register_kernel()
        for asked in dict.fromkeys((attention, ATTENTION)):
            try:
                fake.set_attn_implementation(asked)
                break
            except Exception:  # noqa: BLE001 - a model without it runs the attention it has
                continue
        fake.eval()  # as from_pretrained leaves it: no dropout (a training-mode run holds dropout's masks too)
        self.model = fake
        self.attention = str(getattr(fake.config, "_attn_implementation", None) or "eager")
        signature = inspect.signature(fake.forward).parameters
        self.keeps = "logits_to_keep" in signature
        self.cache_argument = "cache" if "cache" in signature else "past_key_values"  # transformers 5.x renamed it
        self.held = {t.untyped_storage()._cdata for t in [*fake.parameters(), *fake.buffers()]}
        self._seen: dict[tuple[int, int], Measured] = {}
        self.results: dict[tuple, Any] = {}  # what another use (cost.flops) worked out on it, by its own key

    def ids(self, batch: int, context: int) -> Any:
        """The prompt's token ids, made before any accounting starts (as the caller of generate holds them); an
        encoder-decoder's prompt is its decoder's, beside the encoder's input (source)."""
        import torch

        with self.mode:
            return torch.zeros((batch, context), dtype=torch.long)

    def source(self, batch: int, context: int) -> Any:
        """An encoder-decoder's input: max_source_positions tokens (else the context's), or the spectrogram of
        max_source_positions × 2 frames a Whisper-like encoder takes (its convolutions halve them); None else."""
        import torch

        if not self.seq2seq:
            return None
        config = self.model.config
        n = source_length(config, context)
        with self.mode:
            if self.source_input == "input_features":
                bins = getattr(config, "num_mel_bins", None)
                if not isinstance(bins, int):
                    raise Unmeasured("its encoder takes a spectrogram whose size its config does not give")
                return torch.zeros((batch, bins, 2 * n), dtype=self.compute)
            return torch.zeros((batch, n), dtype=torch.long)

    def prefill(self, ids: Any, source: Any = None) -> Any:
        kwargs = {"use_cache": True, **({"logits_to_keep": 1} if self.keeps else {})}
        if self.seq2seq:
            return self.model(**{self.source_input: source}, decoder_input_ids=ids, **kwargs)
        return self.model(input_ids=ids, **kwargs)

    def step(self, ids: Any, cache: Any) -> Any:
        kwargs = {"use_cache": True, self.cache_argument: cache, **({"logits_to_keep": 1} if self.keeps else {})}
        if self.seq2seq:
            return self.model(encoder_outputs=(self.encoded,), decoder_input_ids=ids, **kwargs)
        return self.model(input_ids=ids, **kwargs)

    def measure(self, batch: int, context: int, step: bool = True) -> Measured:
        """The live bytes at the peak of one prefill and, step: of the decoding step after it (memoised per size)."""
        key = (batch, context)
        if key not in self._seen or (step and self._seen[key].decode is None):
            import torch

            ids, token, source = self.ids(batch, context), self.ids(batch, 1), self.source(batch, context)
            given = [t for t in (ids, token, source) if t is not None]
            live = live_bytes(self.held | {t.untyped_storage()._cdata for t in given})
            try:
                with self.mode, live, torch.no_grad(), kernel_attention():
                    out = self.prefill(ids, source)
                    held = returned_cache(out)
                    cache, prefill_peak = cache_bytes(held), live.peak
                    self.encoded = getattr(out, "encoder_last_hidden_state", None)
                    del out  # generate keeps the cache, the encoder's output and the next token, not the rest
                    live.peak = live.now
                    decode = self._decode(token, held, live) if step else None
                    self.encoded = None
            except Exception as exc:  # noqa: BLE001 - any failure of the fake run is a reason, said in the plan
                raise Unmeasured(f"{type(exc).__name__}: {first_line(exc)}") from None
            self._seen[key] = Measured(batch, context, prefill_peak, cache, decode)
        return self._seen[key]

    def _decode(self, step: Any, held: Any, live: Any) -> int | None:
        """The live peak of one decoding step with the prefill's cache, or None where the model has no cache to
        step with or the step cannot run on fake tensors."""
        if held is None:
            return None
        try:
            self.step(step, held)
        except Exception:  # noqa: BLE001 - the prefill's figures stand; the plan says the step was not measured
            return None
        return live.peak


def runner(model: Any, dtype: str, causal: bool, attention: str = ATTENTION, prepare: Any = None) -> Runner:
    """Runner(model, dtype, causal, attention=attention) with its shallow copy, kept while model lives
    (structure.kept), so the next plan of the same built model reuses its fake copy and the sizes already measured;
    prepare(runner) runs once on a new one (a change to its fake copy that every run of that use wants)."""
    from pipeline.model import structure

    kept = structure.kept(model)
    key = ("runner", dtype, causal, attention, getattr(prepare, "__qualname__", None))
    if key not in kept:
        made = Runner(model, dtype, causal, shallow=True, attention=attention)
        if prepare is not None:
            prepare(made)
        kept[key] = made
    return kept[key]


def source_length(config: Any, context: int) -> int:
    """The tokens an encoder-decoder's encoder runs over: max_source_positions (a speech encoder's, after its
    convolutions), else as many as the context."""
    return int(getattr(config, "max_source_positions", None) or context)


def _can_generate(model: Any) -> bool:
    """A class with a generation head (a vision-language model, prompted with text alone; an encoder-decoder)."""
    try:
        return bool(model.can_generate())
    except Exception:  # noqa: BLE001 - a class without the method
        return False


def block_kinds(blocks: Any, per_layer: dict[str, list]) -> list[tuple]:
    """Each block's kind: its modules' classes, its parameters' shapes and its entries in the config's per-layer
    lists (per_layer: those lists by key). Blocks of one kind compute the same products."""
    keys = []
    for i, block in enumerate(blocks):
        shapes = tuple((name, tuple(p.shape)) for name, p in block.named_parameters())
        classes = tuple(type(m).__name__ for m in block.modules())
        keys.append((classes, shapes, tuple(str(v[i]) for v in per_layer.values())))
    return keys


def per_layer_lists(text: Any, n: int) -> dict[str, list]:
    """The config's lists with one entry per block (layer_types, a sliding window per layer, ...)."""
    return {k: v for k, v in vars(text).items() if isinstance(v, list) and len(v) == n and not k.startswith("_")}


def _shallow_copy(model: Any) -> tuple[Any, int | None, list[int] | None]:
    """A deep copy of the model that keeps the first two blocks of each kind in its generating stack, in order,
    renumbered, its config told so (only those blocks are copied: the model's own stack is lent to the copy for the
    time of it): (the copy, the depth it had, the indices kept); (a whole copy, None, None) where that keeps every
    block or no stack is found."""
    import torch

    from pipeline.cost import cache

    _, modules, path = cache.generating_stack(model)
    if path is None:
        return copy.deepcopy(model), None, None
    blocks, text = modules[path], cache.text_config(model.config)
    n = len(blocks)
    per_layer = per_layer_lists(text, n)
    kinds: dict[tuple, list[int]] = {}
    for i, key in enumerate(block_kinds(blocks, per_layer)):
        seen = kinds.setdefault(key, [])
        if len(seen) < 2:  # the first block of a stack runs on the embeddings themselves; from the second on,
            seen.append(i)  # the model's forward still holds them beside the hidden state: two of each kind
    kept = sorted(i for seen in kinds.values() for i in seen)
    if len(kept) == n:
        return copy.deepcopy(model), None, None
    parent_path, _, attr = path.rpartition(".")
    parent = modules[parent_path] if parent_path else model
    setattr(parent, attr, torch.nn.ModuleList([blocks[i] for i in kept]))
    try:
        fake = copy.deepcopy(model)
    finally:
        setattr(parent, attr, blocks)
    for new, (old, block) in enumerate(zip(kept, dict(fake.named_modules())[path], strict=True)):
        for module in block.modules():
            if getattr(module, "layer_idx", None) == old:
                module.layer_idx = new
    text = cache.text_config(fake.config)
    for key, values in per_layer.items():
        setattr(text, key, [values[i] for i in kept])
    if isinstance(getattr(text, "num_hidden_layers", None), int):
        text.num_hidden_layers = len(kept)
    return fake, n, kept


def _register_kernel() -> None:
    """KERNEL in transformers' AttentionInterface: query (batch, heads, tokens, width) in, the output (batch,
    tokens, heads, value width) out, with the log-sum-exp the kernel writes beside it and frees."""
    import torch
    from transformers import AttentionInterface

    def fused(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
        lse = query.new_empty(tuple(query.shape[:-1]), dtype=torch.float32)
        out = query.new_empty((query.shape[0], query.shape[2], query.shape[1], value.shape[-1]))
        del lse
        return out, None

    AttentionInterface.register(KERNEL, fused)


class kernel_attention:
    """Scaled-dot-product attention as the GPU kernels allocate it (FlashAttention-2, memory-efficient attention):
    the output and a float32 log-sum-exp per query row, never the T × T scores. On fake CPU tensors PyTorch picks
    its CPU kernels, which fall back to the math path (scores held) where a GPU would not: a key width other than
    the value's (multi-head latent attention), a mask. Values do not matter on fake tensors; shapes and bytes do."""

    def __enter__(self):
        import torch.nn.functional as F

        self.saved = F.scaled_dot_product_attention

        import torch

        class Kernel(torch.autograd.Function):
            """Forward: the output and the log-sum-exp (kept for the backward when one follows); backward: the
            gradients of query, key and value, as the kernels' backward returns them."""

            @staticmethod
            def forward(ctx, query, key, value):
                lse = query.new_empty((*query.shape[:-1],), dtype=torch.float32)
                out = query.new_empty((*query.shape[:-1], value.shape[-1]))
                ctx.save_for_backward(query, key, value, out, lse)
                return out

            @staticmethod
            def backward(ctx, grad):
                query, key, value, _, _ = ctx.saved_tensors
                return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)

        def sdpa(query, key, value, *args, **kwargs):
            if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
                return Kernel.apply(query, key, value)
            lse = query.new_empty((*query.shape[:-1],), dtype=torch.float32)
            out = query.new_empty((*query.shape[:-1], value.shape[-1]))
            del lse  # freed with the kernel's return, as at inference
            return out

        F.scaled_dot_product_attention = sdpa
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F

        F.scaled_dot_product_attention = self.saved
        return False


def returned_cache(out: Any) -> Any:
    """The cache a forward returned (transformers 5 names it `cache`, earlier versions `past_key_values`), or None."""
    for key in ("cache", "past_key_values"):
        value = out.get(key) if hasattr(out, "get") else None
        if value is not None:
            return value
    return None


def fake_copy(model: Any, mode: Any, compute: Any, trainable: Any = None) -> None:
    """Every parameter and buffer of a meta-device model made a fake CPU tensor, floating ones in the compute dtype
    (a parameter that requires its gradient in the trainable dtype, where one is given: LoRA's adapters); a tensor
    two modules share (a tied head) stays one tensor."""
    import torch

    made: dict[int, Any] = {}
    convert = mode.fake_tensor_converter.from_meta_and_device
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is None:
                    continue
                if id(tensor) not in made:
                    dtype = trainable if trainable is not None and tensor.requires_grad else compute
                    typed = tensor.to(dtype) if tensor.is_floating_point() else tensor
                    if typed.is_meta:
                        value = convert(mode, typed, torch.device("cpu"))
                    else:  # a tensor a model made outside the meta device (a constant table): faked as it is
                        value = mode.from_tensor(typed)
                    grad = tensor.requires_grad and value.is_floating_point()
                    made[id(tensor)] = torch.nn.Parameter(value, grad) if key in module._parameters else value
                table[key] = made[id(tensor)]


def tracker_peak(runner: Runner, batch: int, context: int) -> dict[str, int]:
    """MemTracker's own figures for one prefill: {"peak": all bytes at the peak, "parameters", "activations"}."""
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    ids, source = runner.ids(batch, context), runner.source(batch, context)
    for p in runner.model.parameters():  # MemTracker hooks every parameter's gradient, frozen ones too (Whisper's
        p.requires_grad_(p.is_floating_point())  # sinusoidal positions); under no_grad nothing more is allocated
    with runner.mode:
        tracker = MemTracker()
        tracker.track_external(runner.model)
        with tracker, torch.no_grad(), kernel_attention():
            runner.prefill(ids, source)
        peak = tracker.get_tracker_snapshot("peak")
    # the snapshot's keys are MemTracker's reference types (an enum: PARAM, BUFFER, ACT, ...) and "Total"
    device = {getattr(k, "name", k): int(v) for k, v in next(iter(peak.values())).items()}
    return {
        "peak": device["Total"],
        "parameters": device.get("PARAM", 0) + device.get("BUFFER", 0),
        "activations": device.get("ACT", 0),
    }


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""
