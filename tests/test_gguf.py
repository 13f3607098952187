"""GGUF files written with the gguf package's own writer and quantizer: every type and a split set count exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import bias, count, download, params, ties
from pipeline.cli import PipelineError
from tests.conftest import tiny_params
from tests.quantized import LLAMA, llama_total

V, D, F, L = LLAMA["vocab_size"], LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["num_hidden_layers"]
H, KV = LLAMA["num_attention_heads"], LLAMA["num_key_value_heads"]


def write_gguf(path: Path, qtype: str = "F32", split_max_tensors: int = 0, drop: str | None = None) -> Path:
    """A tiny Llama in llama.cpp's layout (token_embd, blk.N.attn_q, ...), written by gguf.GGUFWriter."""
    import gguf

    q = gguf.GGMLQuantizationType[qtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_context_length(LLAMA["max_position_embeddings"])
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}".encode() for i in range(V)])
    rng = np.random.default_rng(0)
    kv = KV * (D // H)
    shapes = {"token_embd.weight": (V, D), "output.weight": (V, D), "output_norm.weight": (D,)}
    for i in range(L):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (D,),
            f"blk.{i}.ffn_norm.weight": (D,),
            f"blk.{i}.attn_q.weight": (D, D),
            f"blk.{i}.attn_k.weight": (kv, D),
            f"blk.{i}.attn_v.weight": (kv, D),
            f"blk.{i}.attn_output.weight": (D, D),
            f"blk.{i}.ffn_gate.weight": (F, D),
            f"blk.{i}.ffn_up.weight": (F, D),
            f"blk.{i}.ffn_down.weight": (D, F),
        }
    for name, shape in shapes.items():
        if name == drop:
            continue
        values = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1 or q == gguf.GGMLQuantizationType.F32:  # llama.cpp keeps norms in F32
            w.add_tensor(name, values)
        elif q == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, values.astype(np.float16))
        else:
            packed = gguf.quants.quantize(values, q)  # gguf's own quantizer, on CPU
            w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _run(workdir, monkeypatch, path, stages=()):
    data = tiny_params({"g": {"source": "path", "path": str(path)}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["download", "g"])
    download.main()
    for stage in stages:
        stage.main()
    return count.count_model(params.load().models["g"], workdir / "data/models/g")


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0"])
def test_gguf_counts_the_closed_form_total(qtype, workdir, monkeypatch):
    path = write_gguf(workdir / "src" / f"tiny-{qtype}.gguf", qtype)
    inv, row = _run(workdir, monkeypatch, path)
    assert row["total"] == llama_total()  # formulas.llama_params
    assert row["checkpoint_tensors"] == llama_total()  # a GGUF header gives logical shapes, even when quantized
    assert row["quant_method"] == ("" if qtype in ("F32", "F16") else "gguf")
    q_proj = inv.set_index("name").loc["model.layers.0.self_attn.q_proj.weight"]
    assert q_proj["stored_dtype"] == qtype and q_proj["checkpoint_key"] == "blk.0.attn_q.weight"
    expected_bits = {"F32": 32, "F16": 16, "Q8_0": 34 * 8 / 32, "Q4_0": 18 * 8 / 32}[qtype]  # ggml block sizes
    assert q_proj["bits_per_param"] == pytest.approx(expected_bits)


def test_a_split_gguf_is_counted_whole_from_its_first_shard(workdir, monkeypatch):
    first = write_gguf(workdir / "src" / "tiny.gguf", "Q8_0", split_max_tensors=8).with_name("tiny-00001-of-00003.gguf")
    assert first.exists() and (first.parent / "tiny-00003-of-00003.gguf").exists()
    _, row = _run(workdir, monkeypatch, first)
    assert row["total"] == llama_total()
    files = sorted(p.name for p in (workdir / "data/models/g").glob("*.gguf"))
    assert files == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_a_missing_shard_is_named(workdir, monkeypatch):
    first = write_gguf(workdir / "src" / "tiny.gguf", "Q8_0", split_max_tensors=8).with_name("tiny-00001-of-00003.gguf")
    (first.parent / "tiny-00002-of-00003.gguf").unlink()
    with pytest.raises(PipelineError, match=r"model 'g': .*shard 2 of 3, tiny-00002-of-00003\.gguf, is missing"):
        _run(workdir, monkeypatch, first)
    assert not (workdir / "data/models/g").exists()


def test_a_gguf_missing_a_tensor_is_named(workdir, monkeypatch):
    path = write_gguf(workdir / "src" / "tiny.gguf", "Q8_0", drop="blk.1.ffn_up.weight")
    with pytest.raises(
        PipelineError, match=r"model 'g': GGUF does not match .*missing: model\.layers\.1\.mlp\.up_proj"
    ):
        _run(workdir, monkeypatch, path)


def test_a_file_that_is_not_gguf_is_one_line(workdir, monkeypatch):
    path = workdir / "src" / "junk.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(PipelineError, match=r"^model 'g': \S*junk\.gguf: no architecture transformers can read"):
        _run(workdir, monkeypatch, path)


def test_gguf_values_are_dequantized_by_gguf(workdir, monkeypatch):
    """The value pass reads Q8_0 blocks through gguf's dequantizer: statistics match the F32 file's closely."""
    import pandas as pd

    stats = {}
    for qtype in ("F32", "Q8_0"):
        path = write_gguf(workdir / "src" / f"{qtype}.gguf", qtype)  # the same random values, written two ways
        _run(workdir, monkeypatch, path, stages=(count, ties, bias))
        d = pd.read_csv(workdir / "results/distributions.csv")
        stats[qtype] = d[(d["by"] == "group") & (d["group"] == "weights")].iloc[0]
    assert stats["Q8_0"]["count"] == stats["F32"]["count"] == llama_total() - (2 * L + 1) * D
    assert stats["Q8_0"]["std"] == pytest.approx(stats["F32"]["std"], rel=1e-2)  # 8-bit blocks: close, not equal
    t = pd.read_csv(workdir / "results/ties.csv").iloc[0]
    assert t["stored_separately"] and abs(t["pearson_r"]) < 0.2  # independent random embedding and head
