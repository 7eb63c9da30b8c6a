"""The Router's intake: the canonical fast path must agree with the general path."""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shipper.config import load_config
from shipper.intake import Intake, Prepared
from shipper.packed import Packed
from shipper.routing import topic_problem


def intake(**kafka: Any) -> Intake:
    base: dict[str, Any] = {
        "enabled": True,
        "brokers": ["127.0.0.1:1"],
        "topic": "logs",
        "routing": {"enabled": False},
        "partitioning": {"enabled": True, "strategy": "hash", "key_field": "tenant_id"},
    }
    base.update(kafka)
    return Intake(load_config({"sinks": {"kafka": base}}).sinks.kafka)


def general(ik: Intake, lines: list[bytes]) -> Prepared:
    # A list of lines always takes the general path (decode, validate, re-encode).
    return ik.prepare_lines(list(lines))


def summary(p: Prepared) -> dict[str, Any]:
    """What reaches Kafka, with values compared as JSON (key order and spacing aside)."""
    return {
        "submitted": p.submitted,
        "segments": {
            t: (
                [msgspec.json.decode(v) for v in seg.values],
                seg.keys,
                list(seg.levels),
            )
            for t, seg in p.segments.items()
        },
        "rejected": sorted((f.reason, f.line) for f in p.rejected),
    }


CANONICAL = [
    b'{"message":"a","level":"info","timestamp":"2026-01-01T00:00:00Z",'
    b'"labels":{"svc":"api"},"fields":{"tenant_id":"t1","n":1}}',
    b'{"fields":{"tenant_id":7},"labels":{},"timestamp":1.5,"level":"error","message":"b"}',
    b'{ "message" : "c", "level": "warn", "timestamp": null, "labels": {"tenant_id": "L"},'
    b' "fields": {} }',
]


def test_canonical_lines_pass_through_unchanged() -> None:
    ik = intake()
    p = ik.prepare_lines(b"\n".join(CANONICAL) + b"\n")
    seg = p.segments["logs"]
    assert isinstance(seg.values, Packed)
    assert list(seg.values) == CANONICAL  # the input bytes themselves
    assert seg.keys == [b"t1", b"7", b"L"]  # fields first, then labels, str() of non-strings
    assert seg.levels == ["info", "error", "warn"]
    assert summary(p) == summary(general(ik, CANONICAL))


@pytest.mark.parametrize(
    "odd",
    [
        b"",  # blank line
        b"plain text line",
        b'{"message":"x"}',  # keys missing: the general path fills them in
        b'{"msg":"x","level":"info","timestamp":null,"labels":{},"fields":{}}',
        b'{"message":"x","level":"WARNING","timestamp":null,"labels":{},"fields":{}}',
        b'{"message":"x","level":"info","timestamp":null,"labels":{},"fields":{},"extra":1}',
        b'{"message":"x","level":"info","timestamp":null,"labels":{"a":1},"fields":{}}',
        b'{"message":"x","level":"info","timestamp":null,"labels":{},"fields":{}}\r',
        b'{"message":"x","level":"info","timestamp":null,"labels":{},"fields":{}} {"message":"y"}',
        b'{"message":"\xff","level":"info","timestamp":null,"labels":{},"fields":{}}',
        b'{"message":"x","level":"info","timestamp":null,"labels":{},"fields":[]}',
        b'{"message": 5, "level":"info","timestamp":null,"labels":{},"fields":{}}',
        # A value running on over the newline, balanced by a line with two values.
        b'{"message":"a","level":"info","timestamp":null,"labels":{},"fields":{}},{"message":"x'
        b'\ny","level":"info","timestamp":null,"labels":{},"fields":{}}',
        b'{"message":"a","level":"info","timestamp":null,"labels":{},"fields":{"a":[{}'
        b'\n{}]}}\n{"message":"b","level":"info","timestamp":null,"labels":{},"fields":{}}'
        b' {"message":"c","level":"info","timestamp":null,"labels":{},"fields":{}}',
    ],
)
def test_any_non_canonical_line_gives_the_general_result(odd: bytes) -> None:
    ik = intake()
    lines = [CANONICAL[0], *odd.split(b"\n"), CANONICAL[1]]
    fast = ik.prepare_lines(b"\n".join(lines))
    assert summary(fast) == summary(general(ik, lines))
    # Never the input lines passed through: something in the blob was not canonical.
    assert fast.whole is None


def test_oversized_line_is_rejected_as_by_the_general_path() -> None:
    ik = intake(max_message_bytes=200)
    big = (
        b'{"message":"' + b"x" * 300 + b'","level":"info","timestamp":null,"labels":{},"fields":{}}'
    )
    lines = [CANONICAL[1], big] * 3
    p = ik.prepare_lines(b"\n".join(lines))
    assert [f.reason for f in p.rejected] == ["message_too_large"] * 3
    assert summary(p) == summary(general(ik, lines))


def test_level_routing_splits_a_canonical_blob_by_topic() -> None:
    ik = intake(routing={"enabled": True})
    p = ik.prepare_lines(b"\n".join(CANONICAL))
    assert len(p.segments) >= 2
    assert summary(p) == summary(general(ik, CANONICAL))
    # Segments still travel packed, and hold the original lines.
    for seg in p.segments.values():
        assert isinstance(seg.values, Packed)
        assert all(v in CANONICAL for v in seg.values)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_entry = st.fixed_dictionaries(
    {
        "message": _text,
        "level": st.sampled_from(["trace", "debug", "info", "warn", "error", "fatal", "critical"]),
        "timestamp": st.one_of(st.none(), _text, st.floats(allow_nan=False, allow_infinity=False)),
        "labels": st.dictionaries(_text, _text, max_size=3),
        "fields": st.dictionaries(
            st.sampled_from(["tenant_id", "n", "x"]),
            st.one_of(st.none(), st.integers(), _text, st.booleans()),
            max_size=3,
        ),
    }
)


def _labelled(value: str) -> dict[str, Any]:
    return {
        "message": "m",
        "level": "info",
        "timestamp": None,
        "labels": {"kafka_topic": value},
        "fields": {},
    }


@given(st.lists(st.tuples(_entry, st.permutations(range(5))), min_size=1, max_size=20))
@example([(_labelled("0"), [0, 1, 2, 3, 4])])  # routed to topic "0"
@example([(_labelled("no/slash"), [4, 3, 2, 1, 0])])  # not a valid topic: rejected
def test_fast_and_general_paths_agree_on_any_canonical_blob(
    items: list[tuple[dict[str, Any], list[int]]],
) -> None:
    ik = intake()
    lines = []
    for entry, order in items:
        keys = list(entry)
        lines.append(msgspec.json.encode({keys[i]: entry[keys[i]] for i in order}))
    p = ik.prepare_lines(b"\n".join(lines))
    assert summary(p) == summary(general(ik, lines))
    # The labels may hold the routing label (Hypothesis draws string constants from
    # the code under test, so "kafka_topic" comes up): such a line goes to that topic,
    # or is rejected when the name is not a valid topic. Every other line stays in the
    # default topic. Either way each line passes through unchanged and in order.
    expected: dict[str, list[bytes]] = {}
    invalid = 0
    for (entry, _order), line in zip(items, lines, strict=True):
        topic = entry["labels"].get("kafka_topic") or "logs"
        if topic_problem(topic) is not None:
            invalid += 1
            continue
        expected.setdefault(topic, []).append(line)
    assert {t: list(seg.values) for t, seg in p.segments.items()} == expected
    assert [f.reason for f in p.rejected] == ["invalid_topic"] * invalid


def test_a_routing_label_sends_a_canonical_line_elsewhere() -> None:
    # The case that made the property above flaky, pinned as an example.
    routed = (
        b'{"message":"m","level":"info","timestamp":null,"labels":{"kafka_topic":"0"},"fields":{}}'
    )
    p = intake().prepare_lines(b"\n".join([CANONICAL[0], routed]))
    assert {t: list(seg.values) for t, seg in p.segments.items()} == {
        "logs": [CANONICAL[0]],
        "0": [routed],
    }


# ---------------------------------------------------------------------- Packed


@pytest.mark.parametrize(
    "values",
    [[], [b""], [b"a"], [b"a", b"", b"c"], [b"with\nnewline", b"x"], [b"\n"], [b"a\n", b"\nb"]],
)
def test_packed_round_trips_through_pickle(values: list[bytes]) -> None:
    packed = Packed.of(values)
    assert len(packed) == len(values) and list(packed) == values
    back = pickle.loads(pickle.dumps(packed))
    assert len(back) == len(values) and list(back) == values and back == values
    assert repr(back) == f"Packed({len(values)} values, {len(back.data)} bytes)"  # no payload


def test_packed_sends_one_buffer_not_a_list() -> None:
    values = [b"x" * 300] * 1000
    payload = pickle.dumps(Packed.of(values))
    assert len(payload) < 300 * 1000 + 1000 + 200
    assert Packed.of(Packed.of(values)) is not None


def test_packed_refuses_a_corrupt_buffer() -> None:
    with pytest.raises(ValueError, match="expected 3"):
        Packed(b"a\nb", 3).values()


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"\n")))
def test_longest_line_matches_splitting(body: bytes) -> None:
    from shipper.intake import _longest_line

    assert _longest_line(body) == max(map(len, body.split(b"\n")))


def test_an_invalid_routing_label_keeps_the_entry_for_the_dlq() -> None:
    # The rejected entry must carry its content (the DLQ stores the value), on both
    # paths; a rejection without a value would be a silent loss.
    bad = msgspec.json.encode(_labelled("no/slash"))
    for lines in ([CANONICAL[0], bad], [CANONICAL[0], b"", bad]):
        fast = intake().prepare_lines(b"\n".join(lines), first_line=10)
        slow = intake().prepare_lines(lines, first_line=10)
        for p in (fast, slow):
            [f] = p.rejected
            assert f.reason == "invalid_topic"
            assert f.line == 10 + len(lines) - 1
            assert f.value is not None
            assert msgspec.json.decode(f.value)["labels"] == {"kafka_topic": "no/slash"}
    [f] = intake().prepare_objects([_labelled("no/slash")]).rejected
    assert f.value is not None and b"no/slash" in f.value


@pytest.mark.parametrize("fast", [True, False])
def test_source_labels_are_added_and_an_entrys_own_label_wins(fast: bool) -> None:
    ik = intake(routing={"enabled": True})
    lines = [CANONICAL[0], CANONICAL[1], b'{"message":"plain, not canonical"}']
    if fast:
        lines = lines[:2]
    blob = b"\n".join(lines) if fast else list(lines)
    p = ik.prepare_lines(blob, labels={"file": "/var/log/a.log", "svc": "from-source"})
    assert p.whole is None  # the lines changed
    got = [msgspec.json.decode(v) for seg in p.segments.values() for v in seg.values]
    assert len(got) == len(lines)
    for entry in got:
        assert entry["labels"]["file"] == "/var/log/a.log"
    svcs = sorted(e["labels"]["svc"] for e in got)
    assert svcs[0] == "api" and set(svcs[1:]) == {"from-source"}  # CANONICAL[0] has svc=api
    assert {e["message"] for e in got} >= {"a", "b"}


@pytest.mark.parametrize(
    ("extra", "labels", "spliced"),
    [
        # Labels empty or not, written without spaces: spliced in.
        (b"", {"file": "/var/log/a.log"}, True),
        (
            b'\n{"message":"c","level":"info","timestamp":null,"labels":{"a":"1"},"fields":{}}',
            {"file": "/var/log/a.log"},
            True,
        ),
        # An entry has the label itself (its own wins): written back.
        (
            b'\n{"message":"c","level":"info","timestamp":null,"labels":{"file":"x"},"fields":{}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        # "labels" spelled twice in a line, or with a space: written back.
        (
            b'\n{"message":"d","level":"info","timestamp":null,"labels":{},"fields":{"labels":{}}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        (
            b'\n{"message":"e","level":"info","timestamp":null,"labels": {},"fields":{}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        # "labels" spelled with an escape as the key, plainly in the fields: the
        # counts match, but the escape sends it the long way.
        (
            b'\n{"message":"f","level":"info","timestamp":null,"label\\u0073":{},'
            b'"fields":{"labels":{}}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        # The source label's name in a message, not as a label: still spliced.
        (
            b'\n{"message":"g \\"file\\"","level":"info","timestamp":null,"labels":{"file2":"1"},'
            b'"fields":{"file":1}}',
            {"file": "/var/log/a.log"},
            True,
        ),
        # An entry's own label with a space before its colon, or an escaped letter in
        # its name: found, and it wins.
        (
            b'\n{"message":"h","level":"info","timestamp":null,"labels":{"file" :"x"},"fields":{}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        (
            b'\n{"message":"i","level":"info","timestamp":null,"labels":{"fil\\u0065":"x"},'
            b'"fields":{}}',
            {"file": "/var/log/a.log"},
            False,
        ),
        # An uppercase letter escaped in the entry's own label name: not a lowercase
        # escape (the splice itself allows it), so only the name check sees it.
        (
            b'\n{"message":"k","level":"info","timestamp":null,"labels":{"\\u0046ile":"x"},'
            b'"fields":{}}',
            {"File": "/var/log/a.log"},
            False,
        ),
        # A name that JSON could spell another way ("\/"): the entries are looked at.
        (
            b'\n{"message":"j","level":"info","timestamp":null,"labels":{"a\\/b":"x"},"fields":{}}',
            {"a/b": "/var/log/a.log"},
            False,
        ),
        # A source label that decides the topic or the key: written back.
        (b"", {"kafka_topic": "other"}, False),
        (b"", {"tenant_id": "t1"}, False),
    ],
)
def test_spliced_and_rewritten_labels_give_the_same_entries(
    extra: bytes, labels: dict[str, str], spliced: bool
) -> None:
    base = [
        b'{"message":"a","level":"warn","timestamp":1.5,"labels":{},"fields":{"x":1}}',
        b'{"fields":{},"labels":{"b":"2"},"message":"b \\"labels\\":{}","level":"info",'
        b'"timestamp":"t"}',
    ]
    blob = b"\n".join(base) + extra
    ik = intake(routing={"enabled": True})
    p = ik.prepare_lines(blob, labels=labels)
    got = [msgspec.json.decode(v) for seg in p.segments.values() for v in seg.values]
    want = [msgspec.json.decode(line) for line in blob.split(b"\n")]
    for w in want:
        w["labels"] = {**labels, **w["labels"]}
    assert sorted(got, key=lambda e: e["message"]) == sorted(want, key=lambda e: e["message"])
    # Spliced lines keep their own key order; rewritten ones take the struct's.
    firsts = {bytes(v)[:9] for seg in p.segments.values() for v in seg.values}
    assert (b'{"fields"' in firsts) == spliced
    # The same topics and keys as the general path (one line at a time).
    general = ik.prepare_lines([*blob.split(b"\n"), b"plain text"], labels=labels)
    for topic, seg in p.segments.items():
        assert seg.keys == general.segments[topic].keys[: len(seg)]


def test_a_source_label_can_route_a_whole_file() -> None:
    p = intake().prepare_lines(b"\n".join(CANONICAL[:2]), labels={"kafka_topic": "nginx"})
    assert list(p.segments) == ["nginx"]


def test_a_topic_template_routes_on_both_paths_and_reports_its_fallbacks() -> None:
    import json

    lines = [
        json.dumps(
            {
                "message": f"m{i}",
                "level": "info",
                "timestamp": None,
                "fields": {"t": i % 2},
                "labels": {"service": ["a", "b", ""][i % 3]},
            }
        ).encode()
        for i in range(6)
    ]
    blob = b"\n".join(lines) + b"\n"
    for topic in ("logs-{labels.service}", "logs-{fields.t}"):
        ik = intake(topic=topic, topic_default="misc", routing={"enabled": False})
        fast = ik.prepare_lines(blob)
        slow = general(ik, lines)
        assert summary(fast) == summary(slow)
        assert fast.topic_fallbacks == slow.topic_fallbacks
    by_label = intake(topic="logs-{labels.service}", topic_default="misc").prepare_lines(blob)
    assert {t: len(s) for t, s in by_label.segments.items()} == {
        "logs-a": 2, "logs-b": 2, "misc": 2
    }  # fmt: skip
    assert by_label.topic_fallbacks == {"missing_field": 2}
    # A source label the template reads decides the topic too.
    labelled = intake(topic="logs-{labels.svc}", topic_default="misc").prepare_lines(
        blob, labels={"svc": "files"}
    )
    assert list(labelled.segments) == ["logs-files"]
