"""The actor pipeline end to end on real Ray and the real broker."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from actors.pipeline import Shipper
from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def entries(n: int, tenants: int = 10, level: str = "info") -> list[dict[str, object]]:
    return [
        {
            "message": f"entry {i}",
            "level": level,
            "timestamp": 1700000000.0 + i,
            "labels": {"service": "api"},
            "fields": {"tenant_id": f"t{i % tenants}", "seq": i},
        }
        for i in range(n)
    ]


def values_of(kafka: LocalKafka, topic: str, n: int) -> list[dict[str, object]]:
    return [
        json.loads(m.value())
        for m in consume_all(kafka.client_config(), topic, expected=n, timeout=60)
    ]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_delivers_the_same_entries(kafka: LocalKafka, topic: str, codec: str) -> None:
    batch = entries(500)
    with Shipper(sink_config(kafka, topic, compression=codec)) as s:
        r = s.submit(batch).result(timeout=60)
    assert r.ok and r.delivered == 500, r.summary()
    got = values_of(kafka, topic, 500)
    assert sorted(e["fields"]["seq"] for e in got) == list(range(500))  # type: ignore[index]
    assert {e["message"] for e in got} == {e["message"] for e in batch}


def test_hash_partitioning_keeps_each_tenant_in_one_partition_in_order(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=6)
    cfg = sink_config(
        kafka, topic, partitioning={"enabled": True, "strategy": "hash", "key_field": "tenant_id"}
    )
    with Shipper(cfg) as s:
        acks = [s.submit(entries(1000, tenants=25)[i : i + 250]) for i in range(0, 1000, 250)]
        assert all(a.result(60).ok for a in acks)
    msgs = consume_all(kafka.client_config(), topic, expected=1000, timeout=60)
    by_tenant: dict[str, set[int]] = defaultdict(set)
    order: dict[str, list[int]] = defaultdict(list)
    for m in sorted(msgs, key=lambda m: (m.partition(), m.offset())):
        e = json.loads(m.value())
        by_tenant[e["fields"]["tenant_id"]].add(m.partition())
        order[e["fields"]["tenant_id"]].append(e["fields"]["seq"])
        assert m.key() == e["fields"]["tenant_id"].encode()
    assert all(len(p) == 1 for p in by_tenant.values()), by_tenant
    assert all(seq == sorted(seq) for seq in order.values())
    assert len({p for ps in by_tenant.values() for p in ps}) > 1


def test_round_robin_spreads_each_batch_evenly(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=4)
    cfg = sink_config(
        kafka, topic, batch_size=1000, partitioning={"enabled": True, "strategy": "round-robin"}
    )
    with Shipper(cfg) as s:
        assert s.submit(entries(1002)).result(60).ok
    counts = Counter(
        m.partition() for m in consume_all(kafka.client_config(), topic, expected=1002)
    )
    assert len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1, counts


def test_random_uses_every_partition(kafka: LocalKafka, make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=5)
    cfg = sink_config(kafka, topic, partitioning={"enabled": True, "strategy": "random"})
    with Shipper(cfg) as s:
        assert s.submit(entries(10_000)).result(60).ok
    counts = Counter(
        m.partition() for m in consume_all(kafka.client_config(), topic, expected=10_000)
    )
    assert set(counts) == set(range(5)), counts


def test_label_override_and_priority_routing(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    default, high, low, custom = (make_topic() for _ in range(4))
    cfg = sink_config(
        kafka,
        default,
        routing={"enabled": True, "high_priority_topic": high, "low_priority_topic": low},
    )
    batch = [
        {"message": "e", "level": "error"},
        {"message": "f", "level": "fatal"},
        {"message": "c", "level": "critical"},
        {"message": "d", "level": "debug"},
        {"message": "t", "level": "trace"},
        {"message": "i", "level": "info"},
        {"message": "w", "level": "warn"},
        {"message": "x", "level": "error", "labels": {"kafka_topic": custom}},
    ]
    with Shipper(cfg) as s:
        r = s.submit(batch).result(60)
    assert r.ok, r.summary()
    assert r.delivered_by_topic == {high: 3, low: 2, default: 2, custom: 1}
    assert sorted(e["message"] for e in values_of(kafka, high, 3)) == ["c", "e", "f"]
    assert sorted(e["message"] for e in values_of(kafka, low, 2)) == ["d", "t"]
    assert sorted(e["message"] for e in values_of(kafka, default, 2)) == ["i", "w"]
    assert [e["message"] for e in values_of(kafka, custom, 1)] == ["x"]


def test_a_topic_template_routes_each_service_and_falls_back_to_the_default(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    base = make_topic()
    billing, search, fallback = (
        make_topic(f"{base}-billing"),
        make_topic(f"{base}-search"),
        make_topic(),
    )
    cfg = sink_config(kafka, f"{base}-{{labels.service}}", topic_default=fallback, max_topics=2)
    batch = [
        {"message": f"m{i}", "level": "info", "labels": {"service": svc}}
        for i, svc in enumerate(["billing", "search", "billing", "", "bad name", "third"])
    ] + [{"message": "none", "level": "info"}]
    with Shipper(cfg) as s:
        r = s.submit(batch).result(60)
        s.flush(30)
    assert r.ok, r.summary()
    assert r.delivered_by_topic == {billing: 2, search: 1, fallback: 4}
    assert sorted(e["message"] for e in values_of(kafka, billing, 2)) == ["m0", "m2"]
    assert [e["message"] for e in values_of(kafka, search, 1)] == ["m1"]
    assert sorted(e["message"] for e in values_of(kafka, fallback, 4)) == ["m3", "m4", "m5", "none"]


@pytest.mark.parametrize(
    ("listener", "mechanism"),
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
        ("SSL", None),
        ("SASL_SSL", "SCRAM-SHA-512"),
    ],
)
def test_secured_configs_deliver(
    kafka: LocalKafka, topic: str, listener: str, mechanism: str | None
) -> None:
    with Shipper(sink_config(kafka, topic, listener, mechanism)) as s:
        r = s.submit(entries(200)).result(60)
    assert r.ok and r.delivered == 200, r.summary()
    assert len(values_of(kafka, topic, 200)) == 200


def test_wrong_password_is_a_clear_error_not_a_hang(kafka: LocalKafka, topic: str) -> None:
    # Without the DLQ the failure reaches the acknowledgement itself (with the DLQ on,
    # the entries are parked instead: see the fault tests).
    cfg = sink_config(
        kafka,
        topic,
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        timeout="20s",
        dlq_config={"enabled": False},
    )
    cfg["sinks"]["kafka"]["auth"]["password"] = "not-the-password"  # type: ignore[index]
    with Shipper(cfg) as s:
        r = s.submit(entries(10)).result(timeout=30)
    assert not r.ok and r.delivered == 0 and r.failed == 10
    assert {f.reason for f in r.failures} == {"auth_failure"}
    assert all("SASL authentication failed" in f.error for f in r.failures)
    assert all("not-the-password" not in f.error for f in r.failures)


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_each_acks_level_delivers(kafka: LocalKafka, topic: str, acks: int) -> None:
    with Shipper(sink_config(kafka, topic, required_acks=acks)) as s:
        r = s.submit(entries(3000)).result(60)
    assert r.ok and r.delivered == 3000
    got = values_of(kafka, topic, 3000)
    seqs = Counter(e["fields"]["seq"] for e in got)  # type: ignore[index]
    assert len(seqs) == 3000
    if acks == -1:  # idempotent producer: no duplicates
        assert max(seqs.values()) == 1


def test_count_in_equals_count_out_for_100k(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    lines = [
        json.dumps({"message": f"m{i}", "level": "info", "fields": {"seq": i}}).encode()
        for i in range(100_000)
    ]
    with Shipper(sink_config(kafka, topic)) as s:
        acks = [s.submit_lines(b"\n".join(lines[i : i + 5000])) for i in range(0, 100_000, 5000)]
        results = [a.result(120) for a in acks]
        stats = s.stats()
    assert sum(r.delivered for r in results) == 100_000 and all(r.ok for r in results)
    assert stats.delivered == 100_000 and stats.failed == 0
    got = consume_all(kafka.client_config(), topic, expected=100_000, timeout=120)
    assert len({json.loads(m.value())["fields"]["seq"] for m in got}) == 100_000


def test_close_mid_stream_loses_nothing_acknowledged(kafka: LocalKafka, topic: str) -> None:
    s = Shipper(sink_config(kafka, topic, batch_timeout="200ms"))
    acks = [s.submit(entries(2000)) for _ in range(10)]
    report = s.close(timeout=60)
    assert report.drained
    delivered = sum(a.result().delivered for a in acks)
    assert delivered == 20_000 and report.stats.delivered == 20_000
    assert (
        len(consume_all(kafka.client_config(), topic, expected=delivered, timeout=60)) == delivered
    )


def test_two_producer_replicas_share_the_chunks_without_stalling(
    kafka: LocalKafka, topic: str
) -> None:
    cfg = sink_config(kafka, topic, batch_size=500)
    cfg["pipeline"] = {"producer_replicas": 2}
    with Shipper(cfg) as s:
        t0 = time.monotonic()
        acks = [s.submit(entries(1000)) for _ in range(10)]
        assert all(a.result(60).ok for a in acks)
        # Each replica numbers its own calls: no waiting on another replica's numbers.
        assert time.monotonic() - t0 < 20
    assert len(values_of(kafka, topic, 10_000)) == 10_000


def test_one_submission_larger_than_the_queue_goes_in_pieces_not_to_the_dlq(
    kafka: LocalKafka, topic: str
) -> None:
    """One blob of 5,000 lines against a queue of 1,000 (an API caller or an HTTP
    request that did not split its input): the Batcher queues it in pieces that each
    wait for room, so none of it is shed to the DLQ for its size alone."""
    cfg = sink_config(kafka, topic, queue_size=1000, batch_size=100, batch_timeout="20ms")
    blob = b"\n".join(json.dumps(e).encode() for e in entries(5000)) + b"\n"
    with Shipper(cfg) as s:
        result = s.submit_lines(blob).result(60)
        q = s.queue_stats()[0]
    assert result.ok and result.delivered == 5000 and result.dlq == 0, result.summary()
    assert q["shed"] == 0, q
    assert len(consume_all(kafka.client_config(), topic, expected=5000, timeout=60)) == 5000


def test_a_small_queue_slows_one_sender_down_instead_of_shedding(
    kafka: LocalKafka, topic: str
) -> None:
    """One driver keeps its entries in flight under the queue's warning band: with a
    queue of 1,000, twenty 400-entry blobs of canonical lines all reach Kafka, none is
    shed to the DLQ and no backpressure band is ever entered."""
    cfg = sink_config(kafka, topic, queue_size=1000, batch_size=100, batch_timeout="20ms")
    cfg["pipeline"] = {"max_inflight_submissions": 32}
    blobs = [b"\n".join(json.dumps(e).encode() for e in entries(400)[:]) + b"\n" for _ in range(20)]
    with Shipper(cfg) as s:
        acks = [s.submit_lines(b) for b in blobs]
        results = [a.result(60) for a in acks]
        q = s.queue_stats()[0]
    assert all(r.ok and r.delivered == 400 and r.dlq == 0 for r in results)
    assert q["shed"] == 0 and q["backpressure_warning"] == 0, q
    assert len(consume_all(kafka.client_config(), topic, expected=8000, timeout=60)) == 8000


def test_pipelines_that_do_not_start_in_time_stop_with_the_nodes_named_and_leave_nothing(
    kafka: LocalKafka, topic: str, ray_session: None
) -> None:
    import ray

    from shipper.errors import StartError

    cfg = sink_config(kafka, topic)
    cfg["fleet"] = {"start_timeout": "0.01s"}  # no pipeline starts that fast
    before = {a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)}
    with pytest.raises(StartError, match="node") as info:
        Shipper(cfg)
    assert "fleet.start_timeout" in str(info.value) or "no node pipeline started" in str(info.value)
    # Nothing of the half-started shipper lingers (killed: gone within a few seconds).
    deadline = time.monotonic() + 20
    while True:
        after = {a["namespace"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if after <= before or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after <= before, after - before
