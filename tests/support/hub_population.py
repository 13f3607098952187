"""A deterministic population of synthetic Hub repositories for tests/support/hub.py's LocalHub, with what each
should count to.

population(n, seed) builds n repositories in seconds: the files' headers come from closed-form key lists of each
family (the names, dtypes and shapes a real save_pretrained or published checkpoint of that family stores), their
data regions are Sparse (zeros, never held in memory), and config.json is the family's published config with the
dimensions set. Families:

- gpt2: the Hub's GPT-2 layout (openai-community/gpt2: no `transformer.` prefix, the h.N.attn.bias causal-mask
  buffers stored, the head tied to wte), F32.
- llama: Llama-style dense decoders, tied and untied, with and without grouped-query attention.
- mixtral: Mixtral-style sparse MoE, per-expert keys block_sparse_moe.experts.E.w1/w2/w3 as Mistral published them.
- qwen2_moe: Qwen1.5-MoE-style MoE with a shared expert and its sigmoid gate (mlp.shared_expert*, q/k/v biases).
- bnb_nf4: a Llama quantized by bitsandbytes 4-bit (nf4, double quantization), as transformers saves it.
- fp8: a Llama in block-scaled fp8 (FineGrainedFP8: F8_E4M3 weights, weight_scale_inv per 128×128 block).
- gguf: a Llama in llama.cpp's GGUF (F32, F16, Q8_0; some split in two), written by the gguf package's GGUFWriter.

Any of the safetensors families may be sharded (model-0000i-of-0000k.safetensors with model.safetensors.index.json
carrying metadata.total_size and total_parameters). Fine-tune variants share one config.json byte for byte under
other names, other shard splits and other dtypes (F32, BF16, F16). A few carry real published dimensions: GPT-2
small, TinyLlama-1.1B, Llama-2-7B, Mixtral-8x7B and Qwen1.5-MoE-A2.7B.

Crafted repositories must each be refused with a reason (CRAFTED lists the kinds), and list entries may name a
repository (served=False) or a revision the hub does not have. `hmp count` on a local copy refuses every crafted
kind but the two index-total ones: it does not read metadata.total_parameters and counts their (sound) tensors,
which expected() gives as tensors_total; refusing an absurd index figure is the census's own check.

expected(repo) is what a counter should find: totals from this file's own closed-form formulas (one per family,
each citing its source), never from the project's pipeline code. write_list writes the list `hmp census` reads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import struct
import tempfile
from functools import lru_cache
from math import ceil
from pathlib import Path

from tests.support.hub import Repo, Sparse, size_of

PUBLISHED = Path(__file__).resolve().parent / "published_configs"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "U8": 1, "I8": 1, "I32": 4, "I64": 8}
TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

Tensor = tuple[str, str, tuple[int, ...]]  # (key, safetensors dtype, shape)

FAMILIES = ("gpt2", "llama", "mixtral", "qwen2_moe", "bnb_nf4", "fp8", "gguf")
WEIGHTS = {"gpt2": 18, "llama": 28, "mixtral": 12, "qwen2_moe": 10, "bnb_nf4": 8, "fp8": 8, "gguf": 12}
CRAFTED = {
    "shape-overflow": "a tensor's shape [2**40, 2**40] overflows what its bytes can hold",
    "offsets-past-end": "a tensor's data_offsets reach past the end of the file",
    "shared-bytes": "two tensors claim the same bytes",
    "header-length-2**60": "the 8-byte header length claims 2**60 bytes",
    "index-total-inf": "model.safetensors.index.json metadata.total_parameters is 1.8e308",
    "index-total-1e20": "model.safetensors.index.json metadata.total_parameters is 10**20",
    "gguf-huge-dims": "a GGUF tensor's dims claim about 7e159 parameters",
    "gguf-dims-overflow": "a GGUF tensor's four dims of 2**63 claim about 7.2e75 parameters its bytes cannot hold",
    "config-not-json": "config.json is not JSON",
    "no-config": "the repository has no config.json",
    "unknown-model-type": "config.json names a model_type transformers does not know",
    "remote-code": "config.json needs remote code (auto_map only, no model_type transformers knows)",
    "gated": "the repository is gated (403 GatedRepo)",
    "missing-repo": "the list names a repository the hub does not have",
    "missing-revision": "the list names a revision the repository does not have",
}
WRONG_API_TOTAL = 333_312  # the Hub API's figure huggingface_hub issue #4221 reported for a model of billions
ORGS = ("acme-ai", "open-lab", "tiny-models", "finetunes", "quant-house", "research-x", "edu-nlp", "mergekit-fans")


# --- closed-form parameter counts, one per family --------------------------------------------------


def gpt2_params(c: dict) -> int:
    """GPT-2 (Radford et al. 2019; transformers' GPT2Model): wte V·D + wpe P·D, per block ln_1, ln_2 (2·2D),
    c_attn D·3D + 3D, attn c_proj D·D + D, c_fc D·I + I, mlp c_proj I·D + D, then ln_f 2D; the head is tied to wte.
    With I = 4D a block is 12D² + 13D: GPT-2 small (V 50257, P 1024, D 768, 12 layers) is 124,439,808."""
    v, p, d, n = c["vocab_size"], c["n_positions"], c["n_embd"], c["n_layer"]
    i = c.get("n_inner") or 4 * d
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * i + i) + (i * d + d)
    return v * d + p * d + n * block + 2 * d


def _attention(c: dict, bias: bool = False) -> int:
    d, h = c["hidden_size"], c["num_attention_heads"]
    kv, hd = c.get("num_key_value_heads") or h, c.get("head_dim") or d // h
    return d * h * hd + 2 * d * kv * hd + h * hd * d + ((h + 2 * kv) * hd if bias else 0)


def llama_params(c: dict) -> int:
    """Llama (Touvron et al. 2023, transformers' LlamaModel): embed V·D; per layer q D·H·hd, k and v D·KV·hd,
    o H·hd·D, gate/up/down 3·D·F, two RMSNorms 2D; final norm D; lm_head V·D unless tied. Llama-2-7B (V 32000,
    D 4096, F 11008, 32 layers, no GQA) is 6,738,415,616; TinyLlama-1.1B (D 2048, F 5632, 22 layers, 4 KV heads)
    1,100,048,384, as their model cards give 7B and 1.1B."""
    v, d, f, n = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    layer = _attention(c, c.get("attention_bias", False)) + 3 * d * f + 2 * d
    return v * d * (1 if c.get("tie_word_embeddings", False) else 2) + n * layer + d


def mixtral_params(c: dict) -> tuple[int, int]:
    """Mixtral (Jiang et al. 2024, "Mixtral of Experts"): as Llama, but each layer's MLP is E experts of
    w1/w3 D·F and w2 F·D behind a router gate E·D; top-k experts are active. Mixtral-8x7B is 46,702,792,704 total and
    12,879,925,248 active (Mistral's release: 46.7B total, 12.9B active per token). (total, active)"""
    v, d, f, n = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    e, k = c["num_local_experts"], c["num_experts_per_tok"]
    head = v * d * (1 if c.get("tie_word_embeddings", False) else 2) + d
    base = _attention(c) + e * d + 2 * d
    return head + n * (base + e * 3 * d * f), head + n * (base + k * 3 * d * f)


def qwen2_moe_params(c: dict) -> tuple[int, int]:
    """Qwen1.5-MoE (Qwen team, "Qwen1.5-MoE: Matching 7B Model Performance with 1/3 Activated Parameters";
    transformers' Qwen2MoeModel): attention with q/k/v biases; per layer a router E·D, E experts of gate/up
    Fm·D and down D·Fm, a shared expert of 3·D·Fs and its gate D·1; top-k experts active, the shared one always.
    Qwen1.5-MoE-A2.7B is 14,315,784,192 total and 2,689,173,504 active (the release's 14.3B and 2.7B). (total,
    active)"""
    v, d, n = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"]
    e, k = c["num_experts"], c["num_experts_per_tok"]
    fm, fs = c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
    head = v * d * (1 if c.get("tie_word_embeddings", False) else 2) + d
    base = _attention(c, c.get("qkv_bias", True)) + e * d + 3 * d * fs + d + 2 * d
    return head + n * (base + e * 3 * d * fm), head + n * (base + k * 3 * d * fm)


# --- key lists, as each family's checkpoints store them ---------------------------------------------


def gpt2_tensors(c: dict, dtype: str) -> list[Tensor]:
    """openai-community/gpt2's model.safetensors: no `transformer.` prefix, the attn.bias mask buffers included."""
    v, p, d, n = c["vocab_size"], c["n_positions"], c["n_embd"], c["n_layer"]
    i = c.get("n_inner") or 4 * d
    out: list[Tensor] = [("wte.weight", dtype, (v, d)), ("wpe.weight", dtype, (p, d))]
    for b in range(n):
        h = f"h.{b}"
        out += [
            (f"{h}.ln_1.weight", dtype, (d,)),
            (f"{h}.ln_1.bias", dtype, (d,)),
            (f"{h}.attn.bias", dtype, (1, 1, p, p)),  # the causal mask, a buffer the Hub's file stores
            (f"{h}.attn.c_attn.weight", dtype, (d, 3 * d)),  # Conv1D: [in, out]
            (f"{h}.attn.c_attn.bias", dtype, (3 * d,)),
            (f"{h}.attn.c_proj.weight", dtype, (d, d)),
            (f"{h}.attn.c_proj.bias", dtype, (d,)),
            (f"{h}.ln_2.weight", dtype, (d,)),
            (f"{h}.ln_2.bias", dtype, (d,)),
            (f"{h}.mlp.c_fc.weight", dtype, (d, i)),
            (f"{h}.mlp.c_fc.bias", dtype, (i,)),
            (f"{h}.mlp.c_proj.weight", dtype, (i, d)),
            (f"{h}.mlp.c_proj.bias", dtype, (d,)),
        ]
    return out + [("ln_f.weight", dtype, (d,)), ("ln_f.bias", dtype, (d,))]


def _attn_tensors(c: dict, p: str, dtype: str, bias: bool) -> list[Tensor]:
    d, h = c["hidden_size"], c["num_attention_heads"]
    kv, hd = c.get("num_key_value_heads") or h, c.get("head_dim") or d // h
    out: list[Tensor] = []
    for name, rows in (("q_proj", h * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
        out.append((f"{p}.self_attn.{name}.weight", dtype, (rows, d)))
        if bias:
            out.append((f"{p}.self_attn.{name}.bias", dtype, (rows,)))
    return out + [(f"{p}.self_attn.o_proj.weight", dtype, (d, h * hd))]


def _decoder(c: dict, dtype: str, mlp) -> list[Tensor]:
    """model.embed_tokens, model.layers.N.{self_attn, mlp, norms}, model.norm, lm_head (unless tied)."""
    v, d = c["vocab_size"], c["hidden_size"]
    out: list[Tensor] = [("model.embed_tokens.weight", dtype, (v, d))]
    bias = c.get("qkv_bias", True) if c["model_type"] == "qwen2_moe" else c.get("attention_bias", False)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out += [(f"{p}.input_layernorm.weight", dtype, (d,))]
        out += _attn_tensors(c, p, dtype, bias)
        out += mlp(p)
        out += [(f"{p}.post_attention_layernorm.weight", dtype, (d,))]
    out.append(("model.norm.weight", dtype, (d,)))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", dtype, (v, d)))
    return out


def llama_tensors(c: dict, dtype: str) -> list[Tensor]:
    d, f = c["hidden_size"], c["intermediate_size"]
    return _decoder(
        c,
        dtype,
        lambda p: [
            (f"{p}.mlp.gate_proj.weight", dtype, (f, d)),
            (f"{p}.mlp.up_proj.weight", dtype, (f, d)),
            (f"{p}.mlp.down_proj.weight", dtype, (d, f)),
        ],
    )


def mixtral_tensors(c: dict, dtype: str) -> list[Tensor]:
    """mistralai/Mixtral-8x7B-v0.1's keys: block_sparse_moe.gate and block_sparse_moe.experts.E.w1/w2/w3."""
    d, f, e = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]

    def mlp(p: str) -> list[Tensor]:
        out: list[Tensor] = [(f"{p}.block_sparse_moe.gate.weight", dtype, (e, d))]
        for x in range(e):
            q = f"{p}.block_sparse_moe.experts.{x}"
            out += [(f"{q}.w1.weight", dtype, (f, d)), (f"{q}.w2.weight", dtype, (d, f))]
            out += [(f"{q}.w3.weight", dtype, (f, d))]
        return out

    return _decoder(c, dtype, mlp)


def qwen2_moe_tensors(c: dict, dtype: str) -> list[Tensor]:
    """Qwen/Qwen1.5-MoE-A2.7B's keys: mlp.gate, mlp.experts.E.{gate,up,down}_proj, mlp.shared_expert.*, gate."""
    d, e = c["hidden_size"], c["num_experts"]
    fm, fs = c["moe_intermediate_size"], c["shared_expert_intermediate_size"]

    def mlp(p: str) -> list[Tensor]:
        out: list[Tensor] = [(f"{p}.mlp.gate.weight", dtype, (e, d))]
        for x in range(e):
            q = f"{p}.mlp.experts.{x}"
            out += [(f"{q}.gate_proj.weight", dtype, (fm, d)), (f"{q}.up_proj.weight", dtype, (fm, d))]
            out += [(f"{q}.down_proj.weight", dtype, (d, fm))]
        q = f"{p}.mlp.shared_expert"
        out += [(f"{q}.gate_proj.weight", dtype, (fs, d)), (f"{q}.up_proj.weight", dtype, (fs, d))]
        out += [(f"{q}.down_proj.weight", dtype, (d, fs)), (f"{p}.mlp.shared_expert_gate.weight", dtype, (1, d))]
        return out

    return _decoder(c, dtype, mlp)


LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _quantized(c: dict, dtype: str, module) -> list[Tensor]:
    """A Llama whose Linear layers (not lm_head) are replaced by module(prefix, out, in) -> their stored tensors."""
    out = []
    for key, dt, shape in llama_tensors(c, dtype):
        parts = key.split(".")
        if len(parts) == 6 and parts[-2] in LINEARS and parts[-1] == "weight":
            out += module(key[: -len(".weight")], shape[0], shape[1])
        else:
            out.append((key, dt, shape))
    return out


def bnb_state(out: int, inp: int, dtype: str) -> bytes:
    """bitsandbytes' packed QuantState JSON (QuantState.as_dict(packed=True)), stored as a uint8 tensor."""
    state = {
        "quant_type": "nf4",
        "blocksize": 64,
        "dtype": TORCH_DTYPE[dtype],
        "shape": [out, inp],
        "nested_blocksize": 256,
        "nested_dtype": "float32",
        "nested_offset": 0.0,
    }
    return json.dumps(state).encode()


def bnb_tensors(c: dict, dtype: str) -> tuple[list[Tensor], dict[str, bytes]]:
    """transformers' save of a bitsandbytes nf4 model (double quantization): Params4bit weight uint8 [⌈n/2⌉, 1],
    absmax uint8 [n/64 blocks], quant_map F32 [16], nested_absmax F32 [blocks/256], nested_quant_map F32 [256],
    and the quant state JSON. Returns the tensors and the real bytes of the quant states."""
    real: dict[str, bytes] = {}

    def module(p: str, o: int, i: int) -> list[Tensor]:
        n = o * i
        blocks = ceil(n / 64)
        blob = bnb_state(o, i, dtype)
        real[f"{p}.weight.quant_state.bitsandbytes__nf4"] = blob
        return [
            (f"{p}.weight", "U8", ((n + 1) // 2, 1)),
            (f"{p}.weight.absmax", "U8", (blocks,)),
            (f"{p}.weight.nested_absmax", "F32", (ceil(blocks / 256),)),
            (f"{p}.weight.nested_quant_map", "F32", (256,)),
            (f"{p}.weight.quant_map", "F32", (16,)),
            (f"{p}.weight.quant_state.bitsandbytes__nf4", "U8", (len(blob),)),
        ]

    return _quantized(c, dtype, module), real


def fp8_tensors(c: dict, dtype: str) -> list[Tensor]:
    """Block fp8 (FineGrainedFP8, as Qwen3-*-FP8 and DeepSeek-V3 publish): weight F8_E4M3 [out, in] and
    weight_scale_inv F32 [⌈out/128⌉, ⌈in/128⌉]; embeddings, norms and the head stay in dtype."""
    b = 128

    def module(p: str, o: int, i: int) -> list[Tensor]:
        return [(f"{p}.weight", "F8_E4M3", (o, i)), (f"{p}.weight_scale_inv", "F32", (ceil(o / b), ceil(i / b)))]

    return _quantized(c, dtype, module)


# --- files -----------------------------------------------------------------------------------------


def nbytes(t: Tensor) -> int:
    n = DTYPE_BYTES[t[1]]
    for s in t[2]:
        n *= s
    return n


def safetensors_file(tensors: list[Tensor], real: dict[str, bytes] | None = None, fix=None) -> Sparse:
    """A safetensors file of these tensors, their data zeros except real's (placed first, so they lie in the
    prefix). fix(header) may change the header before it is written (crafted files)."""
    real = real or {}
    order = [t for t in tensors if t[0] in real] + [t for t in tensors if t[0] not in real]
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in order:
        n = nbytes(t)
        header[t[0]] = {"dtype": t[1], "shape": list(t[2]), "data_offsets": [offset, offset + n]}
        offset += n
    if fix:
        fix(header)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads its header with spaces to 8 bytes
    prefix = struct.pack("<Q", len(blob)) + blob + b"".join(real[t[0]] for t in order if t[0] in real)
    return Sparse(prefix, 8 + len(blob) + offset)


def shard(tensors: list[Tensor], k: int) -> list[list[Tensor]]:
    """Split in order into k pieces of about equal bytes, as save_pretrained's max_shard_size does."""
    total = sum(nbytes(t) for t in tensors)
    out: list[list[Tensor]] = [[]]
    done = 0
    for t in tensors:
        if out[-1] and len(out) < k and done + nbytes(t) / 2 > total * len(out) / k:
            out.append([])
        out[-1].append(t)
        done += nbytes(t)
    return out


def checkpoint(tensors: list[Tensor], shards: int, real: dict[str, bytes] | None = None, total_params=None) -> dict:
    """{file name: data}: one model.safetensors, or shards with model.safetensors.index.json as the Hub's files."""
    if shards <= 1:
        return {"model.safetensors": safetensors_file(tensors, real)}
    pieces = shard(tensors, shards)
    files: dict = {}
    weight_map = {}
    for i, piece in enumerate(pieces):
        name = f"model-{i + 1:05d}-of-{len(pieces):05d}.safetensors"
        files[name] = safetensors_file(piece, {k: v for k, v in (real or {}).items() if any(t[0] == k for t in piece)})
        weight_map.update({t[0]: name for t in piece})
    if total_params is None:
        total_params = stored_elements(tensors)[0]
    meta = {"total_parameters": total_params, "total_size": sum(nbytes(t) for t in tensors)}
    index = {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}
    files["model.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode()
    return files


def stored_elements(tensors: list[Tensor]) -> tuple[int, dict[str, int]]:
    """What the Hub API's safetensors field reports: every stored element (buffers and packed bytes included)."""
    by: dict[str, int] = {}
    for _, dt, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        by[dt] = by.get(dt, 0) + n
    return sum(by.values()), dict(sorted(by.items()))


def config_bytes(config: dict) -> bytes:
    """config.json as save_pretrained writes it: indent 2, sorted keys, a final newline."""
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def published(name: str) -> dict:
    return json.loads((PUBLISHED / f"{name}.json").read_text())


GGUF_TYPES = {"F32": (1, 4), "F16": (1, 2), "Q8_0": (32, 34)}  # ggml block size, bytes a block


def gguf_files(c: dict, qtype: str, stem: str, split: int = 0, huge: int = 0) -> dict[str, Sparse]:
    """A Llama (config c) as llama.cpp's convert_hf_to_gguf.py writes it (token_embd, blk.N.attn_q, ..., output),
    headers written by gguf.GGUFWriter, data zeros; split > 0 splits it after that many tensors (-0000i-of-0000k).
    huge (crafted): 9 gives blk.0.attn_q.weight 9 dims of 2**59 (2**531, about 7.0e159 parameters), 4 gives it
    4 dims of 2**63 (2**252, about 7.2e75), its data 4 bytes either way."""
    return dict(_gguf(json.dumps(c, sort_keys=True), qtype, stem, split, huge))


@lru_cache(maxsize=256)
def _gguf(config: str, qtype: str, stem: str, split: int, huge: int) -> tuple[tuple[str, Sparse], ...]:
    import gguf
    import numpy as np

    c = json.loads(config)
    v, d, f, n = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    h, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    kvd = kv * (d // h)
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (v, d)}
    for i in range(n):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (d,),
            f"blk.{i}.attn_q.weight": (d, d),
            f"blk.{i}.attn_k.weight": (kvd, d),
            f"blk.{i}.attn_v.weight": (kvd, d),
            f"blk.{i}.attn_output.weight": (d, d),
            f"blk.{i}.ffn_norm.weight": (d,),
            f"blk.{i}.ffn_gate.weight": (f, d),
            f"blk.{i}.ffn_up.weight": (f, d),
            f"blk.{i}.ffn_down.weight": (d, f),
        }
    shapes["output_norm.weight"] = (d,)
    if not c.get("tie_word_embeddings", False):
        shapes["output.weight"] = (v, d)
    if huge:
        shapes["blk.0.attn_q.weight"] = (2**59,) * 9 if huge == 9 else (2**63,) * 4
    with tempfile.TemporaryDirectory(prefix="hub-gguf-") as tmp:
        w = gguf.GGUFWriter(Path(tmp) / f"{stem}.gguf", "llama", split_max_tensors=split)
        w.add_name(stem)
        w.add_context_length(c.get("max_position_embeddings", 2048))
        w.add_embedding_length(d)
        w.add_block_count(n)
        w.add_feed_forward_length(f)
        w.add_head_count(h)
        w.add_head_count_kv(kv)
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-5))
        w.add_rope_freq_base(c.get("rope_theta", 10000.0))
        w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[qtype])
        w.add_vocab_size(v)
        w.add_tokenizer_model("llama")
        w.add_token_list([f"<t{i}>".encode() for i in range(v)])
        sizes = []
        for name, shape in shapes.items():
            q = "F32" if len(shape) == 1 else qtype  # llama.cpp keeps norms in F32
            block, per = GGUF_TYPES[q]
            count = 1
            for s in shape:
                count *= s
            size = 4 if huge and name == "blk.0.attn_q.weight" else count // block * per
            w.add_tensor_info(
                name, shape, np.dtype(np.float32), size, raw_dtype=gguf.GGMLQuantizationType[q] if q != "F32" else None
            )
            sizes.append(size)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        out = []
        align = w.data_alignment
        for shard_tensors, path in zip(w.tensors, w.format_shard_names(w.path), strict=True):
            blob = path.read_bytes()
            data = sum(gguf.GGUFWriter.ggml_pad(ti.nbytes, align) for ti in shard_tensors.values())
            out.append((path.name, Sparse(blob, gguf.GGUFWriter.ggml_pad(len(blob), align) + data)))
    return tuple(out)


# --- the population --------------------------------------------------------------------------------


def _sha(seed: int, repo_id: str, what: str = "") -> str:
    return hashlib.sha1(f"{seed}:{repo_id}:{what}".encode()).hexdigest()


def _small_config(family: str, rng: random.Random) -> dict:
    """A published config of the family with small dimensions (a new base model)."""
    d = rng.choice((32, 64))
    heads = 4
    kv = rng.choice((heads, 2, 1))
    layers = rng.choice((1, 2, 3))
    vocab = rng.choice((64, 128, 256))
    if family == "gpt2":
        c = published("openai-community--gpt2")
        c.update(n_embd=d, n_head=heads, n_layer=layers, vocab_size=vocab, n_positions=rng.choice((16, 32)))
        c["n_ctx"] = c["n_positions"]
        c["bos_token_id"] = c["eos_token_id"] = vocab - 1
        return c
    if family == "mixtral":
        c = published("mistralai--Mixtral-8x7B-v0.1")
        c.update(num_local_experts=rng.choice((4, 8)), num_experts_per_tok=2, intermediate_size=2 * d)
    elif family == "qwen2_moe":
        c = _qwen_moe_published()
        c.update(num_experts=rng.choice((4, 8)), num_experts_per_tok=2, moe_intermediate_size=d // 2)
        c.update(shared_expert_intermediate_size=2 * d, intermediate_size=2 * d, max_window_layers=layers)
        c.update(sliding_window=None, use_sliding_window=False)
    else:
        c = published(TINYLLAMA)
        c["intermediate_size"] = rng.choice((2 * d, 3 * d))
        c["tie_word_embeddings"] = family in ("llama", "gguf") and rng.random() < 0.35
    if family in ("bnb_nf4", "fp8"):
        c["tie_word_embeddings"] = False
    c.update(hidden_size=d, num_attention_heads=heads, num_key_value_heads=kv, num_hidden_layers=layers)
    c.update(vocab_size=vocab, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    if family == "bnb_nf4":
        c["quantization_config"] = {
            "_load_in_4bit": True,
            "_load_in_8bit": False,
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "llm_int8_enable_fp32_cpu_offload": False,
            "llm_int8_has_fp16_weight": False,
            "llm_int8_skip_modules": None,
            "llm_int8_threshold": 6.0,
            "load_in_4bit": True,
            "load_in_8bit": False,
            "quant_method": "bitsandbytes",
        }
    if family == "fp8":
        c["quantization_config"] = {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        }
    return c


def _qwen_moe_published() -> dict:
    """Qwen/Qwen1.5-MoE-A2.7B's config.json as published."""
    return {
        "architectures": ["Qwen2MoeForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "decoder_sparse_step": 1,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 5632,
        "max_position_embeddings": 8192,
        "max_window_layers": 21,
        "model_type": "qwen2_moe",
        "moe_intermediate_size": 1408,
        "norm_topk_prob": False,
        "num_attention_heads": 16,
        "num_experts": 60,
        "num_experts_per_tok": 4,
        "num_hidden_layers": 24,
        "num_key_value_heads": 16,
        "output_router_logits": False,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.001,
        "shared_expert_intermediate_size": 5632,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }


def formula(family: str, c: dict) -> tuple[int, int]:
    """(total, active) by the family's closed form."""
    if family == "gpt2":
        t = gpt2_params(c)
        return t, t
    if family == "mixtral":
        return mixtral_params(c)
    if family == "qwen2_moe":
        return qwen2_moe_params(c)
    t = llama_params(c)  # llama, bnb_nf4, fp8 and gguf are all Llamas
    return t, t


def tensors_of(family: str, c: dict, dtype: str) -> tuple[list[Tensor], dict[str, bytes]]:
    if family == "gpt2":
        return gpt2_tensors(c, dtype), {}
    if family == "mixtral":
        return mixtral_tensors(c, dtype), {}
    if family == "qwen2_moe":
        return qwen2_moe_tensors(c, dtype), {}
    if family == "bnb_nf4":
        return bnb_tensors(c, dtype)
    if family == "fp8":
        return fp8_tensors(c, dtype), {}
    return llama_tensors(c, dtype), {}


@lru_cache(maxsize=4096)
def _files(family: str, config: bytes, dtype: str, shards: int, qtype: str, split: int, stem: str) -> dict:
    c = json.loads(config)
    if family == "gguf":
        return gguf_files(c, qtype, stem, split)
    tensors, real = tensors_of(family, c, dtype)
    return {"config.json": config, **checkpoint(tensors, shards, real)}


def make_repo(
    repo_id: str,
    family: str,
    config: dict | bytes,
    seed: int = 0,
    dtype: str = "F32",
    shards: int = 1,
    qtype: str = "F16",
    split: int = 0,
    api: str | None = None,
    **meta,
) -> Repo:
    """One repository of a family. api: None (no Hub figure), "right" (the stored elements, as the Hub computes
    them) or "wrong" (WRONG_API_TOTAL)."""
    blob = config if isinstance(config, bytes) else config_bytes(config)
    c = json.loads(blob)
    stem = repo_id.split("/")[1] + f"-{qtype}"
    files = dict(_files(family, blob, dtype, shards, qtype, split, stem))
    total, active = formula(family, c)
    api_total = api_parameters = None
    if family != "gguf":
        tensors, _ = tensors_of(family, c, dtype)
        stored, by = stored_elements(tensors)
        if api == "right":
            api_total, api_parameters = stored, by
        elif api == "wrong":
            api_total, api_parameters = WRONG_API_TOTAL, {dtype: WRONG_API_TOTAL}
    else:
        files["README.md"] = f"# {repo_id}\n\nGGUF ({qtype}) of a Llama-style model.\n".encode()
    count_file = next((f for f in sorted(files) if f.endswith(".gguf") and "-00002-of-" not in f), None)
    info = {
        "family": family,
        "total": total,
        "active": active,
        "refused": False,
        "reason": None,
        "format": "gguf" if family == "gguf" else "safetensors",
        "dtype": qtype if family == "gguf" else dtype,
        "shards": len([f for f in files if f.endswith((".safetensors", ".gguf"))]),
        "count_file": count_file if family == "gguf" else None,
        "api_total": api_total,
        "api_total_matches": None if api_total is None else api_total == total,
        **meta,
    }
    return Repo(repo_id, _sha(seed, repo_id), files, api_total=api_total, api_parameters=api_parameters, meta=info)


TINYLLAMA, LLAMA2 = "TinyLlama--TinyLlama-1.1B-Chat-v1.0", "meta-llama--Llama-2-7b-hf"


def published_repos(seed: int) -> list[Repo]:
    """Real published dimensions, data sparse: GPT-2 small, TinyLlama-1.1B, Llama-2-7B, Mixtral-8x7B, Qwen1.5-MoE."""
    return [
        make_repo("openai-community/gpt2", "gpt2", published("openai-community--gpt2"), seed, api="right"),
        make_repo("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "llama", published(TINYLLAMA), seed, "BF16"),
        make_repo("meta-llama/Llama-2-7b-hf", "llama", published(LLAMA2), seed, "F16", 2, api="right"),
        make_repo(
            "mistralai/Mixtral-8x7B-v0.1",
            "mixtral",
            published("mistralai--Mixtral-8x7B-v0.1"),
            seed,
            "BF16",
            19,
            api="wrong",  # the 333,312 of huggingface_hub issue #4221
        ),
        make_repo("Qwen/Qwen1.5-MoE-A2.7B", "qwen2_moe", _qwen_moe_published(), seed, "BF16", 8, api="right"),
    ]


def _tiny_llama() -> dict:
    c = _small_config("llama", random.Random(0))
    c.update(hidden_size=32, num_hidden_layers=2, tie_word_embeddings=False, vocab_size=64)
    return c


def crafted_repo(kind: str, repo_id: str, seed: int) -> Repo:
    """A repository (or a list entry) that must be refused, with its reason in meta."""
    c = _tiny_llama()
    tensors = llama_tensors(c, "F32")
    files: dict = {"config.json": config_bytes(c)}
    gated = False
    served = True
    listed = "main"

    def fixed(fix) -> Sparse:
        return safetensors_file(tensors, fix=fix)

    if kind == "shape-overflow":
        files["model.safetensors"] = fixed(lambda h: h["lm_head.weight"].update(shape=[2**40, 2**40]))
    elif kind == "offsets-past-end":
        good = safetensors_file(tensors)

        def past(h):
            a, b = h["lm_head.weight"]["data_offsets"]
            h["lm_head.weight"]["data_offsets"] = [a + 4096, b + 4096]

        bad = fixed(past)
        files["model.safetensors"] = Sparse(bad.prefix, good.size)  # the file ends where the good one did
    elif kind == "shared-bytes":

        def share(h):
            h["lm_head.weight"]["data_offsets"] = list(h["model.embed_tokens.weight"]["data_offsets"])

        good = fixed(share)
        lm = nbytes(next(t for t in tensors if t[0] == "lm_head.weight"))
        files["model.safetensors"] = Sparse(good.prefix, good.size - lm)
    elif kind == "header-length-2**60":
        files["model.safetensors"] = Sparse(struct.pack("<Q", 2**60) + b'{"__metadata__":{}}', 1 << 20)
    elif kind in ("index-total-inf", "index-total-1e20"):
        total = 1.8e308 if kind == "index-total-inf" else 10**20
        files.update(checkpoint(tensors, 2, total_params=total))
    elif kind in ("gguf-huge-dims", "gguf-dims-overflow"):
        files = gguf_files(c, "F32", repo_id.split("/")[1], huge=9 if kind == "gguf-huge-dims" else 4)
    elif kind == "config-not-json":
        files["config.json"] = b'{"model_type": "llama", "hidden_size": 32,, "num_hidden_layers": 2\n'
        files["model.safetensors"] = safetensors_file(tensors)
    elif kind == "no-config":
        del files["config.json"]
        files["model.safetensors"] = safetensors_file(tensors)
    elif kind == "unknown-model-type":
        files["config.json"] = config_bytes(
            {**c, "model_type": "hmp-no-such-arch", "architectures": ["HmpNoSuchArchForCausalLM"]}
        )
        files["model.safetensors"] = safetensors_file(tensors)
    elif kind == "remote-code":
        custom = {k: v for k, v in c.items() if k not in ("model_type", "architectures")}
        custom["architectures"] = ["CustomLMForCausalLM"]
        custom["auto_map"] = {
            "AutoConfig": "configuration_custom.CustomLMConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomLMForCausalLM",
        }
        files["config.json"] = config_bytes(custom)
        files["configuration_custom.py"] = b"raise RuntimeError('remote code must never run')\n"
        files["modeling_custom.py"] = b"raise RuntimeError('remote code must never run')\n"
        files["model.safetensors"] = safetensors_file(tensors)
    elif kind == "gated":
        gated = True
        files["model.safetensors"] = safetensors_file(tensors)
    elif kind == "missing-repo":
        served = False
    elif kind == "missing-revision":
        files["model.safetensors"] = safetensors_file(tensors)
        listed = "no-such-branch"
    else:
        raise ValueError(kind)
    meta = {
        "family": "crafted",
        "kind": kind,
        "total": None,
        "active": None,
        "refused": True,
        "reason": CRAFTED[kind],
        "format": "gguf" if kind.startswith("gguf-") else "safetensors",
        "count_file": next((f for f in files if f.endswith(".gguf")), None),
        "api_total": None,
        "api_total_matches": None,
    }
    if kind.startswith("index-total"):  # the tensors themselves are sound: what they hold, for a census to report
        meta["tensors_total"] = llama_params(c)
    return Repo(repo_id, _sha(seed, repo_id), files, gated=gated, served=served, listed=listed, meta=meta)


def population(n: int, seed: int = 0) -> list[Repo]:
    """n repositories, the same for the same (n, seed): first one of each family and each crafted kind, the
    published-size ones, then fine-tune variants and new base models of every family, with crafted kinds
    repeated about every 500."""
    rng = random.Random(seed)
    out: list[Repo] = []
    ids: set[str] = set()
    bases: dict[str, list[tuple[bytes, str]]] = {f: [] for f in FAMILIES}  # (config.json, base name)

    def fresh(name: str) -> str:
        org = ORGS[rng.randrange(len(ORGS))]
        repo_id = f"{org}/{name}"
        k = 2
        while repo_id in ids:
            repo_id = f"{org}/{name}-{k}"
            k += 1
        ids.add(repo_id)
        return repo_id

    def family_repo(family: str, new_base: bool) -> Repo:
        if new_base or not bases[family]:
            config = config_bytes(_small_config(family, rng))
            base = f"{family.replace('_', '-')}-base{len(bases[family])}"
            bases[family].append((config, base))
            variant = "base"
        else:
            config, base = bases[family][rng.randrange(len(bases[family]))]
            variant = rng.choice(("sft", "dpo", "instruct", "chat", "lora-merged", "math", "code", "v2"))
        repo_id = fresh(f"{base}-{variant}" if variant != "base" else base)
        dtype = "F32" if family == "gpt2" else rng.choice(("F32", "BF16", "F16", "BF16"))
        if family in ("bnb_nf4", "fp8"):
            dtype = rng.choice(("BF16", "F16"))
        shards = 1 if rng.random() < 0.6 else rng.choice((2, 3))
        qtype = rng.choice(tuple(GGUF_TYPES))
        split = rng.choice((0, 0, 0, 6)) if family == "gguf" else 0
        api = rng.choices((None, "right", "wrong"), (58, 40, 2))[0]
        repo = make_repo(repo_id, family, config, seed, dtype, shards, qtype, split, api, base=base, variant=variant)
        if rng.random() < 0.15:  # listed at its commit, not at main
            repo.listed = repo.sha
        if rng.random() < 0.1:
            repo.branches["v1.0"] = repo.sha
        return repo

    def crafted(kind: str) -> Repo:
        repo_id = fresh(f"crafted-{kind.replace('*', '').replace('.', '')}")
        return crafted_repo(kind, repo_id, seed)

    schedule = [lambda f=f: family_repo(f, True) for f in FAMILIES]
    schedule += [lambda k=k: crafted(k) for k in CRAFTED]
    for repo in published_repos(seed):
        ids.add(repo.repo_id)
        schedule.append(lambda r=repo: r)
    kinds = list(CRAFTED)
    families, weights = list(WEIGHTS), list(WEIGHTS.values())
    for i in range(n):
        if i < len(schedule):
            out.append(schedule[i]())
        elif i >= 500 and i % 500 < len(kinds):  # each crafted kind again at 500, 1000, ...
            out.append(crafted(kinds[i % 500]))
        else:
            family = rng.choices(families, weights)[0]
            out.append(family_repo(family, rng.random() < 0.25))
    return out


def expected(repo: Repo) -> dict:
    """What counting repo should give: total, active (None when refused), refused, reason, family and the rest."""
    return dict(repo.meta)


def write_list(path: Path | str, repos: list[Repo], fmt: str = "text") -> Path:
    """The list `hmp census` reads: text (`org/name@revision` a line, # comments) or CSV (source,revision,hub_total;
    hub_total the Hub API's figure where the repository has one, deliberately wrong on a few)."""
    path = Path(path)
    if fmt == "text":
        lines = ["# repositories for hmp census: org/name@revision", f"# {len(repos)} entries"]
        lines += [f"{r.repo_id}@{r.listed}" for r in repos]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["source", "revision", "hub_total"])
            for r in repos:
                w.writerow([r.repo_id, r.listed, "" if r.api_total is None else r.api_total])
    else:
        raise ValueError(f"fmt {fmt!r}: text or csv")
    return path


def write_repo(repo: Repo, folder: Path | str) -> Path:
    """The repository's files in folder (Sparse ones as sparse files: the prefix, then truncated to size)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in repo.files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as fh:
            if isinstance(data, Sparse):
                fh.write(data.prefix)
                fh.truncate(data.size)
            else:
                fh.write(data)
        assert target.stat().st_size == size_of(data)
    return folder
