"""Issue 29, fine-tuning: hmp fit --train against PyTorch's MemTracker over the same step of a model transformers
builds itself (AutoModelForCausalLM.from_config on the meta device, PEFT's LoRA where asked, then every tensor
faked: no memory, no GPU), run as Trainer runs a step with bf16=True and its default optimizer (adamw_torch_fused):
forward with the labels under bfloat16 autocast, backward, the fused AdamW step, the gradients set to None, from the
second step on (the optimizer's states exist). MemTracker tracks the model and the optimizer, so its peak holds the
weights, gradients, optimizer states and activations at once: the plan's peak_bytes, within 3 %.

Both run scaled-dot-product attention as the GPU kernels allocate it (pipeline.cost.prefill.kernel_attention: the
output and its log-sum-exp, gradients of query, key and value), the one piece the oracle shares with the plan:
PyTorch's CPU kernel, which a fake CPU tensor picks, takes the math path for grouped-query attention in training
and holds T × T scores there (8 MiB more for the tiny Llama at 2 × 1,024), which no GPU kernel does.
"""

from __future__ import annotations

import collections
import json

import pytest

from pipeline.answers import fit

TINY_LLAMA = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 688,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}  # fmt: skip
GPT2 = {"model_type": "gpt2", "n_layer": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def memtracker_step(config: dict, batch: int, context: int, train: str, lora: list[str] | None, checkpointing: bool):
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import AutoConfig, AutoModelForCausalLM

    from pipeline.cost.prefill import kernel_attention

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=lora, lora_dropout=0.0))
    else:
        model.requires_grad_(True)
    mode = FakeTensorMode()
    base = torch.float32 if train == "full" else torch.bfloat16
    faked: dict[int, torch.nn.Parameter] = {}  # a tied head stays the embedding's own tensor
    for module in model.modules():  # each parameter faked in its training dtype: adapters float32, the base as said
        for key, p in list(module._parameters.items()):
            if p is not None and id(p) not in faked:
                dtype = torch.float32 if p.requires_grad else base
                fake = mode.fake_tensor_converter.from_meta_and_device(mode, p.to(dtype), torch.device("cpu"))
                faked[id(p)] = torch.nn.Parameter(fake, p.requires_grad)
            if p is not None:
                module._parameters[key] = faked[id(p)]
        for key, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[key] = mode.fake_tensor_converter.from_meta_and_device(mode, b, torch.device("cpu"))
    with mode:
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
        for p in trainable:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ids = torch.zeros((batch, context), dtype=torch.long)
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker, torch.autocast("cpu", dtype=torch.bfloat16), frozen_hooks_skipped(), kernel_attention():
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return int(next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"])


class frozen_hooks_skipped:
    """MemTracker hooks the gradient of every parameter of each module it enters, which a frozen parameter (LoRA's
    base) cannot take: those hooks are skipped (a frozen parameter has no gradient to account)."""

    NAMES = ("register_hook", "register_post_accumulate_grad_hook")

    def __enter__(self):
        import torch

        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

        def skipping(original):
            def register(tensor, hook):
                if not tensor.requires_grad:
                    return torch.utils.hooks.RemovableHandle(collections.OrderedDict())
                return original(tensor, hook)

            return register

        for name, original in self.saved.items():
            setattr(torch.Tensor, name, skipping(original))

    def __exit__(self, *exc):
        import torch

        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize(
    "config,train,lora,checkpointing",
    [
        (GPT2, "full", None, False),
        (GPT2, "full", None, True),
        (TINY_LLAMA, "lora", ["q_proj", "v_proj"], False),
        (TINY_LLAMA, "lora", ["q_proj", "v_proj"], True),
    ],
    ids=["gpt2-full", "gpt2-full-checkpointing", "llama-lora", "llama-lora-checkpointing"],
)
def test_a_fine_tuning_steps_peak_is_memtrackers(tmp_path, config, train, lora, checkpointing):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    options = {"context": 1024, "batch": 2, "train": train, "checkpointing": checkpointing}
    if lora:
        options["lora_targets"] = tuple(lora)
    r = fit.plan(str(path), fit.FitOptions(**options)).as_json()
    assert r["activations_from"].startswith("measured")
    oracle = memtracker_step(config, 2, 1024, train, lora, checkpointing)
    assert abs(r["peak_bytes"] - oracle) <= 0.03 * oracle, (r["peak_bytes"], oracle)
    # the activations are most of it: the check is of them, not of the weights
    assert r["activation_bytes"] > r["peak_bytes"] / 3


def test_qlora_plans_nf4_weights_and_the_lora_steps_activations(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_LLAMA))
    lora = fit.plan(str(path), fit.FitOptions(context=512, train="lora")).as_json()
    qlora = fit.plan(str(path), fit.FitOptions(context=512, train="qlora")).as_json()
    assert qlora["activation_bytes"] == lora["activation_bytes"]  # the same step, the base frozen in bf16
    assert qlora["weights_bytes"] < lora["weights_bytes"]  # the linear matrices in NF4 (QLoRA's 4.127 bits)
