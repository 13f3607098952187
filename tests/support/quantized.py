"""Quantized checkpoints of a tiny Llama, written by the tests themselves: one per layout in common use.

Each file has the exact tensor names, dtypes and shapes its format's loader expects, filled with real
random data. compressed-tensors files are packed with the compressed-tensors package's own
pack_to_int32; the others follow the layouts of transformers' quantizer integrations (GPTQ and AWQ:
optimum/gptqmodel and autoawq's packing; bitsandbytes: its Params4bit/Int8Params serialisation;
block fp8: FineGrainedFP8; mxfp4: gpt-oss's *_blocks/*_scales).
"""

from __future__ import annotations

import json
from math import ceil
from pathlib import Path

# A tiny Llama: every Linear has an input width divisible by the group size (16) and by 8 (4-bit packing).
LLAMA = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
    "tie_word_embeddings": False,
}
GROUP = 16
CONFIGS = {
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": True},
    "awq": {"quant_method": "awq", "bits": 4, "group_size": GROUP, "version": "gemm", "zero_point": True},
    "compressed-pack": {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": GROUP},
                "targets": ["Linear"],
            }
        },
        "ignore": ["lm_head"],
    },
    "compressed-pack-asym": {  # asymmetric: a packed zero point beside each weight (compressed-tensors' own packing)
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "weights": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": GROUP},
                "targets": ["Linear"],
            }
        },
        "ignore": ["lm_head"],
    },
    "compressed-fp8": {
        "quant_method": "compressed-tensors",
        "format": "float-quantized",
        "config_groups": {
            "group_0": {
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "group_size": None},
                "targets": ["Linear"],
            }
        },
        "ignore": ["lm_head"],
    },
    "bnb-nf4": {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
    },
    "bnb-int8": {"quant_method": "bitsandbytes", "load_in_8bit": True},
    "fp8": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [GROUP, GROUP], "activation_scheme": "dynamic"},
}
# Tensors of a layout that real exporters may leave out: auto-round and gptqmodel write GPTQ without g_idx when
# there is no act-order (desc_act false: it is then i // group_size); older bitsandbytes wrote no weight_format.
OPTIONAL = {"gptq": {"g_idx"}, "bnb-int8": {"weight_format"}}


def linear_shapes() -> dict[str, tuple[int, int]]:
    """Every quantized Linear of the tiny Llama (lm_head stays unquantized, as the formats leave it), [out, in]."""
    d, f, h = LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["hidden_size"] // LLAMA["num_attention_heads"]
    kv = LLAMA["num_key_value_heads"] * h
    per_layer = {
        "self_attn.q_proj": (d, d),
        "self_attn.k_proj": (kv, d),
        "self_attn.v_proj": (kv, d),
        "self_attn.o_proj": (d, d),
        "mlp.gate_proj": (f, d),
        "mlp.up_proj": (f, d),
        "mlp.down_proj": (d, f),
    }
    return {
        f"model.layers.{i}.{name}": shape
        for i in range(LLAMA["num_hidden_layers"])
        for name, shape in per_layer.items()
    }


def _plain(torch) -> dict:
    """The tensors no layout quantizes: embeddings, norms, the head."""
    v, d = LLAMA["vocab_size"], LLAMA["hidden_size"]
    state = {"model.embed_tokens.weight": torch.randn(v, d), "lm_head.weight": torch.randn(v, d)}
    state["model.norm.weight"] = torch.ones(d)
    for i in range(LLAMA["num_hidden_layers"]):
        state[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(d)
        state[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(d)
    return state


def _words(torch, *shape):
    return torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32)


def _module(torch, layout: str, out: int, inp: int) -> dict:
    """One Linear's stored tensors in a layout (keys relative to the module)."""
    if layout == "gptq":  # packed along the input: 8 four-bit values per int32 row word
        return {
            "qweight": _words(torch, inp * 4 // 32, out),
            "qzeros": _words(torch, ceil(inp / GROUP), out * 4 // 32),
            "scales": torch.rand(ceil(inp / GROUP), out).half(),
            "g_idx": torch.arange(inp, dtype=torch.int32) // GROUP,
        }
    if layout == "awq":  # packed along the output
        return {
            "qweight": _words(torch, inp, out * 4 // 32),
            "qzeros": _words(torch, ceil(inp / GROUP), out * 4 // 32),
            "scales": torch.rand(ceil(inp / GROUP), out).half(),
        }
    if layout.startswith("compressed-pack"):
        from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

        codes = torch.randint(-8, 8, (out, inp), dtype=torch.int8)
        tensors = {
            "weight_packed": pack_to_int32(codes, 4),
            "weight_scale": torch.rand(out, ceil(inp / GROUP)).half(),
            "weight_shape": torch.tensor([out, inp], dtype=torch.int64),
        }
        if layout == "compressed-pack-asym":  # packed along the outputs, as PackedQuantizationCompressor does
            zero = torch.randint(-8, 8, (out, ceil(inp / GROUP)), dtype=torch.int8)
            tensors["weight_zero_point"] = pack_to_int32(zero, 4, packed_dim=0)
        return tensors
    if layout == "compressed-fp8":
        return {"weight": torch.randn(out, inp).to(torch.float8_e4m3fn), "weight_scale": torch.rand(out, 1)}
    if layout == "bnb-nf4":
        n = out * inp
        state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [out, inp], "nested_blocksize": 256}
        blob = json.dumps(state).encode()
        return {
            "weight": torch.randint(0, 256, ((n + 1) // 2, 1), dtype=torch.uint8),
            "weight.absmax": torch.randint(0, 256, (ceil(n / 64),), dtype=torch.uint8),
            "weight.quant_map": torch.randn(16),
            "weight.nested_absmax": torch.rand(1),
            "weight.nested_quant_map": torch.randn(256),
            "weight.quant_state.bitsandbytes__nf4": torch.tensor(list(blob), dtype=torch.uint8),
        }
    if layout == "bnb-int8":
        return {
            "weight": torch.randint(-127, 128, (out, inp), dtype=torch.int8),
            "SCB": torch.rand(out),
            "weight_format": torch.tensor(0, dtype=torch.uint8),
        }
    if layout == "fp8":
        return {
            "weight": torch.randn(out, inp).to(torch.float8_e4m3fn),
            "weight_scale_inv": torch.rand(ceil(out / GROUP), ceil(inp / GROUP)),
        }
    raise ValueError(layout)


def quantized_llama(folder: Path, layout: str, **overrides) -> Path:
    """A tiny Llama checkpoint folder in one quantized layout. overrides replace module tensors by key."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = _plain(torch)
    for module, (out, inp) in linear_shapes().items():
        for suffix, tensor in _module(torch, layout, out, inp).items():
            state[f"{module}.{suffix}"] = tensor.contiguous()
    for key, tensor in overrides.items():
        if tensor is None:
            state.pop(key)
        else:
            state[key] = tensor
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**LLAMA, "quantization_config": CONFIGS[layout]}, indent=1))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def module_tensors(layout: str) -> list[str]:
    """The suffixes a layout stores for every quantized Linear (besides the packed or quantized weight itself)."""
    import torch

    return [k for k in _module(torch, layout, 32, 32) if k not in ("qweight", "weight_packed", "weight")]


def float_llama(folder: Path, quantization_config: dict | None) -> Path:
    """The tiny Llama as a plain float32 checkpoint (transformers' own state dict), with the given config block."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    arch = {k: v for k, v in LLAMA.items() if k != "model_type"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **arch))
    folder.mkdir(parents=True, exist_ok=True)
    config = {**LLAMA, **({"quantization_config": quantization_config} if quantization_config else {})}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def llama_total() -> int:
    """The tiny Llama's parameters, from formulas.llama_params (the closed form, not the code under test)."""
    from pipeline.model import formulas

    return formulas.llama_params_from_config(LLAMA)
