"""What every quantization layout shares: the rule's signature, the config checks every method makes the same
way, and the checks of a packed tensor against the metadata beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import ceil
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.formats.entries import Entry

Reader = Callable[[Entry], bytes] | None  # a tensor's raw bytes, where the data can be read
# A layout rule: (packed entry, the module's other tensors by suffix, quantization_config, reader) -> the logical
# shape it encodes, or None when the stored shape is the logical one (only the dtype is narrower)
Rule = Callable[[Entry, dict[str, Entry], dict, Reader], tuple[int, ...] | None]

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # a weight stored in one of these is not quantized
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")


@dataclass(frozen=True)
class Layout:
    weight: str  # suffix of the packed tensor
    logical: str  # suffix of the parameter it encodes
    rule: Rule


@dataclass(frozen=True)
class Method:
    """One quantization method: its name in quantization_config, the suffixes of the tensors that only describe
    how a weight is quantized, its layouts, the check of its config fields, and whether a checkpoint under it must
    hold at least one packed or quantized weight."""

    name: str
    metadata: tuple[str, ...]
    layouts: tuple[Layout, ...]
    check: Callable[[dict[str, Any]], None] = lambda q: None
    expects_quantized: Callable[[dict[str, Any]], bool] = lambda q: True


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no number of bits


def whole(value: Any, what: str) -> int:
    if not is_whole(value):
        raise PipelineError(f"quantization_config: {what}={value!r} is not a whole number")
    return value


def bits_of(q: dict[str, Any]) -> int:
    """Bits per value of an integer layout (GPTQ and AWQ write bits, AWQ's older files w_bit)."""
    field = "bits" if "bits" in q or "w_bit" not in q else "w_bit"
    bits = whole(q.get(field), field)
    if bits not in (2, 3, 4, 8):  # transformers' GPTQConfig accepts these; the packing divides 32 by them
        raise PipelineError(f"quantization_config: {field}={bits} is not a width these layouts pack (2, 3, 4, 8)")
    return bits


def group_size(q: dict[str, Any]) -> int | None:
    """GPTQ's and AWQ's group size along the input dimension; None for one group over all inputs (-1, or absent).

    transformers' GPTQConfig, gptqmodel and autoawq accept -1 or a positive size; 0 would divide by zero.
    """
    field = "group_size" if "group_size" in q or "q_group_size" not in q else "q_group_size"
    g = q.get(field)
    if g is None or (is_whole(g) and g == -1):
        return None
    if not is_whole(g) or g <= 0:
        raise PipelineError(
            f"quantization_config: {field}={g!r} must be a positive whole number, or -1 for one group over all inputs"
        )
    return g


def group_of(q: dict[str, Any], rows: int) -> int:
    """The group size for a weight of rows inputs (one group over all of them when the config says -1)."""
    return group_size(q) or rows


def block_of(q: dict[str, Any]) -> tuple[int, int] | None:
    """Block fp8's weight_block_size [rows, columns] (transformers' FineGrainedFP8Config: two positive ints)."""
    block = q.get("weight_block_size")
    if block is None:
        return None  # one scale for the whole tensor
    if not isinstance(block, list) or len(block) != 2 or not all(is_whole(b) and b > 0 for b in block):
        raise PipelineError(
            f"quantization_config: weight_block_size={block!r} must be a list of two positive whole numbers "
            "[rows, columns]"
        )
    return block[0], block[1]


def require(w: Entry, meta: dict[str, Entry], names: tuple[str, ...], what: str) -> None:
    """A quantized weight's module must hold the tensors its format always stores beside it (else its values are
    undefined and a loader fills them with zeros); what names the format in the error."""
    missing = [n for n in names if n not in meta]
    if missing:
        module = w.key.rpartition(".")[0]
        raise PipelineError(
            f"tensor {w.key!r} is a {what} weight, but module {module!r} has no {missing[0]!r} beside it "
            f"({what} stores {', '.join(names)} with every weight)"
        )


def unpacked(entry: Entry, dim: int, bits: int) -> int:
    """How many bits-wide values an int32 dimension of a packed tensor holds."""
    if entry.dtype != "I32":
        raise PipelineError(f"tensor {entry.key!r}: packed weights are int32 words, not {entry.dtype}")
    return entry.shape[dim] * 32 // bits


def expect(entry: Entry | None, shape: tuple[int, ...], why: str) -> None:
    if entry is not None and tuple(entry.shape) != tuple(shape):
        raise PipelineError(f"tensor {entry.key!r}: shape {list(entry.shape)}, but {why} gives {list(shape)}")


def check_integer(q: dict[str, Any]) -> None:
    """The fields GPTQ's and AWQ's integer layouts read: the bits per value and the group size."""
    bits_of(q)
    group_size(q)


def expect_groups(meta: dict[str, Entry], q: dict[str, Any], in_: int, out: int, bits: int) -> None:
    """GPTQ's and AWQ's scales [groups, out] and zero points [groups, out·bits/32], groups along the inputs."""
    groups = ceil(in_ / group_of(q, in_))
    expect(meta.get("scales"), (groups, out), f"{in_} inputs in groups of {group_of(q, in_)}")
    expect(meta.get("qzeros"), (groups, out * bits // 32), f"{out} outputs packed at {bits} bits")
