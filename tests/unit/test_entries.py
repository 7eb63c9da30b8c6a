"""Tests for shipper.entries: decoding lines and objects, level normalisation, encoding."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.datagen import TENANTS, generate
from shipper.entries import (
    LogEntry,
    _decode_json_line,
    _describe,
    _from_record,
    decode_lines,
    encode_entries,
    from_objects,
    normalize_level,
)
from shipper.errors import EntryError


def test_canonical_json_line() -> None:
    line = (
        b'{"message":"boom","level":"ERROR","timestamp":"2025-01-01T00:00:00Z",'
        b'"labels":{"service":"api"},"fields":{"tenant_id":"t1","n":3}}'
    )
    entries, errors = decode_lines([line])
    assert errors == []
    assert entries == [
        LogEntry(
            "boom",
            "error",
            "2025-01-01T00:00:00Z",
            {"service": "api"},
            {"tenant_id": "t1", "n": 3},
        )
    ]


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("warning", "warn"),
        ("WARN", "warn"),
        ("Err", "error"),
        ("crit", "critical"),
        (" Info ", "info"),
        ("", "info"),
        ("notice", "notice"),
        ("FATAL", "fatal"),
    ],
)
def test_level_normalisation(raw: str, level: str) -> None:
    assert normalize_level(raw) == level
    assert LogEntry("m", raw).level == level
    entries, _ = decode_lines([msgspec.json.encode({"message": "m", "level": raw})])
    assert entries[0].level == level


def test_plain_text_blank_lines_and_numbering() -> None:
    lines: list[bytes | str] = [
        b"plain text line\n",
        b"   \n",
        b"",
        b'{"message":"json"}\n',
        "    at com.example.Foo(Foo.java:10)\r\n",
        b"[1, 2, 3]",
        b'"just a string"',
    ]
    entries, errors = decode_lines(lines, first_line=10)
    assert errors == []
    assert [e.message for e in entries] == [
        "plain text line",
        "json",
        "    at com.example.Foo(Foo.java:10)",
        "[1, 2, 3]",
        '"just a string"',
    ]
    assert all(e.level == "info" for e in entries)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b'{"message": 1}', "wrong type"),
        (b'{"level": "info"}', "missing message"),
        (b'{"message": "x", "labels": {"a": 1}}', "wrong type"),
        (b'{"message": "x", "labels": []}', "wrong type"),
        (b'{"message": "x", "fields": 5}', "wrong type"),
        (b'{"message": "x", "timestamp": [1]}', "wrong type"),
        (b'{"message": "x", "level": 30}', "wrong type"),
        (b'{"message": "x"', "malformed JSON"),
        (b'{"message": "x",}', "malformed JSON"),
        (b"{not json at all}", "malformed JSON"),
        (b'{"message": "caf\xe9"}', "UTF-8"),
        (b"plain \xff\xfe text", "UTF-8"),
        (b'{"message": "x"} trailing', "malformed JSON"),
        (b'{"fields": {"a": 1}, "x": 2}', "missing message"),
    ],
)
def test_bad_lines_give_typed_errors(line: bytes, needle: str) -> None:
    entries, errors = decode_lines([b'{"message":"ok"}', line, b"after"], first_line=5)
    assert [e.message for e in entries] == ["ok", "after"]
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, EntryError)
    assert err.reason == "serialization_error"
    assert err.line == 6
    assert needle in err.detail, err.detail
    assert "line 6" in str(err)


def test_errors_pickle() -> None:
    _, errors = decode_lines([b'{"message": 5}'], first_line=3)
    back = pickle.loads(pickle.dumps(errors[0]))
    assert isinstance(back, EntryError)
    assert (back.reason, back.detail, back.line) == (
        errors[0].reason,
        errors[0].detail,
        errors[0].line,
    )


def test_aliases_and_extra_keys_go_to_fields() -> None:
    lines = [
        b'{"msg": "from zap", "level": "warning", "tenant_id": "t9", "ts": 1.5}',
        b'{"log": "from docker\\n", "stream": "stdout", "time": "2025-01-01T00:00:00Z"}',
        b'{"message": "m", "msg": "kept", "tenant_id": "top", "fields": {"tenant_id": "inner"}}',
    ]
    entries, errors = decode_lines(lines)
    assert errors == []
    a, b, c = entries
    assert (a.message, a.level, a.fields) == ("from zap", "warn", {"tenant_id": "t9", "ts": 1.5})
    assert b.message == "from docker\n"
    assert b.fields == {"stream": "stdout", "time": "2025-01-01T00:00:00Z"}
    # An explicit `fields` wins over a top-level key of the same name.
    assert c.message == "m"
    assert c.fields == {"msg": "kept", "tenant_id": "inner"}


def test_str_lines_and_surrogates() -> None:
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    entries, errors = decode_lines(['{"message":"a"}', bad, "{" + bad + "}", "ok"])
    assert [e.message for e in entries] == ["a", "ok"]
    assert [e.line for e in errors] == [2, 3]
    assert all("UTF-8" in e.detail for e in errors)


def test_two_objects_on_one_line_do_not_shift_others() -> None:
    lines = [
        b'{"message":"a"} {"message":"b"}',
        b'{"message":"c","fields":',
        b'{"m":1}} {"message":"d"}',
        b'{"message":"e"}',
    ]
    entries, errors = decode_lines(lines)
    assert [e.message for e in entries] == ["e"]
    assert [e.line for e in errors] == [1, 2, 3]


def test_fast_and_slow_paths_agree() -> None:
    lines = generate(300)
    fast, errs = decode_lines(lines)
    assert errs == []
    # Forcing the per-line path (one bad line in the batch) gives the same entries.
    slow, errs2 = decode_lines([*lines, b"{bad}"])
    assert slow == fast
    assert len(errs2) == 1 and errs2[0].line == 301


def test_from_objects() -> None:
    ts = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    entry = LogEntry("pre-built", "debug")
    objs: list[Any] = [
        entry,
        {"message": "d", "level": "Warning", "labels": {"kafka_topic": "x"}},
        "plain",
        {"msg": "alias", "tenant_id": "t1", "timestamp": ts},
        {"message": 3},
        42,
        {"level": "info"},
    ]
    entries, errors = from_objects(objs)
    assert entries[0] is entry
    assert entries[1] == LogEntry("d", "warn", labels={"kafka_topic": "x"})
    assert entries[2] == LogEntry("plain")
    assert entries[3] == LogEntry("alias", timestamp=ts.isoformat(), fields={"tenant_id": "t1"})
    assert [(e.line, e.reason) for e in errors] == [
        (5, "serialization_error"),
        (6, "serialization_error"),
        (7, "serialization_error"),
    ]
    assert "unsupported object" in errors[1].detail
    assert "missing message" in errors[2].detail


def test_from_objects_accepts_other_mappings() -> None:
    from types import MappingProxyType

    entries, errors = from_objects([MappingProxyType({"message": "ro", "level": "err"})])
    assert errors == []
    assert entries == [LogEntry("ro", "error")]


def test_encode_is_compact_json_with_stable_schema() -> None:
    values = encode_entries([LogEntry("a\nb", "info"), LogEntry("c", "warn", 1.5, {"k": "v"})])
    assert values == [
        b'{"message":"a\\nb","level":"info","timestamp":null,"labels":{},"fields":{}}',
        b'{"message":"c","level":"warn","timestamp":1.5,"labels":{"k":"v"},"fields":{}}',
    ]
    assert encode_entries([]) == []


def test_encode_never_fails_on_python_values() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd!"

    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    u = uuid.UUID(int=1)
    entries, errors = from_objects(
        [
            {"message": "ok", "fields": {"when": datetime(2025, 1, 1), "id": u, "o": Odd()}},
            {"message": "tuple keys", "fields": {"t": {(1, 2): 3}}},
            {"message": "cycle", "fields": {"c": cyclic}},
            {"message": "bad \ud800 text", "labels": {"a": "\udcff"}},
            {"message": "fine"},
        ]
    )
    assert errors == []
    values = encode_entries(entries)
    assert len(values) == 5
    decoded = [msgspec.json.decode(v) for v in values]
    assert decoded[0]["fields"] == {
        "when": "2025-01-01T00:00:00",
        "id": str(u),
        "o": "odd!",
    }
    assert decoded[1]["fields"] == {"t": {"(1, 2)": 3}}
    assert decoded[2]["message"] == "cycle"
    assert decoded[3]["message"] == "bad \ufffd text"
    assert decoded[4]["message"] == "fine"


def test_entry_pickles() -> None:
    e = LogEntry("m", "error", 1.0, {"a": "b"}, {"x": [1, 2]})
    assert pickle.loads(pickle.dumps(e)) == e


def test_datagen_lines_are_realistic() -> None:
    lines = generate(2000)
    assert lines == generate(2000)  # deterministic
    assert lines != generate(2000, seed=7)
    avg = sum(map(len, lines)) / len(lines)
    assert 250 <= avg <= 380
    entries, errors = decode_lines(lines)
    assert errors == []
    tenants = {e.fields["tenant_id"] for e in entries}
    assert tenants <= set(TENANTS) and len(tenants) > 90
    levels = {e.level for e in entries}
    assert {"info", "warn", "error", "debug"} <= levels


# -- properties --------------------------------------------------------------------

_text = st.text(max_size=40)
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
_floats = st.floats(allow_nan=False, allow_infinity=False)
_json_values = st.recursive(
    _scalars | _floats,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_entries = st.builds(
    LogEntry,
    message=_text,
    level=st.sampled_from(["trace", "debug", "info", "warn", "error", "fatal", "critical"]),
    timestamp=st.none() | _text | _floats,
    labels=st.dictionaries(_text, _text, max_size=4),
    fields=st.dictionaries(_text, _json_values, max_size=5),
)


@given(st.lists(st.binary(max_size=200), max_size=30))
@settings(max_examples=300)
def test_arbitrary_bytes_never_raise(lines: list[bytes]) -> None:
    entries, errors = decode_lines(lines)
    assert len(entries) + len(errors) <= len(lines)
    assert all(isinstance(e, EntryError) and e.line is not None for e in errors)
    encode_entries(entries)


@given(st.lists(st.binary(max_size=80).map(lambda b: b"{" + b + b"}"), max_size=20))
@settings(max_examples=300)
def test_arbitrary_braced_bytes_never_raise(lines: list[bytes]) -> None:
    entries, errors = decode_lines(lines)
    # Each line gives at most one outcome, and line numbers are unique and in order.
    assert len(entries) + len(errors) <= len(lines)
    nums = [e.line or 0 for e in errors]
    assert nums == sorted(set(nums)) and 0 not in nums


@given(st.lists(st.text(max_size=60), max_size=20))
def test_arbitrary_text_never_raises(lines: list[str]) -> None:
    entries, errors = decode_lines(lines)
    encode_entries(entries)
    assert len(entries) + len(errors) <= len(lines)


@given(st.lists(_entries, max_size=20))
@settings(max_examples=200)
def test_encode_decode_round_trip(entries: list[LogEntry]) -> None:
    values = encode_entries(entries)
    assert len(values) == len(entries)
    assert all(b"\n" not in v for v in values)
    back, errors = decode_lines(values)
    assert errors == []
    assert back == entries


# Flat JSON objects as loggers write them: entry keys, aliases and extra top-level keys,
# with values of every JSON kind, often of the wrong type for the key, so that every
# branch of the generic conversion is hit.
_any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _floats | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_flat_objects = st.dictionaries(
    st.sampled_from(
        ["message", "msg", "log", "level", "timestamp", "labels", "fields", "tenant_id", "ts"]
    ),
    _any_json,
    max_size=6,
)
# Objects that do make an entry: a message under one of its names, right-typed entry
# keys, and extra top-level keys of any kind.
_valid_flat = st.builds(
    lambda name, msg, level, ts, labels, fields, extra: {
        **extra,
        name: msg,
        **({"level": level} if level is not None else {}),
        **({"timestamp": ts} if ts is not None else {}),
        **({"labels": labels} if labels is not None else {}),
        **({"fields": fields} if fields is not None else {}),
    },
    st.sampled_from(["message", "msg", "log"]),
    _text,
    st.none() | st.sampled_from(["info", "WARNING", " err ", "notice", ""]),
    st.none() | _text | _floats,
    st.none() | st.dictionaries(_text, _text, max_size=2),
    st.none() | st.dictionaries(_text, _any_json, max_size=2),
    st.dictionaries(st.sampled_from(["tenant_id", "ts", "msg", "log", "sent_at"]), _any_json),
)
# Lines that start with "{" and end with "}" but are not JSON.
_malformed = st.sampled_from([b'{"message": }', b"{not json}", b'{"message": "a",}', b"{}}"])


def _reference(lines: list[bytes]) -> tuple[list[LogEntry], list[tuple[int, str, str]]]:
    """Every line decoded on its own by the per-line decoder."""
    entries, errors = [], []
    for i, line in enumerate(lines, 1):
        out = _decode_json_line(line, i)
        if isinstance(out, EntryError):
            errors.append((out.line, out.reason, out.detail))
        else:
            entries.append(out)
    return entries, errors


@given(
    st.lists(
        st.one_of(
            _valid_flat.map(msgspec.json.encode),
            _entries.map(msgspec.json.encode),
            _flat_objects.map(msgspec.json.encode),
            _malformed,
        ),
        min_size=1,
        max_size=15,
    )
)
@settings(max_examples=400)
def test_batch_decoding_matches_line_by_line(lines: list[bytes]) -> None:
    # decode_lines converts a batch in one call where it can, and object by object
    # where it cannot; each line on its own must give the same entry or the same error.
    entries, errors = decode_lines(lines)
    want_entries, want_errors = _reference(lines)
    assert entries == want_entries
    assert [(e.line, e.reason, e.detail) for e in errors] == want_errors


@given(st.lists(_valid_flat | _flat_objects, min_size=1, max_size=15))
@settings(max_examples=300)
def test_batch_conversion_of_objects_matches_one_by_one(objs: list[dict[str, Any]]) -> None:
    entries, errors = from_objects(objs)
    want_entries, want_errors = [], []
    for i, obj in enumerate(objs, 1):
        try:
            want_entries.append(_from_record(obj))
        except Exception as exc:
            want_errors.append((i, _describe(exc)))
    assert entries == want_entries
    assert [(e.line, e.detail) for e in errors] == want_errors


def test_flat_json_batch_takes_one_conversion() -> None:
    # Extra top-level keys on every line: still one batch, not a per-line fallback
    # (which would raise and catch an exception per line).
    lines = [b'{"sent_at":%d,%s' % (i, line[1:]) for i, line in enumerate(generate(50))]
    entries, errors = decode_lines(lines)
    assert errors == [] and len(entries) == 50
    assert [e.fields["sent_at"] for e in entries] == list(range(50))
    with patch("shipper.entries._decode_json_line", side_effect=AssertionError("per line")):
        assert decode_lines(lines) == (entries, [])
