"""What one fine-tuning step allocates, measured as PyTorch accounts for it: the model on fake tensors (no memory, no
GPU, any size), run as transformers' Trainer runs a step with `bf16=True` and its default optimizer
(`adamw_torch_fused`): the forward under bfloat16 autocast with the labels (the loss), the backward, the fused
AdamW step, the gradients set to None. The optimizer's states exist before the step, as from the second step on.

- full fine-tuning: every weight trains, held in float32 (the master weights of mixed precision), with a float32
  gradient and two float32 AdamW states each (4 + 4 + 8 = 16 bytes per parameter: ZeRO's count, Rajbhandari et
  al. 2020, section 3);
- LoRA and QLoRA: PEFT's LoRA adapters on the target layers (float32, as PEFT's autocast_adapter_dtype keeps
  them), every base weight frozen in the compute dtype. QLoRA's base weights are bitsandbytes' NF4, which has no
  fake-tensor kernels: its step is measured with the base in bfloat16 and its weights planned as NF4 apart;
- activation checkpointing: the model's own gradient_checkpointing_enable().

The live bytes at the step's peak beyond the weights and the optimizer's states (gradients, what the forward
saves for the backward, autocast's bfloat16 copies of the weights, temporaries) are the plan's figure; the
gradients are a line of their own, so the activations are what remains.
"""

from __future__ import annotations

import copy
from typing import Any

from pipeline.cost import prefill
from pipeline.cost.live import live_bytes


def step_peak(model: Any, batch: int, context: int, train: str, lora: tuple[list[str], int] | None,
              checkpointing: bool) -> tuple[int, int]:  # fmt: skip
    """(live bytes at the step's peak beyond the weights and the optimizer's states, the gradients' bytes)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    try:
        fake = copy.deepcopy(model)
        if lora is not None:  # on the meta device, before the tensors are faked (a fake tensor cannot be moved)
            fake = _adapted(fake, *lora)
        else:
            for p in fake.parameters():
                p.requires_grad_(p.is_floating_point())
        master = torch.float32 if train == "full" else torch.bfloat16
        prefill.fake_copy(fake, mode, master, trainable=torch.float32)
        with mode:
            try:
                fake.set_attn_implementation(prefill.ATTENTION)
            except Exception:  # noqa: BLE001, S110 - a model without sdpa runs the attention it has
                pass
            if checkpointing:
                fake.gradient_checkpointing_enable()
            fake.train()
            trainable = [p for p in fake.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
            for p in trainable:  # the states of AdamW exist from the second step on
                p.grad = torch.zeros_like(p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ids = torch.zeros((batch, context), dtype=torch.long)
        held = [*fake.parameters(), *fake.buffers(), ids]
        held += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
        live = live_bytes({t.untyped_storage()._cdata for t in held})
        with mode, live, torch.autocast("cpu", dtype=torch.bfloat16), prefill.kernel_attention():
            loss = fake(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the fake step is a reason, said in the plan
        raise prefill.Unmeasured(f"{type(exc).__name__}: {prefill.first_line(exc)}") from None
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    return live.peak, gradients


def _adapted(model: Any, targets: list[str], rank: int) -> Any:
    """PEFT's LoRA on the targets, as get_peft_model adds it (adapters in float32, the base frozen)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0))
