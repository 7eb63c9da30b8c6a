"""librdkafka's side of the Kafka client seam on the real broker, under the shared
contract, plus what only a real broker does (authentication failures)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from shipper.kafka_client import ConfluentProducerClient
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
