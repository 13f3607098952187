"""Fuzzing the safetensors header reader: any bytes give entries that keep every rule, or one PipelineError.

Property: for any file, `checkpoint.read_entries` either returns entries that satisfy the format's
rules (known dtypes, whole-number shapes, byte ranges that tile the data region exactly and match
dtype × shape), or raises PipelineError with a one-line message. Never another exception.
"""

from __future__ import annotations

import json
import struct
import tempfile
from math import prod
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import checkpoint
from pipeline.core.errors import PipelineError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(blob)
        try:
            entries = checkpoint.read_entries(path)
        except PipelineError as exc:
            assert "\n" not in str(exc)
            return
    n = struct.unpack("<Q", blob[:8])[0]
    pos = 8 + n
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        assert e.dtype in checkpoint.DTYPE_BITS
        assert all(isinstance(s, int) and s >= 0 for s in e.shape)
        assert e.begin == pos, "tensors tile the data region with no gap or overlap"
        assert (e.end - e.begin) * 8 == prod(e.shape) * checkpoint.DTYPE_BITS[e.dtype]
        pos = e.end
    assert pos == len(blob), "the data region ends at the end of the file"


def _file(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


# The corpus of hostile headers from the bad-input table (tests/test_hostile.py), kept as examples.
CORPUS = [
    _file(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}', bytes(8)),
    _file(b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', bytes(8)),
    _file(
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
        bytes(8),
    ),  # noqa: E501 (overlap)
    _file(b'{"a":{"dtype":"F13","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
    _file(b'{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,10]}}', bytes(10)),
    _file(
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        bytes(8),
    ),  # noqa: E501 (duplicate)
    _file(b"[1, 2, 3]", b""),
    _file(b'{"a":' * 5000 + b"1" + b"}" * 5000, b""),
    _file(b'{"__metadata__":{"format":1}}', b""),
    _file(b'{"a":{"dtype":"BOOL","shape":[true],"data_offsets":[0,1]}}', bytes(1)),
    _file(b'{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}', bytes(1)),
    struct.pack("<Q", 1 << 62) + b"{}",
    b"\x01\x00",
]


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes(blob):
    _check(blob)


@SETTINGS
@given(st.binary(max_size=256), st.binary(max_size=64))
def test_any_header_text_with_a_true_length(header, data):
    _check(_file(header, data))


DTYPES = st.sampled_from([*checkpoint.DTYPE_BITS, "F13", "", "f32"])
NUMBERS = st.one_of(
    st.integers(-4, 40), st.floats(allow_nan=False, width=16), st.booleans(), st.none(), st.text(max_size=2)
)
ENTRY = st.fixed_dictionaries(
    {
        "dtype": DTYPES,
        "shape": st.one_of(st.lists(NUMBERS, max_size=3), NUMBERS),
        "data_offsets": st.one_of(st.lists(st.integers(-8, 48), min_size=0, max_size=3), NUMBERS),
    }
)
HEADERS = st.dictionaries(st.text(max_size=4), st.one_of(ENTRY, NUMBERS, st.lists(NUMBERS, max_size=2)), max_size=4)


@SETTINGS
@given(HEADERS, st.integers(0, 64))
@example({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 8)  # a good file passes
def test_structured_headers(header, data_len):
    _check(_file(json.dumps(header).encode(), bytes(data_len)))


def test_the_corpus():
    for blob in CORPUS:
        _check(blob)
