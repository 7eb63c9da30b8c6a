"""Tests for shipper.batch: building, reading, split/concat/select, compact pickles."""

from __future__ import annotations

import pickle
import pickletools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.datagen import generate
from shipper.batch import LEVEL_CODES, OTHER_LEVEL, EncodedBatch, Span, level_codes


def _batch(n: int = 5, sub: int = 1) -> EncodedBatch:
    values = [f"value-{i}".encode() * (i + 1) for i in range(n)]
    keys = [f"k{i}".encode() if i % 2 == 0 else None for i in range(n)]
    levels = ["info", "error", "debug", "notice", "warn"][:n] * (n // 5 + 1)
    return EncodedBatch.build(
        "logs", values, keys=keys, levels=levels[:n], submission=sub, submitted_at=12.5
    )


def test_build_and_read() -> None:
    b = _batch()
    assert len(b) == 5
    assert b.value_list() == [f"value-{i}".encode() * (i + 1) for i in range(5)]
    assert [bytes(v) for v in b] == b.value_list()
    assert b.value(0) == b"value-0" and b.value(4) == b"value-4" * 5
    assert b.keys() == [b"k0", None, b"k2", None, b"k4"]
    assert b.level_names() == ["info", "error", "debug", "other", "warn"]
    assert b.partitions is None and b.partition_list() is None
    assert b.spans() == [Span(1, 0, 5, 12.5)]
    assert b.entry_ids() == [(1, i) for i in range(5)]
    assert b.nbytes == sum(b.value_sizes())
    assert "entries=5" in repr(b)


def test_keys_absent_or_all_present() -> None:
    vals = [b"a", b"b"]
    assert EncodedBatch.build("t", vals).keys() is None
    assert EncodedBatch.build("t", vals, keys=[None, None]).keys() is None
    full = EncodedBatch.build("t", vals, keys=[b"x", b""])
    assert full.key_mask is None and full.keys() == [b"x", b""]
    with pytest.raises(ValueError):
        EncodedBatch.build("t", vals, keys=[b"x"])
    with pytest.raises(ValueError):
        EncodedBatch.build("t", vals, levels=["info"])


def test_level_codes() -> None:
    assert level_codes(["trace", "critical", "whatever"]) == bytes([0, 6, OTHER_LEVEL])
    assert LEVEL_CODES["error"] > LEVEL_CODES["warn"]
    b = EncodedBatch.build("t", [b"a"], levels=bytes([LEVEL_CODES["fatal"]]))
    assert b.level_names() == ["fatal"]
    assert EncodedBatch.build("t", [b"a"]).level_names() == ["info"]


def test_split_slices_and_spans() -> None:
    b = _batch(5, sub=9)
    parts = b.split(2)
    assert [len(p) for p in parts] == [2, 2, 1]
    assert [v for p in parts for v in p.value_list()] == b.value_list()
    assert [k for p in parts for k in p.keys() or []] == b.keys()
    assert parts[1].spans() == [Span(9, 2, 2, 12.5)]
    assert parts[2].level_names() == ["warn"]
    assert b.split(10) == [b]
    with pytest.raises(ValueError):
        b.split(0)
    assert len(b.slice(3, 3)) == 0
    assert b.slice(-2, 99).value_list() == b.value_list()[3:]


def test_concat_keeps_order_spans_and_fills_partitions() -> None:
    a = _batch(3, sub=1).with_partitions([0, 1, 2])
    b = EncodedBatch.build("logs", [b"x", b"y"], submission=2, first=7, submitted_at=1.0)
    c = EncodedBatch.concat([a, b])
    assert c.value_list() == [*a.value_list(), b"x", b"y"]
    assert c.keys() == [b"k0", None, b"k2", None, None]
    assert c.partition_list() == [0, 1, 2, -1, -1]
    assert c.spans() == [Span(1, 0, 3, 12.5), Span(2, 7, 2, 1.0)]
    assert c.entry_ids() == [(1, 0), (1, 1), (1, 2), (2, 7), (2, 8)]
    assert EncodedBatch.concat([a]) is a
    with pytest.raises(ValueError):
        EncodedBatch.concat([a, EncodedBatch.build("other", [b"z"])])
    with pytest.raises(ValueError):
        EncodedBatch.concat([])


def test_select_for_retries() -> None:
    a = EncodedBatch.build("logs", [b"a0", b"a1", b"a2"], submission=1, submitted_at=1.0)
    b = EncodedBatch.build("logs", [b"b0", b"b1"], keys=[b"k", b"j"], submission=2, first=5)
    c = EncodedBatch.concat([a, b]).with_partitions([0, 1, 2, 3, 4])
    s = c.select([1, 2, 4, -5])
    assert s.value_list() == [b"a1", b"a2", b"b1", b"a0"]
    assert s.keys() == [None, None, b"j", None]
    assert s.partition_list() == [1, 2, 4, 0]
    assert s.spans() == [Span(1, 1, 2, 1.0), Span(2, 6, 1, 0.0), Span(1, 0, 1, 1.0)]
    assert len(c.select([])) == 0
    with pytest.raises(IndexError):
        c.select([5])


def test_with_partitions() -> None:
    b = _batch(3)
    p = b.with_partitions([2, 0, 1])
    assert p.partition_list() == [2, 0, 1] and b.partitions is None
    assert p.with_partitions(None).partitions is None
    with pytest.raises(ValueError):
        b.with_partitions([1])


def test_pickle_round_trip_and_is_compact() -> None:
    values = generate(1000)
    keys = [v[-40:] for v in values]
    b = EncodedBatch.build(
        "logs", values, keys=keys, levels=["info"] * 1000, submission=3, submitted_at=5.0
    ).with_partitions([i % 12 for i in range(1000)])
    blob = pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(blob)
    assert back.value_list() == values and back.keys() == keys
    assert back.partition_list() == b.partition_list() and back.spans() == b.spans()
    payload = len(b.values) + len(b.key_data or b"")
    # Payload + fixed 4-byte ends (values and keys) + 4-byte partitions + 1-byte levels
    # per entry + a constant: no per-entry Python objects in the pickle.
    assert len(blob) < payload + 1000 * 13 + 600
    # The number of pickle opcodes does not grow with the entry count: unpickling
    # makes a few buffers, not one object per entry.
    small = pickle.dumps(b.slice(0, 10), protocol=pickle.HIGHEST_PROTOCOL)
    assert abs(_opcodes(blob) - _opcodes(small)) <= 4 and _opcodes(blob) < 150


def _opcodes(blob: bytes) -> int:
    return sum(1 for _ in pickletools.genops(blob))


@given(
    st.lists(st.tuples(st.binary(max_size=20), st.none() | st.binary(max_size=5)), max_size=30),
    st.integers(1, 7),
)
def test_split_then_concat_is_identity(items: list[tuple[bytes, bytes | None]], size: int) -> None:
    values = [v for v, _ in items]
    keys = [k for _, k in items]
    b = EncodedBatch.build("t", values, keys=keys, submission=4, submitted_at=2.0)
    parts = b.split(size)
    assert all(0 < len(p) <= size for p in parts) or not values
    joined = EncodedBatch.concat(parts)
    assert joined.value_list() == values
    assert (joined.keys() or [None] * len(values)) == keys
    assert joined.entry_ids() == [(4, i) for i in range(len(values))]
    idx = list(range(len(values)))[::-1]
    assert b.select(idx).value_list() == values[::-1]
