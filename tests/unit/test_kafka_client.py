"""The in-memory side of the Kafka client seam, under the shared contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shipper.kafka.client import MemoryProducerClient, reason_for_error
from tests.kafka_client_contract import KafkaClientContract, send_and_wait


@pytest.fixture
def client() -> MemoryProducerClient:
    return MemoryProducerClient()


@pytest.fixture
def new_topic(client: MemoryProducerClient) -> Callable[[int], str]:
    counter = iter(range(10**6))

    def make(partitions: int) -> str:
        name = f"t{next(counter)}"
        client.partitions[name] = partitions
        return name

    return make


@pytest.fixture
def read_back(
    client: MemoryProducerClient,
) -> Callable[[str], list[tuple[int, bytes | None, bytes]]]:
    return lambda topic: list(client.topics.get(topic, []))


class TestMemoryClient(KafkaClientContract):
    pass


def test_injected_failures_carry_value_and_reason(client: MemoryProducerClient) -> None:
    client.fail_next(2, "timeout")
    r = send_and_wait(client, "t", [b"a", b"b", b"c"])
    assert r.delivered == 1
    assert [(f.value, f.reason) for f in r.failures] == [(b"a", "timeout"), (b"b", "timeout")]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("_MSG_TIMED_OUT", "timeout"),
        ("MSG_SIZE_TOO_LARGE", "message_too_large"),
        ("_AUTHENTICATION", "auth_failure"),
        ("SASL_AUTHENTICATION_FAILED", "auth_failure"),
        ("_TRANSPORT", "error"),
    ],
)
def test_error_names_map_to_reasons(name: str, reason: str) -> None:
    assert reason_for_error(name) == reason


@pytest.mark.parametrize(
    ("text", "short"),
    [
        (
            "127.0.0.1:19092/bootstrap: Connect to ipv4#127.0.0.1:19092 failed: Connection "
            "refused (after 0ms in state CONNECT)",
            "127.0.0.1:19092: Connection refused",
        ),
        ("kafka1:9092/1: Disconnected (after 5012ms in state UP)", "kafka1:9092: Disconnected"),
        ("no broker text at all", "no broker text at all"),
    ],
)
def test_connection_errors_are_shortened_for_users(text: str, short: str) -> None:
    from shipper.kafka.client import _connection_detail

    assert _connection_detail(text) == short
