"""Kafka headers and the entry id on the real broker. Static, from labels and the
stable id on the API's and a file's messages; a file read again whole gives its lines
the same ids; entries dead-lettered in an outage keep their headers, and the replay
sends them."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from actors.pipeline import Shipper
from shipper.dlq import DlqFilter, LmdbDlqStore
from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

HEADERS = {
    "headers": {"env": "prod"},
    "headers_from_labels": ["service"],
    "entry_id_header": "x-log-id",
}


def line(i: int) -> str:
    return json.dumps({"message": f"line {i}", "level": "info", "fields": {"seq": i}})


def by_seq(msgs: list[Any]) -> dict[int, list[dict[str, bytes]]]:
    out: dict[int, list[dict[str, bytes]]] = defaultdict(list)
    for m in msgs:
        out[int(json.loads(m.value())["fields"]["seq"])].append(dict(m.headers() or []))
    return out


def test_api_and_file_messages_carry_headers_and_a_file_read_again_keeps_its_ids(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(line(i) + "\n" for i in range(100)))

    def shipper() -> Shipper:
        cfg = sink_config(kafka, topic, batch_timeout="50ms", **HEADERS)
        cfg["sources"] = {
            "files": [{"paths": [str(logs / "*.log")], "labels": {"service": "files"}}],
            "checkpoints": {"path": str(tmp_path / "cp")},
            "tail": {"poll_interval": "50ms"},
            "http": {"enabled": True, "port": 0},
        }
        s = Shipper(cfg)
        s.start_sources()
        return s

    s = shipper()
    assert s.http_url is not None
    body = json.dumps({"message": "http", "labels": {"service": "web"}, "fields": {"seq": 1002}})
    for _ in range(2):  # a client's retry of the same entry: the same id
        req = urllib.request.Request(s.http_url, data=body.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
    s.submit([{"message": "api", "labels": {"service": "api"}, "fields": {"seq": 1000}}]).result(60)
    s.submit([{"message": "mine", "labels": {"x-log-id": "id-7"}, "fields": {"seq": 1001}}]).result(
        60
    )
    got = by_seq(consume_all(kafka.client_config(), topic, expected=104, timeout=60))
    s.close()
    web = got[1002]
    assert len(web) == 2 and web[0] == web[1] and web[0]["service"] == b"web"
    [api] = got[1000]
    assert api["env"] == b"prod" and api["service"] == b"api" and len(api["x-log-id"]) == 32
    assert got[1001][0]["x-log-id"] == b"id-7"
    first = {i: got[i][0] for i in range(100)}
    assert all(h["service"] == b"files" and h["env"] == b"prod" for h in first.values())
    assert len({h["x-log-id"] for h in first.values()}) == 100

    # The positions forgotten (as after a crash before any checkpoint): every line is
    # sent again, each with the id it had the first time.
    shutil.rmtree(tmp_path / "cp")
    s = shipper()
    again = by_seq(consume_all(kafka.client_config(), topic, expected=204, timeout=60))
    s.close()
    assert all(len(again[i]) == 2 for i in range(100))
    assert all(again[i][0]["x-log-id"] == again[i][1]["x-log-id"] for i in range(100))


def test_entries_dead_lettered_in_an_outage_keep_their_headers_and_the_replay_sends_them(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    dlq_path = str(tmp_path / "dlq")
    # Kafka away (nothing listens there): the breaker opens after unreachable_after
    # and the entries go to the DLQ.
    cfg = sink_config(kafka, topic, batch_timeout="50ms", dlq_config={"path": dlq_path}, **HEADERS)
    real_brokers = cfg["sinks"]["kafka"]["brokers"]  # type: ignore[index]
    cfg["sinks"]["kafka"]["brokers"] = ["127.0.0.1:9"]  # type: ignore[index]
    s = Shipper(cfg)
    entries = [
        {"message": f"m{i}", "labels": {"service": "svc"}, "fields": {"seq": i}} for i in range(20)
    ]
    result = s.submit(entries).result(120)
    s.close()
    assert result.dlq == 20, result
    store = LmdbDlqStore(dlq_path)
    records = store.select(DlqFilter(), 100)
    store.close()
    assert len(records) == 20
    assert all(dict(r.headers).get("env") == b"prod" for r in records), [
        (r.reason, r.error, r.headers) for r in records[:3]
    ]
    ids = {json.loads(r.value)["fields"]["seq"]: dict(r.headers)["x-log-id"] for r in records}

    cfg["sinks"]["kafka"]["brokers"] = real_brokers  # type: ignore[index]
    s = Shipper(cfg)  # Kafka is back: the DLQ's first pass (or this one) replays them
    s.reprocess_dlq()
    got = by_seq(consume_all(kafka.client_config(), topic, expected=20, timeout=60))
    assert s.dlq_count() == 0
    s.close()
    assert {i: h[0]["x-log-id"] for i, h in got.items()} == ids
    assert all(h[0]["service"] == b"svc" and h[0]["env"] == b"prod" for h in got.values())
