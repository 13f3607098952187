"""Fuzzing the safetensors header reader: any bytes give entries that keep every rule, or one PipelineError.

Property: for any file, `safetensors_file.read_entries` either returns entries that satisfy the format's
rules (known dtypes, whole-number shapes, byte ranges that tile the data region exactly and match
dtype × shape), or raises PipelineError with a one-line message. Never another exception.
"""

from __future__ import annotations

import json
import struct
import tempfile
from math import prod
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.formats import safetensors_file
from pipeline.formats.entries import DTYPE_BITS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(blob)
        try:
            entries = safetensors_file.read_entries(path)
        except PipelineError as exc:
            assert "\n" not in str(exc)
            return
    n = struct.unpack("<Q", blob[:8])[0]
    pos = 8 + n
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        assert e.dtype in DTYPE_BITS
        assert all(isinstance(s, int) and s >= 0 for s in e.shape)
        assert e.begin == pos, "tensors tile the data region with no gap or overlap"
        assert (e.end - e.begin) * 8 == prod(e.shape) * DTYPE_BITS[e.dtype]
        pos = e.end
    assert pos == len(blob), "the data region ends at the end of the file"


def _file(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


# The corpus of hostile headers from the bad-input table (tests/stages/test_hostile.py), kept as examples.
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


DTYPES = st.sampled_from([*DTYPE_BITS, "F13", "", "f32"])
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


# --- a header too wide to be a file's: refused before json builds it -----------------------------------


def _reference_header(text: str) -> dict:
    """What json.loads makes of a header, refusing a name given twice in any object (the oracle)."""

    def unique(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate")
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


JSONISH = st.text(alphabet='{}[]",: \n0123456789.-eEtrufalsnNI\\ab', max_size=60)


@SETTINGS
@given(st.one_of(JSONISH.map(lambda t: "{" + t), st.builds(json.dumps, HEADERS)))
@example('{"a": 1, "b": {"c": [1, 2]}}  ')  # padding after the object, as writers align the data
@example('{"a": 1} x')
@example('{"a": {"b": 1, "b": 2}}')
@example('{"a": 1, "a": 1}')
@example('{"a":}')
def test_the_member_by_member_reader_agrees_with_json_loads(text):
    """checkpoint's reader walks the outer object itself (to stop at the tensor cap): same result as json.loads."""
    try:
        expected = _reference_header(text)
    except (ValueError, RecursionError):
        expected = None
    try:
        _, got = safetensors_file.parse_header(_file(text.encode(), b""), "f")
    except PipelineError as exc:
        assert expected is None or not isinstance(expected, dict), (text, str(exc))
        return
    assert got == expected


def _tiny_tensors(n: int, prefix: str = "t") -> bytes:
    """A header of n empty float32 tensors, each keeping every rule (shape [0], an empty byte range)."""
    entry = b'"%s%%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % prefix.encode()
    return b"{" + b",".join(entry % i for i in range(n)) + b"}"


def test_a_header_of_millions_of_tiny_tensors_is_refused_in_about_a_second(tmp_path):
    """97 MB of 1.65 million valid empty tensors (within the 100 MB cap) took 23 s and 1.5 GB to read."""
    import time
    import tracemalloc

    header = _tiny_tensors(1_650_000)
    assert len(header) < safetensors_file.MAX_HEADER
    path = tmp_path / "model.safetensors"
    path.write_bytes(_file(header, b""))
    del header
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused = r"header has 11,550,000 JSON separators .* of a file of 100,000 tensors"
        with pytest.raises(PipelineError, match=refused):
            safetensors_file.read_entries(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 5, f"{elapsed:.1f} s"  # about a second on an idle machine; slack for a busy one
    assert peak < 3 * path.stat().st_size, f"{peak / 1e6:.0f} MB"  # the header's bytes and a copy, no objects


def test_the_tensor_cap_is_exact(tmp_path):
    """MAX_TENSORS tensors are read; one more is refused while the outer object is read, before any entry is."""
    cap = safetensors_file.MAX_TENSORS
    path = tmp_path / "model.safetensors"
    meta = b'"__metadata__":{"format":"pt"},'  # not a tensor: it does not count against the cap
    path.write_bytes(_file(b"{" + meta + _tiny_tensors(cap)[1:], b""))
    assert len(safetensors_file.read_entries(path)) == cap
    path.write_bytes(_file(_tiny_tensors(cap + 1), b""))
    with pytest.raises(PipelineError, match=rf"header lists more than {cap:,} tensors"):
        safetensors_file.read_entries(path)
    # entries that are not even objects: the cap still comes first, not after a million of them are built
    path.write_bytes(_file(b"{" + b",".join(b'"%d":0' % i for i in range(cap + 1)) + b"}", b""))
    with pytest.raises(PipelineError, match=rf"header lists more than {cap:,} tensors"):
        safetensors_file.read_entries(path)
