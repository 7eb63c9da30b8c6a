"""Kafka headers and the entry id, without Ray: the intake's both paths, the file ids,
the Batcher core and the memory client carrying them, the DLQ record keeping them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.dlq import failure_to_record
from shipper.batching.topic import Gate
from shipper.headers import HeaderMaker, HeaderTable, entry_digest, file_entry_ids
from shipper.intake import Intake, Prepared
from shipper.outcomes import EntryFailure, Reason
from tests.unit.test_intake import intake as base_intake
from tests.unit.test_topic_batcher import Harness, core


def intake(**kafka: Any) -> Intake:
    headers = {
        "headers": {"env": "prod"},
        "headers_from_labels": ["service"],
        "entry_id_header": "x-log-id",
        "partitioning": {"enabled": False},
    }
    return base_intake(**{**headers, **kafka})


def entry(msg: str, **labels: str) -> bytes:
    return json.dumps(
        {"message": msg, "level": "info", "timestamp": 1.0, "labels": labels, "fields": {}}
    ).encode()


def headers_of(p: Prepared, topic: str = "logs") -> list[dict[str, bytes]]:
    seg = p.segments[topic]
    assert seg.headers is not None and len(seg.headers) == len(seg.values)
    return [dict(h) for h in seg.headers]


@pytest.mark.parametrize("fast", [True, False])
def test_static_label_and_id_headers_on_both_paths(fast: bool) -> None:
    ik = intake()
    lines = [entry("a", service="api"), entry("b"), entry("c", **{"x-log-id": "mine"})]
    blob = b"\n".join(lines) + b"\n"
    p = ik.prepare_lines(blob) if fast else ik.prepare_lines(list(lines))
    a, b, c = headers_of(p)
    assert a["env"] == b"prod" and a["service"] == b"api"
    assert "service" not in b  # no such label: no such header
    assert c["x-log-id"] == b"mine"  # the entry's own id wins
    values = list(p.segments["logs"].values)
    assert a["x-log-id"] == entry_digest(values[0]) and len(a["x-log-id"]) == 32
    again = ik.prepare_lines(blob) if fast else ik.prepare_lines(list(lines))
    assert headers_of(again) == [a, b, c]  # the same entry, the same id


@pytest.mark.parametrize("fast", [True, False])
def test_source_labels_give_headers_but_no_shared_id(fast: bool) -> None:
    ik = intake()
    lines = [entry("a"), entry("b", service="own")]
    src = {"service": "from-file", "x-log-id": "same-for-all", "file": "/var/log/a.log"}
    p = ik.prepare_lines(b"\n".join(lines) + b"\n" if fast else list(lines), 1, src)
    a, b = headers_of(p)
    assert a["service"] == b"from-file" and b["service"] == b"own"
    assert a["x-log-id"] != b"same-for-all" != b["x-log-id"]


def test_file_ids_follow_each_line_past_blank_and_bad_lines() -> None:
    ik = intake()
    data = b"plain one\n\nnot json {\n" + entry("x") + b"\nplain two\n"
    ids = file_entry_ids("8:42", 1000, data)
    assert len(ids) == 5 and len(set(ids)) == 5
    p = ik.prepare_lines(data, 7, {"file": "/a"}, ids)
    got = [h["x-log-id"] for h in headers_of(p)]
    # Blank lines make no entry; the others keep their own line's id.
    assert got == [ids[0], ids[2], ids[3], ids[4]]


def test_file_ids_are_stable_per_position_and_content() -> None:
    data = b"one\ntwo\nthree\n"
    whole = file_entry_ids("8:42", 0, data)
    # The same lines read in other blocks (after a restart) get the same ids.
    assert file_entry_ids("8:42", 4, b"two\nthree\n") == whole[1:]
    # New content at the same position (a truncated file) does not.
    assert file_entry_ids("8:42", 0, b"uno\n")[0] != whole[0]
    assert file_entry_ids("8:43", 0, data) != whole  # another file
    # Entries made of several file lines (multiline): positions follow their sizes.
    merged = file_entry_ids("8:42", 0, b'{"message":"a\\nb"}\nc\n', sizes=(4, 2))
    assert merged[1] == file_entry_ids("8:42", 4, b"c\n")[0]


def test_a_table_of_rows_with_and_without_headers() -> None:
    rows = [[("a", b"1")], [], [("b", b"2"), ("a", b"3")]]
    t = HeaderTable.of_rows(rows)
    assert t.rows() == [[("a", b"1")], [], [("a", b"3"), ("b", b"2")]]
    assert HeaderTable(2, [("env", b"x")]).rows() == [[("env", b"x")]] * 2


def test_no_header_setting_means_no_headers() -> None:
    ik = intake(headers={}, headers_from_labels=[], entry_id_header=None)
    assert ik.prepare_lines(entry("a") + b"\n").segments["logs"].headers is None
    assert not HeaderMaker({}, [], None).enabled


def test_the_batcher_core_carries_headers_to_kafka_and_into_dlq_failures() -> None:
    h = Harness(core())
    client = h.client
    ids = [f"id{i}".encode() for i in range(4)]
    table = HeaderTable(4, [("env", b"prod")], ["x-log-id"], [ids])
    hs = [[("env", b"prod"), ("x-log-id", i)] for i in ids]
    assert table.rows() == hs and list(table) == hs and len(table) == 4
    assert table.slice(1, 3).rows() == hs[1:3] and table.take([3, 0]).rows() == [hs[3], hs[0]]
    t = h.c.open(4, submitted_at=h.c.wall())
    client.fail_next(1, Reason.TIMEOUT)
    h.c.offer(t, [b"v0", b"v1", b"v2", b"v3"], None, None, table)
    h.flush()
    assert client.headers["t"] == hs[1:]  # delivered with their headers
    [failed] = h.dlq
    assert failed.headers == hs[0] and failed.value == b"v0"
    record = failure_to_record(failed, 1.0)
    assert record.headers == hs[0]
    # Shed under emergency pressure: the dead letter keeps its headers too.
    h.c.acc.pending_entries = 99  # the queue at its emergency band: debug is shed
    one = table.take([0])
    kept, _k, _l, kept_h, letters = h.c.shed(
        h.c.open(1, submitted_at=0.0), [b"x"], None, ["debug"], one
    )
    assert not kept and kept_h is not None and len(kept_h) == 0
    assert [f.headers for f in letters.failures] == [hs[0]]
    assert h.c.gate() == Gate.PRODUCE


def test_a_failure_without_headers_makes_a_record_without_headers() -> None:
    f = EntryFailure(Reason.TIMEOUT, "x", "t", b"v")
    assert failure_to_record(f, 1.0).headers == []
