"""Our murmur2 partitioner agrees with Kafka's on the real broker.

librdkafka's ``murmur2_random`` partitioner is the Java client's default partitioner
(murmur2 of the key, sign bit cleared, modulo the partition count). We produce keyed
messages with no explicit partition, let librdkafka place them, read everything back
and check that each message sits on the partition ``kafka_partition`` computes, so an
entry our HashPartitioner assigns goes where any Kafka client would send the same key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from shipper.partitioning import HashPartitioner, kafka_partition
from shipper.testing import LocalKafka, consume_all

pytestmark = pytest.mark.kafka

PARTITIONS = 12
COUNT = 10_000


def _keys() -> list[bytes]:
    # Varied lengths (every murmur2 tail case), tenant-like ids, non-ASCII UTF-8 and
    # binary keys.
    keys: list[bytes] = []
    for i in range(COUNT):
        kind = i % 4
        if kind == 0:
            keys.append(f"tenant-{i % 100:03d}".encode())
        elif kind == 1:
            keys.append(str(i).encode())
        elif kind == 2:
            keys.append(f"clé-{i}-{'x' * (i % 7)}".encode())
        else:
            keys.append(i.to_bytes(4, "big") + bytes([i % 251]) * (i % 5))
    return keys


def test_librdkafka_murmur2_placement_matches_ours(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=PARTITIONS)
    keys = _keys()
    conf = kafka.client_config()
    conf.update({"partitioner": "murmur2_random", "linger.ms": 20})
    producer = Producer(conf)
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for i, key in enumerate(keys):
        while True:
            try:
                producer.produce(topic, value=str(i).encode(), key=key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []

    messages = consume_all(kafka.client_config(), topic, expected=COUNT, timeout=60)
    assert len(messages) == COUNT
    ours = HashPartitioner("tenant_id")
    mismatches = []
    for m in messages:
        got_key: bytes | None = m.key()
        value: bytes | None = m.value()
        assert got_key is not None and value is not None
        assert got_key == keys[int(value)]
        expected = kafka_partition(got_key, PARTITIONS)
        if m.partition() != expected:
            mismatches.append((got_key, m.partition(), expected))
    assert mismatches == [], mismatches[:10]
    # The batch API says the same as the per-key function.
    assert ours.assign(keys, PARTITIONS) == [kafka_partition(k, PARTITIONS) for k in keys]
    # And the keys really exercised every partition.
    assert len(Counter(m.partition() for m in messages)) == PARTITIONS
