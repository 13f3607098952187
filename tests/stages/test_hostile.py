"""Hostile files and careless configs: one line naming what was wrong, nothing written, last good results kept.

Every case starts from a workspace whose stages all ran once on good input (tiny models, one with
weights). It then plants one bad input and runs the stage that must refuse it, in process. The
stage must raise a PipelineError (which `pipeline.cli.run` prints as one `error:` line) whose
message holds the expected fragment, and leave every file in the workspace byte for byte as it was:
no partial output, no write outside the output folders, the previous results intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline.core import compose, params
from pipeline.core.errors import PipelineError
from pipeline.model.whatif import whatif_grid
from pipeline.stages import bias, count, download, report, ties
from tests.conftest import ROOT, TINY, TINY_LLAMA, tiny_params
from tests.support.checkpoints import tiny_checkpoint

STAGES = {"count": count.main, "ties": ties.main, "bias": bias.main, "report": report.main}
LLAMA = {"model_type": "llama", **TINY_LLAMA}


def _write_params(data: dict, generated: bool = False) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    Path("params.yaml").write_text((compose.GENERATED if generated else "") + text)


def _good_params(wd: Path) -> dict:
    data = tiny_params()
    data["models"]["tiny-weights"] = {"source": "path", "path": str(wd / "src" / "tiny-weights")}
    return data


def _download(name: str) -> None:
    argv = sys.argv
    sys.argv = ["download", name]
    try:
        download.main()
    finally:
        sys.argv = argv


def _run(stage: str, model: str | None) -> None:
    if stage == "download":
        _download(model)
    elif stage == "params":
        params.load()
    else:
        STAGES[stage]()


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under root: a regular file's sha256, a symlink's target, or its kind (never read specials).

    The stages' caches (paths.memo) are left out: they keep the work of the models that passed, which is no
    output and stays valid whatever the refused model was (tests/stages/test_sweep.py checks them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if "data/memo" in p.relative_to(root).as_posix():
                continue
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[str(p.relative_to(root))] = "link:" + os.readlink(p)
            elif stat.S_ISREG(mode):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p.relative_to(root))] = "dir" if stat.S_ISDIR(mode) else f"mode:{stat.S_IFMT(mode)}"
    return out


@pytest.fixture(scope="session")
def good_workspace(tmp_path_factory) -> Path:
    """A workspace where download, count, ties, bias and report all ran on good input."""
    wd = tmp_path_factory.mktemp("good")
    shutil.copytree(ROOT / "conf", wd / "conf")
    tiny_checkpoint(wd / "src" / "tiny-weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(wd)
        data = _good_params(wd)
        _write_params(data)
        for name in data["models"]:
            _download(name)
        for main in STAGES.values():
            main()
    return wd


# --- the cases: each plants one bad input and names the stage that must refuse it ----------------

CASES = []


def case(stage: str, fragment: str):
    def register(plant):
        CASES.append(pytest.param(plant, stage, fragment, id=plant.__name__))
        return plant

    return register


def _add_model(wd: Path, name: str, entry: dict, **sections) -> None:
    data = _good_params(wd)
    data["models"][name] = entry
    for key, value in sections.items():
        section, _, field = key.partition("__")
        data[section][field] = value
    _write_params(data)


def _path_model(wd: Path, name: str, **extra) -> Path:
    """A real tiny checkpoint in src/<name>, registered as a source: path model."""
    folder = tiny_checkpoint(wd / "src" / name)
    _add_model(wd, name, {"source": "path", "path": str(folder), **extra})
    return folder


def _safetensors(path: Path, header: dict | bytes, data: int | bytes) -> None:
    """A file in safetensors layout with the given header (dict or raw bytes) and data (bytes or a length)."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    payload = data if isinstance(data, bytes) else bytes(data)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + payload)


def _crafted(wd: Path, name: str, header: dict | bytes, data: int | bytes = 0) -> str:
    folder = _path_model(wd, name)
    _safetensors(folder / "model.safetensors", header, data)
    return name


def _f32(shape: list[int], begin: int) -> dict:
    n = 4
    for s in shape:
        n *= s
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + n]}


# Containment: names read from a file never reach outside the model folder.


@case("download", "points outside")
def index_shard_climbs_out(wd):
    (wd / "victim.txt").write_text("precious\n")
    folder = _path_model(wd, "m")
    (folder / "model.safetensors").rename(folder / "real.safetensors")
    weight_map = {"wte.weight": "../../../victim.txt"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return "m"


@case("download", "points outside")
def index_shard_beside_the_folder(wd):
    folder = _path_model(wd, "m")
    (wd / "src" / "outside").mkdir()
    shutil.copy(folder / "model.safetensors", wd / "src" / "outside" / "x.safetensors")
    weight_map = {"wte.weight": "../outside/x.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return "m"


@case("download", "points outside")
def index_shard_absolute(wd):
    folder = _path_model(wd, "m")
    weight_map = {"wte.weight": str(folder / "model.safetensors")}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return "m"


@case("download", "points outside")
def index_shard_in_a_subfolder(wd):
    folder = _path_model(wd, "m")
    (folder / "sub").mkdir()
    (folder / "model.safetensors").rename(folder / "sub" / "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "sub/model.safetensors"}}))
    return "m"


def plant_remote_headers(folder: Path, target: Path) -> None:
    """The file-planting attack of issue 18: a remote_headers.json whose key climbs out of the folder through a
    symlink into a deep chain of the folder's own subfolders, to name a file that does not exist yet."""
    deep = folder / "d"
    for _ in range(8):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (folder / "lnk").symlink_to(deep, target_is_directory=True)
    key = "lnk/" + "../" * 40 + str(target).lstrip("/")
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    record = {key: {"size": len(raw), "data_start": 8 + n, "header": header}}
    (folder / "remote_headers.json").write_text(json.dumps(record))


@case("download", "remote_headers.json: this file is the pipeline's own record of range-read headers")
def remote_headers_plant_a_file_outside(wd):
    folder = _path_model(wd, "m")
    plant_remote_headers(folder, wd.parent / "planted.pth")  # inside the snapshot: it must stay absent
    return "m"


@case("download", "not a checkpoint index")
def index_without_weight_map(wd):
    folder = _path_model(wd, "m")
    (folder / "model.safetensors.index.json").write_text(json.dumps(["model.safetensors"]))
    return "m"


# Special files: only regular files are read.


def _replaced(wd: Path, file: str, make) -> str:
    """A good path model whose file is replaced by what make(path) puts there."""
    folder = _path_model(wd, "m")
    (folder / file).unlink()
    make(folder / file)
    return "m"


@case("download", "a character device")
def weights_link_to_dev_zero(wd):
    return _replaced(wd, "model.safetensors", lambda p: p.symlink_to("/dev/zero"))


@case("download", "a FIFO")
def weights_are_a_fifo(wd):
    return _replaced(wd, "model.safetensors", os.mkfifo)


@case("download", "a symlink to nothing")
def weights_dangling_symlink(wd):
    return _replaced(wd, "model.safetensors", lambda p: p.symlink_to(p.parent / "gone.safetensors"))


@case("download", "a folder, not a regular file")
def weights_are_a_folder(wd):
    return _replaced(wd, "model.safetensors", Path.mkdir)


@case("download", "a FIFO")
def config_json_is_a_fifo(wd):
    return _replaced(wd, "config.json", os.mkfifo)


# Crafted safetensors headers: the format's own rules.


@case("download", "overlaps the tensor before it")
def untied_head_points_at_the_embedding_bytes(wd):
    """An 'untied' checkpoint whose lm_head.weight is the same bytes as wte.weight: fake r = 1 evidence."""
    folder = tiny_checkpoint(wd / "src" / "m", tied=False, hub_layout=False, masks=False)
    _add_model(wd, "m", {"source": "path", "path": str(folder)})
    path = folder / "model.safetensors"
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8 : 8 + n])
    data = path.read_bytes()[8 + n :]
    wte = header["transformer.wte.weight"]["data_offsets"]
    old = header["lm_head.weight"]["data_offsets"]
    header["lm_head.weight"]["data_offsets"] = list(wte)
    cut = old[1] - old[0]
    data = data[: old[0]] + data[old[1] :]
    for info in header.values():  # close the hole the head left, so only the overlap is wrong
        if isinstance(info, dict) and "data_offsets" in info and info["data_offsets"][0] >= old[1]:
            info["data_offsets"] = [info["data_offsets"][0] - cut, info["data_offsets"][1] - cut]
    _safetensors(path, header, data)
    return "m"


@case("download", "data_offsets [-8, 0] are not two whole numbers")
def negative_offset(wd):
    return _crafted(wd, "m", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, 8)


@case("download", "run backwards")
def offsets_backwards(wd):
    return _crafted(wd, "m", {"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, 8)


@case("download", "leaves a gap of 8 bytes")
def offsets_with_a_gap(wd):
    return _crafted(wd, "m", {"a": _f32([2], 0), "b": _f32([2], 16)}, 24)


@case("download", "bytes before the end of the file")
def data_not_covered(wd):
    return _crafted(wd, "m", {"a": _f32([2], 0)}, 64)


@case("download", "past the end of the file")
def data_past_the_end(wd):
    return _crafted(wd, "m", {"a": _f32([1000], 0)}, 8)


@case("download", "unknown dtype 'F13'")
def unknown_dtype(wd):
    return _crafted(wd, "m", {"a": {"dtype": "F13", "shape": [2], "data_offsets": [0, 8]}}, 8)


@case("download", "is not a list of whole numbers")
def fractional_shape(wd):
    return _crafted(wd, "m", {"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}}, 10)


@case("download", "bytes for shape")
def bytes_disagree_with_shape(wd):
    return _crafted(wd, "m", {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8)


@case("download", "names tensor 'a' twice")
def duplicate_names(wd):
    blob = (
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    )
    return _crafted(wd, "m", blob, 8)


@case("download", "does not start with '{'")
def header_is_a_list(wd):
    return _crafted(wd, "m", b"[1, 2, 3]", 0)


@case("download", "does not start with '{'")
def header_is_a_string(wd):
    return _crafted(wd, "m", b'"model"', 0)


@case("download", "nested too deeply")
def header_nested_200000_deep(wd):
    return _crafted(wd, "m", b'{"a":' * 200_000 + b"1" + b"}" * 200_000, 0)


@case("download", "__metadata__ must map strings to strings")
def metadata_not_strings(wd):
    return _crafted(wd, "m", {"__metadata__": {"format": 1}}, 0)


@case("count", "checkpoint does not match the architecture: missing keys")
def safetensors_with_no_tensors(wd):
    """A valid file holding nothing: not a model without a checkpoint, a checkpoint missing every parameter."""
    _crafted(wd, "m", b"{}", 0)
    _download("m")


@case("download", "header length")
def header_length_absurd(wd):
    folder = _path_model(wd, "m")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    return "m"


# Configs: validated against the model's own schema and the settings' ranges.


@case("count", "architecture.n_embdd is not a field of GPT2Config (did you mean n_embd?)")
def architecture_key_typo(wd):
    arch = {k: v for k, v in TINY.items() if k != "n_embd"}  # a typo is a near name beside no such field
    _add_model(wd, "m", {"source": "config", "architecture": {**arch, "n_embdd": 32}})
    _download("m")
    return None


@case("params", "architecture.num_attention_heads=32 is not a multiple of architecture.num_key_value_heads=5")
def kv_heads_do_not_divide(wd):
    arch = {**LLAMA, "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 5}
    _add_model(wd, "m", {"source": "config", "architecture": arch})


@case("download", "architecture.n_inner=64 but")
def path_architecture_key_not_in_config_json(wd):
    _path_model(wd, "m", architecture={"model_type": "gpt2", "n_inner": 64})
    return "m"


@case("download", "no weights (*.safetensors); set config_only: true")
def path_folder_without_weights(wd):
    folder = _path_model(wd, "m")
    (folder / "model.safetensors").unlink()
    return "m"


@case("params", "architecture.decoder_layers=1000000000 must be a whole number from 0 to 1,024")
def encoder_decoder_with_a_huge_decoder(wd):
    arch = {"model_type": "bart", "d_model": 32, "encoder_layers": 1, "decoder_layers": 10**9, "vocab_size": 64}
    _add_model(wd, "m", {"source": "config", "architecture": arch})


@case("params", "architecture.text_config.num_hidden_layers=1000000 must be a whole number from 0 to 1,024")
def composite_with_a_huge_text_tower(wd):
    arch = {"model_type": "llava", "text_config": {"model_type": "llama", "num_hidden_layers": 10**6}}
    _add_model(wd, "m", {"source": "config", "architecture": arch})


@case("params", "architecture.vision_config.depths=[2, 2, 100000, 2] must be a whole number from 0 to 1,024")
def a_list_of_depths_with_a_huge_stage(wd):
    arch = {"model_type": "swin", "vision_config": {"depths": [2, 2, 100000, 2]}}
    _add_model(wd, "m", {"source": "config", "architecture": arch})


@case("count", "config.json: num_local_experts=10000000 must be a whole number from 0 to 65,536")
def a_checkpoint_config_with_ten_million_experts(wd):
    folder = _path_model(wd, "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_local_experts": 10**7}))
    _download("m")


@case("params", "by architecture.n_head=3; model 'm2': architecture.n_layer=0 must be a whole number")
def two_refused_models_are_both_named(wd):
    data = _good_params(wd)
    data["models"]["m1"] = {"source": "config", "architecture": {**TINY, "n_head": 3}}
    data["models"]["m2"] = {"source": "config", "architecture": {**TINY, "n_layer": 0}}
    _write_params(data)


@case("count", "names the class LlamaForVision, which transformers")
def architectures_names_a_class_transformers_lacks(wd):
    arch = {**LLAMA, "architectures": ["LlamaForVision"]}
    _add_model(wd, "m", {"source": "config", "architecture": arch})
    _download("m")


@case("count", "Unrecognized model type for subconfig: no_such_type (not a model type this transformers has)")
def a_composite_config_with_a_broken_sub_config(wd):
    arch = {"model_type": "llava", "text_config": {**LLAMA, "model_type": "no_such_type"}}
    _add_model(wd, "m", {"source": "config", "architecture": arch})
    _download("m")


@case(
    "params", "architecture.vision_config.hidden_size=64 is not divisible by architecture.vision_config.num_attention_"
)
def a_vision_tower_whose_width_does_not_divide_its_heads(wd):
    vision = {"model_type": "clip_vision_model", "hidden_size": 64, "num_attention_heads": 5, "num_hidden_layers": 1}
    _add_model(wd, "m", {"source": "config", "architecture": {"model_type": "llava", "vision_config": vision}})


@case("params", "architecture.n_layer=1000000000000 must be a whole number from 1 to 1,024")
def absurd_layer_count(wd):
    _add_model(wd, "m", {"source": "config", "architecture": {**TINY, "n_layer": 10**12}})


@case("count", "config.json: n_layer=100000 must be a whole number from 1 to 1,024")
def absurd_layer_count_in_a_checkpoint_config(wd):
    folder = _path_model(wd, "m")
    _download("m")
    config = json.loads((folder / "config.json").read_text())
    (wd / "data/models/m/config.json").unlink()  # a hard link to the source: replace it, not write through
    (wd / "data/models/m/config.json").write_text(json.dumps({**config, "n_layer": 100_000}))
    return None


@case("count", "more than the 10,000,000,000,000 counted at most")
def more_parameters_than_the_cap(wd):
    arch = {**TINY, "vocab_size": 200_000_000, "n_embd": 65_536, "n_head": 1, "n_layer": 1, "n_positions": 1}
    _add_model(wd, "m", {"source": "config", "architecture": arch})
    _download("m")


@case("download", "holds a JSON list, not an object")
def config_json_is_a_list(wd):
    folder = _path_model(wd, "m")
    (folder / "config.json").write_text("[1, 2]")
    return "m"


@case("download", "is not UTF-8 text")
def config_json_not_utf8(wd):
    folder = _path_model(wd, "m")
    (folder / "config.json").write_bytes(b'{"model_type": "gpt2\xff\xfe"}')
    return "m"


@case("params", "is a folder, not a JSON file")
def config_path_is_a_folder(wd):
    (wd / "a-folder").mkdir()
    _add_model(wd, "m", {"source": "config", "config_path": str(wd / "a-folder")})


@case("count", "ImportError: TimmWrapperConfig requires the timm library")
def model_type_needing_a_missing_package(wd):
    _add_model(wd, "m", {"source": "config", "architecture": {"model_type": "timm_wrapper"}})
    _download("m")


@case("count", "model_type='gpt-2' is not built into transformers")
def model_type_typo(wd):
    _add_model(wd, "m", {"source": "config", "architecture": {**TINY, "model_type": "gpt-2"}})
    _download("m")


@case("params", "whatif.head_width=0 must be a whole number")
def whatif_head_width_zero(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, whatif__head_width=0)


@case("params", "values.chunk_elements='big' must be a whole number")
def values_chunk_elements_text(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, values__chunk_elements="big")


@case("params", "values.bins=-1 must be a whole number from 0 to 100,000")
def values_negative_bins(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, values__bins=-1)


@case("params", "values.binz is not a setting (did you mean bins?)")
def values_unknown_key(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, values__binz=10)


@case("params", "values.hist_every=0 must be a whole number from 1 to 1,048,576")
def values_hist_every_zero(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, values__hist_every=0)


@case("params", "sweep='../x' must be the name of a file in conf/sweep/")
def sweep_not_a_name(wd):
    data = _good_params(wd)
    data["sweep"] = "../x"
    _write_params(data)


@case("params", "model 'm': allow_pickle='yes' must be true or false")
def allow_pickle_text(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY, "allow_pickle": "yes"})


@case("params", "model 'm': hub_id=5 must be text (quote it in YAML)")
def hub_id_number(wd):
    _add_model(wd, "m", {"source": "hub", "hub_id": 5})


@case("params", "cost.batch=0 must be a whole number from 1")
def cost_batch_zero(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, cost__batch=0)


@case("report", "line 2: value 'lots' is not a number")
def published_results_not_a_number(wd):
    path = wd / "conf/published/gpt2-zero-shot.csv"
    path.write_text(path.read_text().replace("37.50", "lots", 1))
    _write_params(_good_params(wd))


# New formats: GGUF files and quantized safetensors, read from a model folder.


def _gguf_model(wd: Path, **kwargs) -> Path:
    from tests.formats.test_gguf_file import write_gguf

    first = write_gguf(wd / "src" / "g" / "tiny.gguf", "Q8_0", **kwargs)
    if kwargs.get("split_max_tensors"):
        first = first.with_name("tiny-00001-of-00003.gguf")
    _add_model(wd, "m", {"source": "path", "path": str(first)})
    return first


@case("download", "shard 2 of 3, tiny-00002-of-00003.gguf, is missing")
def gguf_split_shard_missing(wd):
    first = _gguf_model(wd, split_max_tensors=8)
    (first.parent / "tiny-00002-of-00003.gguf").unlink()
    return "m"


@case("download", "name the first shard (-00001-of-)")
def gguf_named_by_a_later_shard(wd):
    first = _gguf_model(wd, split_max_tensors=8)
    _add_model(wd, "m", {"source": "path", "path": str(first.with_name("tiny-00002-of-00003.gguf"))})
    return "m"


@case("download", "junk.gguf: no architecture transformers can read")
def gguf_that_is_not_gguf(wd):
    (wd / "src").mkdir(exist_ok=True)
    (wd / "src" / "junk.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    _add_model(wd, "m", {"source": "path", "path": str(wd / "src" / "junk.gguf")})
    return "m"


@case("download", "a FIFO, not a regular file")
def gguf_that_is_a_fifo(wd):
    (wd / "src").mkdir(exist_ok=True)
    os.mkfifo(wd / "src" / "pipe.gguf")
    _add_model(wd, "m", {"source": "path", "path": str(wd / "src" / "pipe.gguf")})
    return "m"


@case("count", "GGUF does not match the architecture: missing: model.layers.1.mlp.up_proj")
def gguf_missing_a_tensor(wd):
    _gguf_model(wd, drop="blk.1.ffn_up.weight")
    _download("m")


# GGUF headers: every count and length checked against the file before it is used (pipeline/formats/gguf_header.py).


def _gguf_renamed(wd: Path, name: str) -> str:
    """A good GGUF file under another (split) name, registered as model m."""
    first = _gguf_model(wd)
    first.rename(first.with_name(name))
    _add_model(wd, "m", {"source": "path", "path": str(first.with_name(name))})
    return "m"


def _gguf_patched(wd: Path, where, fmt: str, value: int, **kwargs) -> str:
    """A good GGUF file with one number of its header overwritten; where(reader) is its byte offset, found by
    gguf's own reader on the good file."""
    import gguf

    path = _gguf_model(wd, **kwargs)
    offset = where(gguf.GGUFReader(path))
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack("<" + fmt, value))
    return "m"


def _part(field, index: int) -> int:
    """The byte offset of part `index` of a gguf ReaderField (a metadata pair's or a tensor info's)."""
    return field.offset + sum(int(p.nbytes) for p in field.parts[:index])


def _tensor_part(name: str, index: int):
    """Parts of a tensor info: 0 name length, 1 name, 2 n_dims, 3 dims, 4 ggml type, 5 offset."""
    return lambda r: _part(next(t for t in r.tensors if t.name == name).field, index)


@case("download", "its name says a split set of 0 shards")
def gguf_split_named_of_zero(wd):
    return _gguf_renamed(wd, "tiny-00001-of-00000.gguf")


@case("download", "its name says shard 2 of 1, which a set of 1 does not have")
def gguf_split_shard_past_its_count(wd):
    return _gguf_renamed(wd, "tiny-00002-of-00001.gguf")


@case("download", "its name says a split set of 99,999 shards; a split GGUF has 1 to 512")
def gguf_split_count_over_the_cap(wd):
    return _gguf_renamed(wd, "tiny-00001-of-99999.gguf")


@case("download", "its metadata says it is shard 1 of a 3-shard split set; name its first shard")
def gguf_shard_renamed_as_a_model(wd):
    """The first shard alone under a plain name would count a third of the model."""
    first = _gguf_model(wd, split_max_tensors=8)
    first.rename(first.with_name("tiny.gguf"))
    _add_model(wd, "m", {"source": "path", "path": str(first.with_name("tiny.gguf"))})
    return "m"


@case("download", "tensor 'output.weight' (data bytes 0 to 2,176) overlaps tensor 'token_embd.weight'")
def gguf_head_points_at_the_embedding_bytes(wd):
    """An untied GGUF whose output.weight is token_embd.weight's bytes: it would give fake r = 1 evidence."""
    return _gguf_patched(wd, _tensor_part("output.weight", 5), "Q", 0)


@case("download", "is not a multiple of the alignment 32")
def gguf_tensor_offset_not_aligned(wd):
    return _gguf_patched(wd, _tensor_part("output.weight", 5), "Q", 2176 + 4)


@case("download", "no architecture transformers can read (truncated: ")
def gguf_truncated_in_its_metadata(wd):
    path = _gguf_model(wd)
    path.write_bytes(path.read_bytes()[:300])
    return "m"


@case("download", "past the end of the file")
def gguf_truncated_in_its_data(wd):
    path = _gguf_model(wd)
    path.write_bytes(path.read_bytes()[:-1000])
    return "m"


@case("download", "its header lists 50,000 tensors, more than its")
def gguf_tensor_count_beyond_the_file(wd):
    return _gguf_patched(wd, lambda r: 8, "Q", 50_000)


@case("download", "its header lists 50,000 metadata pairs, more than its")
def gguf_kv_count_beyond_the_file(wd):
    return _gguf_patched(wd, lambda r: 16, "Q", 50_000)


@case("download", "metadata 'general.architecture' needs 1,099,511,627,776 bytes at byte")
def gguf_string_length_beyond_the_file(wd):
    return _gguf_patched(wd, lambda r: _part(r.fields["general.architecture"], 3), "Q", 1 << 40)


@case("download", "'tokenizer.ggml.tokens': an array of 1,000,000,000,000 string items cannot fit")
def gguf_array_of_10_12_items(wd):
    return _gguf_patched(wd, lambda r: _part(r.fields["tokenizer.ggml.tokens"], 4), "Q", 10**12)


@case("download", "tensor 'token_embd.weight' has 0 dimensions; a ggml tensor has 1 to 4")
def gguf_tensor_with_no_dimensions(wd):
    return _gguf_patched(wd, _tensor_part("token_embd.weight", 2), "I", 0)


@case("download", "tensor 'token_embd.weight' has 9 dimensions; a ggml tensor has 1 to 4")
def gguf_tensor_with_9_dimensions(wd):
    return _gguf_patched(wd, _tensor_part("token_embd.weight", 2), "I", 9)


@case("download", "tensor 'output_norm.weight': unknown ggml type 99")
def gguf_unknown_ggml_type(wd):
    return _gguf_patched(wd, _tensor_part("output_norm.weight", 4), "I", 99)


@case("download", "more than ggml counts")
def gguf_dims_whose_product_overflows(wd):
    return _gguf_patched(wd, lambda r: _tensor_part("token_embd.weight", 3)(r) + 8, "Q", 1 << 62)  # 32 · 2^62 values


@case("download", "holds config.json and tiny.gguf but no safetensors, so what to count is ambiguous; name the .gguf")
def gguf_beside_a_config_json(wd):
    """Counted from config.json alone, it gave 22,688 parameters where the GGUF holds 41,248: never silently."""
    from tests.formats.test_gguf_file import write_gguf

    folder = _path_model(wd, "m")
    (folder / "model.safetensors").unlink()
    write_gguf(folder / "tiny.gguf", "Q8_0")
    return "m"


def _quantized_model(wd: Path, layout: str, **overrides) -> Path:
    from tests.support.quantized import quantized_llama

    folder = quantized_llama(wd / "src" / "q", layout, **overrides)
    _add_model(wd, "m", {"source": "path", "path": str(folder)})
    return folder


@case("count", "quant_method 'hqq2' has no layout rule")
def quantized_unknown_method(wd):
    folder = _quantized_model(wd, "gptq")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "hqq2"
    (folder / "config.json").write_text(json.dumps(config))
    _download("m")


@case("count", "q_proj.scales': shape [4, 32], but 32 inputs in groups of 16 gives [2, 32]")
def quantized_group_size_disagrees(wd):
    import torch

    _quantized_model(wd, "gptq", **{"model.layers.0.self_attn.q_proj.scales": torch.rand(4, 32).half()})
    _download("m")


def _quantization_config(wd: Path, layout: str, **fields) -> None:
    """A quantized model whose config.json's quantization_config has fields replaced (at any depth: a.b.c)."""
    folder = _quantized_model(wd, layout)
    config = json.loads((folder / "config.json").read_text())
    for path, value in fields.items():
        *parents, last = path.split("__")
        where = config["quantization_config"]
        for key in parents:
            where = where[key]
        where[last] = value
    (folder / "config.json").write_text(json.dumps(config))
    _download("m")


@case("count", "quantization_config: group_size=0 must be a positive whole number, or -1 for one group")
def quantized_group_size_zero(wd):
    _quantization_config(wd, "gptq", group_size=0)


@case("count", "quantization_config: group_size=True must be a positive whole number")
def quantized_group_size_bool(wd):
    _quantization_config(wd, "awq", group_size=True)


@case("count", "quantization_config: bits='4' is not a whole number")
def quantized_bits_text(wd):
    _quantization_config(wd, "gptq", bits="4")


@case("count", "quantization_config: weight_block_size=[16] must be a list of two positive whole numbers")
def quantized_fp8_block_of_one_element(wd):
    _quantization_config(wd, "fp8", weight_block_size=[16])


@case("count", "quantization_config: weight_block_size=[0, 16] must be a list of two positive whole numbers")
def quantized_fp8_block_of_zero(wd):
    _quantization_config(wd, "fp8", weight_block_size=[0, 16])


@case("count", "config_groups.group_0.weights.group_size=0 must be a positive whole number for strategy 'group'")
def quantized_compressed_tensors_group_size_zero(wd):
    _quantization_config(wd, "compressed-pack", config_groups__group_0__weights__group_size=0)


@case("count", "q_proj.qweight' is a GPTQ weight, but module 'model.layers.0.self_attn.q_proj' has no 'scales' beside")
def quantized_gptq_without_scales(wd):
    _quantized_model(wd, "gptq", **{"model.layers.0.self_attn.q_proj.scales": None})
    _download("m")


@case("count", "module 'model.layers.1.mlp.up_proj' has no 'qzeros' beside it")
def quantized_awq_without_zero_points(wd):
    _quantized_model(wd, "awq", **{"model.layers.1.mlp.up_proj.qzeros": None})
    _download("m")


@case("count", "module 'model.layers.0.mlp.down_proj' has no 'weight_shape' beside it")
def quantized_compressed_pack_without_its_shape(wd):
    _quantized_model(wd, "compressed-pack", **{"model.layers.0.mlp.down_proj.weight_shape": None})
    _download("m")


@case("count", "its quantization_config says gptq, but no tensor is packed or quantized (no *.qweight")
def quantized_config_over_a_float_checkpoint(wd):
    from tests.support.quantized import CONFIGS, float_llama

    folder = float_llama(wd / "src" / "q", CONFIGS["gptq"])
    _add_model(wd, "m", {"source": "path", "path": str(folder)})
    _download("m")


@case("count", "unexpected keys: model.layers.99.self_attn.q_proj.scales")
def quantized_scales_of_a_layer_the_model_lacks(wd):
    import torch

    _quantized_model(wd, "gptq", **{"model.layers.99.self_attn.q_proj.scales": torch.rand(2, 32).half()})
    _download("m")


@case("count", "unexpected keys: foo.scales")
def quantized_scales_of_no_module(wd):
    import torch

    _quantized_model(wd, "gptq", **{"foo.scales": torch.rand(2, 32).half()})
    _download("m")


@case("count", "stored twice: h.0.attn.c_attn.weight and transformer.h.0.attn.c_attn.weight both hold")
def untied_parameter_stored_under_two_names(wd):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _path_model(wd, "m")
    state = load_file(str(folder / "model.safetensors"))
    state["transformer.h.0.attn.c_attn.weight"] = torch.randn(*state["h.0.attn.c_attn.weight"].shape)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _download("m")


@case("download", "header lists more than 100,000 tensors, more than any real file")
def header_of_more_tensors_than_any_file(wd):
    blob = b"{" + b",".join(b'"t%d":0' % i for i in range(100_001)) + b"}"  # 1.3 MB: the cap, not the size
    return _crafted(wd, "m", blob, 0)


@case("count", "quantization_config has no quant_method")
def quantized_config_without_method(wd):
    folder = _quantized_model(wd, "awq")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]["quant_method"]
    (folder / "config.json").write_text(json.dumps(config))
    _download("m")


@case("report", "report.dpi=0 must be a whole number from 20 to 1,200")
def report_dpi_zero(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, report__dpi=0)


@case("count", "cost.gpu_memory")
def gpu_memory_that_does_not_parse(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, cost__gpu_memory="lots")


@case("params", "a model name is 1 to 64 letters")
def model_name_300_characters(wd):
    _add_model(wd, "m" * 300, {"source": "config", "architecture": TINY})


@case("params", "a model name is 1 to 64 letters")
def model_name_with_a_newline(wd):
    _add_model(wd, "a\n", {"source": "config", "architecture": TINY})


@case("params", "paths.summary='../elsewhere.csv' must be a relative path inside the repository")
def output_path_outside(wd):
    _add_model(wd, "m", {"source": "config", "architecture": TINY}, paths__summary="../elsewhere.csv")


@case("download", "params.yaml is not the composition of conf/")
def conf_edited_without_make_params(wd):
    data = compose.compose(conf_dir=wd / "conf")
    _write_params(data, generated=True)
    gpt2 = wd / "conf/model/gpt2.yaml"
    gpt2.write_text(gpt2.read_text().replace("n_layer: 12 ", "n_layer: 6 "))
    return "gpt2"


# The file system refuses: a read-only output folder, a full disk.


def _refusing(code: int):
    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return mkstemp


@case("count", "cannot write results/")
def read_only_results(wd):
    tempfile.mkstemp = _refusing(errno.EROFS)  # restored by the test (root ignores chmod, so simulate)


@case("count", "the disk is full")
def full_disk(wd):
    tempfile.mkstemp = _refusing(errno.ENOSPC)


@pytest.mark.parametrize(("plant", "stage", "fragment"), CASES)
def test_bad_input_gives_one_line_and_writes_nothing(plant, stage, fragment, good_workspace, tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    monkeypatch.chdir(wd)
    monkeypatch.setattr(tempfile, "mkstemp", tempfile.mkstemp)  # a case may replace it; undone after
    model = plant(wd)
    before = _snapshot(tmp_path)
    with pytest.raises(PipelineError) as err:
        _run(stage, model)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message and len(message) < 600
    assert _snapshot(tmp_path) == before  # nothing written, nothing removed, nothing outside touched


def test_the_table_holds_every_reported_case():
    assert len(CASES) >= 87  # every case found so far (issue 18 added 39); a lost one fails here


def test_config_only_folder_counts_from_its_config(good_workspace, tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    monkeypatch.chdir(wd)
    folder = _path_model(wd, "m", config_only=True)
    (folder / "model.safetensors").unlink()
    _download("m")
    count.main()
    import pandas as pd

    summary = pd.read_csv("results/summary.csv").set_index("model")
    assert summary.loc["m", "total"] == summary.loc["tiny", "total"]


def test_a_killed_run_leaves_temp_files_that_the_next_run_removes(good_workspace, tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    monkeypatch.chdir(wd)
    (wd / "results/.summary.csv.abc123.tmp").write_text("half")
    (wd / "data/models/.tiny.xyz.tmp").mkdir()
    (wd / "data/models/.tiny.xyz.tmp/model.safetensors").write_bytes(b"\0" * 1024)
    _download("tiny")
    count.main()
    assert not (wd / "results/.summary.csv.abc123.tmp").exists()
    assert not (wd / "data/models/.tiny.xyz.tmp").exists()


def test_outputs_honour_the_umask(good_workspace, tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    monkeypatch.chdir(wd)
    old = os.umask(0o022)
    try:
        _download("tiny")
        count.main()
    finally:
        os.umask(old)
    assert stat.S_IMODE((wd / "results/summary.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((wd / "data/models/tiny").stat().st_mode) == 0o755


def test_whatif_grid_varies_any_family():
    """whatif.base may be a Llama: the grid varies its real depth and width (it was one number repeated)."""
    from pipeline.model import formulas

    data = compose.compose(["model@whatif.base=tinyllama-1_1b"], conf_dir=ROOT / "conf")
    data["whatif"].update({"n_layer": [1, 2], "n_embd": [512, 1024]})
    grid = whatif_grid(params.from_dict(data))
    base = data["whatif"]["base"]["architecture"]
    for row in grid.itertuples():
        heads = row.n_embd // 64
        kv = heads * base["num_key_value_heads"] // base["num_attention_heads"]
        inner = base["intermediate_size"] * row.n_embd // base["hidden_size"]  # the base's MLP ratio
        # formulas.llama_params: V·d + L·(2d² + 2d·kv·h + 3d·f + 2d) + d + V·d (untied head)
        expected = formulas.llama_params(base["vocab_size"], row.n_embd, row.n_layer, inner, heads, kv)
        assert row.params == expected
    assert grid["params"].nunique() == len(grid)


def test_whatif_grid_refuses_widths_that_break_grouped_query_attention():
    data = compose.compose(["model@whatif.base=tinyllama-1_1b"], conf_dir=ROOT / "conf")
    data["whatif"].update({"n_layer": [1], "n_embd": [256]})
    with pytest.raises(PipelineError, match=r"whatif: 4 heads \(d=256\) cannot keep whatif.base's 8 query heads"):
        whatif_grid(params.from_dict(data))


def test_a_yaml_error_in_conf_is_one_line_naming_the_file(tmp_path):
    from tests.conftest import run_module

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with open(tmp_path / "conf/model/gpt2.yaml", "a") as fh:
        fh.write("n_layer: [1, 2\nfoo: : bar\n")
    proc = run_module("pipeline.core.compose", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "conf/model/gpt2.yaml: line" in proc.stderr and "not valid YAML" in proc.stderr
    assert not (tmp_path / "params.yaml").exists()


def test_huggingface_hub_lines_print_once():
    code = "from pipeline.core.errors import run; from huggingface_hub.utils import logging as l; "
    code += "run(lambda: l.get_logger('huggingface_hub.x').warning('Retrying in 1s'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.count("Retrying in 1s") == 1, proc.stderr


def test_path_architecture_keys_left_out_by_save_pretrained_compare_with_the_default(
    good_workspace, tmp_path, monkeypatch
):
    """save_pretrained omits fields at their default (n_inner: null): the shipped gpt2 block still matches."""
    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    monkeypatch.chdir(wd)
    arch = {**TINY, "n_inner": None, "activation_function": "gelu_new"}
    folder = _path_model(wd, "m", architecture=arch)
    assert "n_inner" not in json.loads((folder / "config.json").read_text())
    _download("m")
    assert (wd / "data/models/m/model.safetensors").is_file()


def test_a_tensor_name_cannot_forge_a_second_error_line(good_workspace, tmp_path):
    """Names come from files: the one error line escapes their newlines and is cut at a length a reader can take."""
    from tests.conftest import run_module

    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    folder = tiny_checkpoint(wd / "src" / "m")
    data = _good_params(wd)
    data["models"]["m"] = {"source": "path", "path": str(folder)}
    (wd / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    n = struct.unpack("<Q", (folder / "model.safetensors").read_bytes()[:8])[0]
    raw = (folder / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + n])
    header["wpe.weight\nerror: forged" + "x" * 5000] = header.pop("wpe.weight")
    _safetensors(folder / "model.safetensors", header, raw[8 + n :])
    assert run_module("pipeline.stages.download", "m", cwd=wd).returncode == 0
    proc = run_module("pipeline.stages.count", cwd=wd)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("error: model 'm'") and "Traceback" not in proc.stderr
    assert sum(line.startswith("error") for line in lines) == 1 and len(lines[-1]) <= 1000 + len("error: ")
    assert "\\nerror: forged" in lines[-1]


def test_every_refused_model_of_a_sweep_is_named_in_one_run(good_workspace, tmp_path):
    """Two models the count stage refuses: one error line each, a closing line, and no result file changed."""
    from tests.conftest import run_module

    wd = tmp_path / "wd"
    shutil.copytree(good_workspace, wd, symlinks=True)
    data = _good_params(wd)
    arch = {k: v for k, v in TINY.items() if k != "n_layer"}
    data["models"]["typo1"] = {"source": "config", "architecture": {**arch, "n_layerr": 2}}
    data["models"]["typo2"] = {"source": "config", "architecture": {**arch, "n_layers_": 2}}
    (wd / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("typo1", "typo2"):
        assert run_module("pipeline.stages.download", name, cwd=wd).returncode == 0
    before = _snapshot(wd / "results")
    proc = run_module("pipeline.stages.count", cwd=wd)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("error: model 'typo1': architecture.n_layerr is not a field of GPT2Config")
    assert errors[1].startswith("error: model 'typo2': architecture.n_layers_ is not a field of GPT2Config")
    assert errors[2:] == [f"error: 2 of {len(data['models'])} models refused; nothing was written"]
    assert _snapshot(wd / "results") == before
