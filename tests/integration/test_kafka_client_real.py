"""librdkafka's side of the Kafka client seam on the real broker, under the shared
contract, plus what only a real broker does (authentication failures)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from shipper.kafka.client import ConfluentProducerClient
from shipper.testing import LocalKafka, consume_all
from tests.kafka_client_contract import KafkaClientContract, send_and_wait

pytestmark = pytest.mark.kafka


@pytest.fixture
def client(kafka: LocalKafka) -> Iterator[ConfluentProducerClient]:
    c = ConfluentProducerClient(kafka.client_config(**{"linger.ms": 5}))
    yield c
    c.close(10)


@pytest.fixture
def new_topic(make_topic: Callable[..., str]) -> Callable[[int], str]:
    return lambda partitions: make_topic(partitions=partitions)


@pytest.fixture
def read_back(kafka: LocalKafka) -> Callable[[str], list[tuple[int, bytes | None, bytes]]]:
    def read(topic: str) -> list[tuple[int, bytes | None, bytes]]:
        return [
            (m.partition(), m.key(), m.value()) for m in consume_all(kafka.client_config(), topic)
        ]

    return read


class TestConfluentClient(KafkaClientContract):
    pass


def test_wrong_password_fails_fast_with_a_clear_reason(kafka: LocalKafka) -> None:
    conf = kafka.client_config("SASL_PLAINTEXT", "SCRAM-SHA-512", **{"message.timeout.ms": 30000})
    conf["sasl.password"] = "wrong"
    c = ConfluentProducerClient(conf)
    try:
        t0 = time.monotonic()
        r = send_and_wait(c, "never-created", [b"a", b"b"])
        elapsed = time.monotonic() - t0
        assert r.delivered == 0 and len(r.failures) == 2
        # Purged on the authentication error, well before message.timeout.ms.
        assert elapsed < 20, elapsed
        assert {f.reason for f in r.failures} == {"auth_failure"}
        assert all("SASL authentication failed" in f.error for f in r.failures)
        assert c.last_error is not None and "SASL authentication failed" in c.last_error
        assert "wrong" not in c.last_error and "wrong" not in repr(c)
    finally:
        c.close(1)


def test_a_full_local_queue_is_waited_out_in_order(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    """produce_batch refuses what does not fit librdkafka's queue; the client offers it
    again once delivery reports made room, in order, and loses nothing."""
    topic = make_topic(partitions=1)
    c = ConfluentProducerClient(kafka.client_config(**{"queue.buffering.max.messages": 50}))
    try:
        values = [b"v%05d" % i for i in range(2000)]
        keys = [b"k%d" % (i % 7) for i in range(2000)]
        r = send_and_wait(c, topic, values, keys=keys)
        assert r.delivered == 2000 and not r.failures, r.failures[:3]
    finally:
        c.close(10)
    got = consume_all(kafka.client_config(), topic, expected=2000)
    assert [m.value() for m in got] == values  # one partition: the send order
    assert [m.key() for m in got] == keys


def test_explicit_partitions_are_honoured(
    kafka: LocalKafka, make_topic: Callable[..., str], client: ConfluentProducerClient
) -> None:
    topic = make_topic(partitions=3)
    values = [b"p%d-%d" % (i % 3, i) for i in range(300)]
    parts = [i % 3 for i in range(300)]
    r = send_and_wait(client, topic, values, partitions=parts)
    assert r.delivered == 300
    got = consume_all(kafka.client_config(), topic, expected=300)
    assert all(m.value().startswith(b"p%d-" % m.partition()) for m in got)
