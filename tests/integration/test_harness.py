"""The test harness is real: every listener of the local broker works, and it refuses
what a real broker refuses (wrong password, missing client certificate, oversize)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from shipper.testing import LocalKafka, consume_all

pytestmark = pytest.mark.kafka

VARIANTS = [
    ("PLAINTEXT", None),
    ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SSL", None),  # mutual TLS: the broker requires the client certificate
    ("SASL_SSL", "SCRAM-SHA-512"),
    ("SASL_SSL", "PLAIN"),
]


def produce(
    conf: dict[str, Any], topic: str, values: list[bytes], timeout: float = 20
) -> list[Message]:
    """Produce ``values`` and return their delivery reports (errors included)."""
    reports: list[Message] = []
    p = Producer({**conf, "message.timeout.ms": int(timeout * 1000)})
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: reports.append(msg))
    p.flush(timeout + 5)
    return reports


@pytest.mark.parametrize(("listener", "mechanism"), VARIANTS, ids=lambda v: str(v))
def test_round_trip_on_every_listener(
    kafka: LocalKafka, topic: str, listener: str, mechanism: str | None
) -> None:
    conf = kafka.client_config(listener, mechanism)
    values = [f"{listener}-{mechanism}-{i}-{uuid.uuid4().hex}".encode() for i in range(50)]
    reports = produce(conf, topic, values)
    assert [m.error() for m in reports] == [None] * len(values)
    got = consume_all(conf, topic, expected=len(values), timeout=30)
    assert sorted(m.value() for m in got) == sorted(values)


def _collect_errors(conf: dict[str, Any], seconds: float) -> list[KafkaError]:
    errors: list[KafkaError] = []
    p = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": int(seconds * 1000)})
    delivered: list[Message] = []
    p.produce("harness-refused", b"x", on_delivery=lambda err, msg: delivered.append(msg))
    deadline = time.monotonic() + seconds + 5
    while time.monotonic() < deadline and not delivered:
        p.poll(0.2)
    assert delivered, "the delivery report never came"
    assert delivered[0].error() is not None, "a refused client delivered a message"
    return errors


def test_wrong_scram_password_is_an_authentication_error(kafka: LocalKafka) -> None:
    conf = kafka.client_config("SASL_PLAINTEXT", "SCRAM-SHA-256")
    conf["sasl.password"] = "definitely-wrong"
    errors = _collect_errors(conf, seconds=5)
    codes = {e.code() for e in errors}
    assert KafkaError._AUTHENTICATION in codes, errors
    assert any("SASL authentication" in e.str() for e in errors), errors


def test_ssl_client_without_certificate_is_refused(kafka: LocalKafka) -> None:
    conf = kafka.client_config("SSL")
    del conf["ssl.certificate.location"], conf["ssl.key.location"]
    errors = _collect_errors(conf, seconds=5)
    assert errors, "the broker accepted a client without a certificate"
    refused = {
        KafkaError._SSL,
        KafkaError._TRANSPORT,
        KafkaError._AUTHENTICATION,
        KafkaError._ALL_BROKERS_DOWN,
    }
    assert {e.code() for e in errors} & refused, errors


def test_message_over_the_broker_limit_is_rejected(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    # The topic's limit is far below the client's, so the broker (not librdkafka) says no.
    topic = make_topic(partitions=1, config={"max.message.bytes": "10000"})
    conf = kafka.client_config(**{"message.max.bytes": 2_000_000})
    (big,) = produce(conf, topic, [b"x" * 50_000])
    assert big.error() is not None and big.error().code() == KafkaError.MSG_SIZE_TOO_LARGE, (
        big.error()
    )
    # The broker rejects a whole record batch, so the small one goes on its own.
    (small,) = produce(conf, topic, [b"small"])
    assert small.error() is None
