"""GGUF files written with the gguf package's own writer and quantizer: every type and a split set count exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.model.count import count_folder
from pipeline.stages import bias, count, download, report, ties
from tests.conftest import tiny_params
from tests.support.quantized import LLAMA, llama_total

V, D, F, L = LLAMA["vocab_size"], LLAMA["hidden_size"], LLAMA["intermediate_size"], LLAMA["num_hidden_layers"]
H, KV = LLAMA["num_attention_heads"], LLAMA["num_key_value_heads"]


def write_gguf(
    path: Path,
    qtype: str = "F32",
    split_max_tensors: int = 0,
    drop: str | None = None,
    head_last: bool = False,
    types: dict[str, str] | None = None,
) -> Path:
    """A tiny Llama in llama.cpp's layout (token_embd, blk.N.attn_q, ...), written by gguf.GGUFWriter.

    drop="output.weight" writes it tied, as llama.cpp writes Llama-3.2-1B; head_last writes the head last (in the
    last shard of a split set); types gives some tensors a ggml type of their own (an I8 embedding).
    """
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
    if head_last:
        shapes["output.weight"] = shapes.pop("output.weight")
    for name, shape in shapes.items():
        if name == drop:
            continue
        values = rng.standard_normal(shape).astype(np.float32)
        if name in (types or {}):
            w.add_tensor(name, (values * 40).astype(types[name].lower().replace("i", "int")))
        elif len(shape) == 1 or q == gguf.GGMLQuantizationType.F32:  # llama.cpp keeps norms in F32
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
    counted = count_folder(params.load().models["g"], workdir / "data/models/g")
    return counted.inv, counted.row


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


# --- tied GGUF files, split sets, and the config as transformers makes it ------------------------------------


def _oracle_config(path: Path) -> dict:
    """transformers' own load_gguf_checkpoint config of a file, as plain JSON (numpy scalars to Python)."""
    import json

    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    return json.loads(json.dumps(cfg, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def write_model_gguf(
    path: Path,
    arch: str,
    *,
    tied: bool = True,
    split_max_tensors: int = 0,
    head_last: bool = False,
    name: str | None = None,
    vocab: int = 64,
    vocab_size_key: bool = True,
) -> tuple[Path, int]:
    """A tiny model of a GGUF architecture (llama, qwen2, gemma3) as llama.cpp's converter writes it; (path, oracle).

    The metadata are written with gguf.GGUFWriter's own add_* calls; the tensor set is what transformers loads
    into the model those numbers describe (its GGUF name map, run on the model built from a config written out
    here by hand), F32 values. The oracle is sum(p.numel()) of that model: transformers' count, not the code's.
    """
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    d, layers, ff, heads, kv = 32, 2, 48, 4, 2
    head_dim = 16 if arch == "gemma3" else d // heads  # Gemma's heads are wider than d / heads
    fields = {
        "vocab_size": vocab, "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
        "tie_word_embeddings": tied, "max_position_embeddings": 128,
    }  # fmt: skip
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model({"gemma3": "gemma3_text"}.get(arch, arch), **fields)
        )
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    tensors = {g: shapes[h] for g, h in get_gguf_hf_weights_map(model, processor).items() if h in shapes}
    if tied:
        del tensors["output.weight"]  # llama.cpp stores a tied head once, as token_embd
    elif head_last:
        tensors["output.weight"] = tensors.pop("output.weight")
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    if name:
        w.add_name(name)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(16)
    if vocab_size_key:
        w.add_vocab_size(vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_scores([float(-i) for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(1)
    for tensor, shape in tensors.items():
        w.add_tensor(tensor, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    first = path.with_name(f"{path.stem}-00001-of-{len(w.tensors):05d}.gguf") if split_max_tensors else path
    return first, sum(p.numel() for p in model.parameters())


CONFIG_CASES = {
    "llama-untied": ("llama", {"tied": False}),
    "llama-tied": ("llama", {}),  # Llama-3.2-1B
    "mistral-by-name": ("llama", {"name": "mistral"}),  # llama.cpp files Mistral under llama
    "qwen2-tied": ("qwen2", {}),  # Qwen2.5-0.5B
    "gemma3-tied": ("gemma3", {}),  # Gemma 3: wider heads, a sliding window, the text backbone's model_type
    "vocab-from-5000-tokens": ("llama", {"vocab": 5000, "vocab_size_key": False}),  # a token list too long to decode
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_the_config_is_what_load_gguf_checkpoint_gives(case, tmp_path):
    from pipeline.formats import gguf_file

    arch, kwargs = CONFIG_CASES[case]
    path, _ = write_model_gguf(tmp_path / f"{case}.gguf", arch, **kwargs)
    oracle = _oracle_config(path)
    assert gguf_file.config([path]) == oracle
    assert oracle["tie_word_embeddings"] == kwargs.get("tied", True)  # the cases cover both
    if case == "vocab-from-5000-tokens":
        assert oracle["vocab_size"] == 5000


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_split_set_reads_as_its_single_file_twin(arch, tmp_path):
    """Split with the untied head in a later shard: the config is load_gguf_checkpoint's of the same model in one
    file. transformers itself reads the first shard only, so there it would be tied."""
    from pipeline.formats import gguf_file, gguf_header

    single, _ = write_model_gguf(tmp_path / "one" / "m.gguf", arch, tied=False)
    first, _ = write_model_gguf(tmp_path / "split" / "m.gguf", arch, tied=False, split_max_tensors=8, head_last=True)
    paths = gguf_file.shards(first)
    assert len(paths) >= 3 and "output.weight" not in {t.name for t in gguf_header.read(paths[0]).tensors}
    assert gguf_file.config(paths) == _oracle_config(single)
    assert _oracle_config(first)["tie_word_embeddings"] is True  # what reading one shard gets wrong


@pytest.mark.parametrize("arch", ["qwen2", "gemma3"])
def test_tied_gguf_of_other_families_count_through_every_stage(arch, workdir, monkeypatch):
    import pandas as pd

    path, oracle = write_model_gguf(workdir / "src" / f"{arch}.gguf", arch)
    _, row = _run(workdir, monkeypatch, path, stages=(count, ties, bias, report))
    assert row["total"] == oracle  # transformers' sum(p.numel()) of the model the same numbers describe
    t = pd.read_csv(workdir / "results/ties.csv").iloc[0]
    assert t["declared_tied"] and t["structural_tied"] and t["pearson_r"] == 1.0


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_a_tied_gguf_passes_every_stage(qtype, workdir, monkeypatch):
    """No output.weight, as llama.cpp writes Llama-3.2-1B, Qwen2.5-0.5B and Gemma: counted tied, the tie checked."""
    import pandas as pd

    from pipeline.model import formulas, tying

    path = write_gguf(workdir / "src" / f"tied-{qtype}.gguf", qtype, drop="output.weight")
    inv, row = _run(workdir, monkeypatch, path, stages=(count, ties, bias, report))
    tied_total = formulas.llama_params(V, D, L, F, H, KV, tied=True)  # the closed form, V·d fewer than untied
    assert row["total"] == tied_total == llama_total() - V * D
    assert row["declared_tied"] and row["checkpoint_tensors"] == tied_total
    t = pd.read_csv(workdir / "results/ties.csv").iloc[0]
    assert t["declared_tied"] and t["structural_tied"] and not t["stored_separately"]
    assert t["pearson_r"] == 1.0 and t["max_abs_diff"] == 0.0 and t["method"] == tying.GGUF_TIED
    d = pd.read_csv(workdir / "results/distributions.csv")
    assert d.loc[d["by"] == "all", "count"].iloc[0] == tied_total  # every value read once, the tied matrix too
    assert f"{tied_total:,}" in (workdir / "reports/report.md").read_text()


def test_a_split_gguf_with_its_head_in_a_later_shard_is_counted_untied(workdir, monkeypatch):
    import pandas as pd

    from pipeline.formats import gguf_header

    first = write_gguf(workdir / "src" / "tiny.gguf", "Q8_0", split_max_tensors=8, head_last=True)
    first = first.with_name("tiny-00001-of-00003.gguf")
    head_in = [p.name for p in sorted(first.parent.glob("*.gguf")) if "output.weight" in {
        t.name for t in gguf_header.read(p).tensors}]  # fmt: skip
    assert head_in == ["tiny-00003-of-00003.gguf"]
    _, row = _run(workdir, monkeypatch, first, stages=(count, ties))
    assert row["total"] == llama_total() and not row["declared_tied"]
    t = pd.read_csv(workdir / "results/ties.csv").iloc[0]
    assert t["stored_separately"] and abs(t["pearson_r"]) < 0.2  # two independent random matrices


def test_hmp_count_parses_each_gguf_header_once(tmp_path):
    """Once per file per process: transformers' reader, then three listings and two architecture reads, parsed
    a file six times."""
    from pipeline.answers import count
    from pipeline.formats import gguf_header

    first = write_gguf(tmp_path / "src" / "tiny.gguf", "Q8_0", split_max_tensors=8).with_name(
        "tiny-00001-of-00003.gguf"
    )
    before = gguf_header.parses
    got = count.count(str(first)).as_json()
    assert got["summary"]["total"] == llama_total()
    assert gguf_header.parses - before == 3  # one parse per shard, shared through the hard links hmp makes


def write_vocab_gguf(path: Path, vocab: int) -> Path:
    """A tied Llama with a Gemma-sized vocabulary as llama.cpp writes it: every token string, score and type; tiny
    tensors (d = 8, one block). For benchmarks/bench_gguf.py too."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<tok{i}>" for i in range(vocab)])
    w.add_token_scores([float(-i) for i in range(vocab)])
    w.add_token_types([1] * vocab)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, 8), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
              "blk.0.ffn_norm.weight": (8,), "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (4, 8),
              "blk.0.attn_v.weight": (4, 8), "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_gate.weight": (16, 8),
              "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}  # fmt: skip
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


VOCAB_TOTAL = staticmethod(
    lambda vocab: __import__("pipeline.formulas").formulas.llama_params(vocab, 8, 1, 16, 2, 1, True)
)


def test_a_262144_token_vocabulary_counts_in_seconds(tmp_path):
    """Gemma's vocabulary: gguf.GGUFReader takes ~18 s on it (numpy objects for every token); the header here is
    read in well under a second, the token list skipped and only its length kept (vocab_size)."""
    import time

    from pipeline.answers import count
    from pipeline.formats import gguf_file, gguf_header
    from pipeline.model import formulas

    path = write_vocab_gguf(tmp_path / "vocab.gguf", 262_144)
    start = time.perf_counter()
    header = gguf_header.read(path)
    assert time.perf_counter() - start < 2.0
    tokens = header.fields["tokenizer.ggml.tokens"]
    assert not tokens.decoded and tokens.count == 262_144  # skipped, its length kept
    assert gguf_file.config([path])["vocab_size"] == 262_144  # no llama.vocab_size: len(tokens), as transformers
    start = time.perf_counter()
    got = count.count(str(path)).as_json()
    assert time.perf_counter() - start < 20.0  # the whole count, tie check included (112 s before)
    assert got["summary"]["total"] == formulas.llama_params(262_144, 8, 1, 16, 2, 1, tied=True)


def test_an_integer_embedding_is_counted_and_said_not_floats(workdir, monkeypatch):
    """ggml's I8 holds integers, no scale: counted, but the value pass says it does not read them as floats."""
    import pandas as pd

    path = write_gguf(workdir / "src" / "i8.gguf", "F32", types={"token_embd.weight": "I8"})
    inv, row = _run(workdir, monkeypatch, path, stages=(count, ties, bias, report))
    assert row["total"] == llama_total()
    assert inv.set_index("name").loc["model.embed_tokens.weight", "stored_dtype"] == "I8"
    t = pd.read_csv(workdir / "results/ties.csv").iloc[0]
    assert t["method"] == "no value evidence: token_embd.weight is stored as I8, not floats" and pd.isna(t["pearson_r"])
    d = pd.read_csv(workdir / "results/distributions.csv")
    assert d.loc[(d["by"] == "skipped") & (d["group"] == "I8"), "count"].tolist() == [V * D]
    assert d.loc[d["by"] == "all", "count"].iloc[0] == llama_total() - V * D


def test_a_folder_with_config_json_safetensors_and_gguf_counts_the_safetensors_and_says_so(
    workdir, monkeypatch, caplog
):
    import json

    from tests.stages.test_stages import TINY_TOTAL
    from tests.support.checkpoints import tiny_checkpoint

    folder = tiny_checkpoint(workdir / "src" / "both")
    write_gguf(folder / "tiny.gguf", "Q8_0")
    with caplog.at_level("WARNING"):
        _, row = _run(workdir, monkeypatch, folder)
    assert row["total"] == TINY_TOTAL  # the GPT-2 closed form of the safetensors checkpoint, not the GGUF's Llama
    assert "tiny.gguf not counted: model.safetensors is" in caplog.text
    prov = json.loads((workdir / "data/models/g/provenance.json").read_text())
    assert prov["not_counted"] == ["tiny.gguf"]
    assert not list((workdir / "data/models/g").glob("*.gguf"))
