"""A toy checkpoint format: the smallest module a format can be, registered the way pipeline/formats/__init__.py
registers the built-in ones (tests/formats/test_format_registry.py counts it through every door).

A `.toy` file is b"TOY1", an 8-byte little-endian header length, a JSON header {name: [dtype, shape, begin, end]}
(byte offsets into the data that follows), then the data. It sits beside a config.json, as safetensors do, and
names its tensors as the model's state dict does.
"""

from __future__ import annotations

import json
import struct
from math import prod
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.formats.base import Format, RangeReader
from pipeline.formats.entries import DTYPE_BYTES, Entry, regular_file

MAGIC = b"TOY1"
START = len(MAGIC) + 8


class Toy(Format):
    name = "toy"
    suffixes = (".toy",)

    def entries(self, folder: Path, files: list[str]) -> list[Entry]:
        out: list[Entry] = []
        for name in files:
            path = regular_file(folder / name)
            with open(path, "rb") as fh:
                head = fh.read(START)
                if len(head) < START or head[:4] != MAGIC:
                    raise PipelineError(f"{path}: not a toy file")
                (n,) = struct.unpack("<Q", head[4:])
                header = json.loads(fh.read(n))
                size = fh.seek(0, 2)
            data = START + n
            for key, (dtype, shape, begin, end) in header.items():
                if end - begin != prod(shape) * DTYPE_BYTES[dtype] or data + end > size:
                    raise PipelineError(f"{path}: tensor {key!r} does not fit its bytes")
                out.append(Entry(key, dtype, tuple(shape), name, data + begin, data + end))
        return out

    def header_prefix(self, rf: RangeReader, where: str) -> bytes:
        (n,) = struct.unpack("<Q", rf.read(4, 8))
        return rf.read(0, START + n)


FORMAT = Toy()


def write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A .toy file of float32 tensors."""
    header, blobs, offset = {}, [], 0
    for key, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[key] = ["F32", list(array.shape), offset, offset + len(blob)]
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path
