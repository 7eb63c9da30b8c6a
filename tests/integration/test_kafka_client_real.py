"""librdkafka's side of the Kafka client seam on the real broker, under the shared
contract, plus what only a real broker does (authentication failures)."""

from __future__ import annotations

import re
import socket
import threading
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_broker_set_that_is_gone_is_reported_and_what_the_client_held_fails_at_once() -> None:
    """Nothing listens: librdkafka says every broker is down; after unreachable_after
    the client fails what it holds (circuit_open), tells its owner once, and fails new
    sends at once instead of holding them for message.timeout.ms."""
    told: list[str] = []
    c = ConfluentProducerClient(
        {"bootstrap.servers": f"127.0.0.1:{_free_port()}", "message.timeout.ms": 60000},
        unreachable_after=1.0,
        on_unreachable=told.append,
    )
    try:
        t0 = time.monotonic()
        r = send_and_wait(c, "t", [b"a", b"b", b"c"])
        assert time.monotonic() - t0 < 15
        assert r.delivered == 0 and {f.reason for f in r.failures} == {"circuit_open"}
        assert all("Kafka unreachable: no broker reachable for" in f.error for f in r.failures)
        assert len(told) == 1 and "Connection refused" in told[0], told
        t1 = time.monotonic()
        again = send_and_wait(c, "t", [b"d"])
        assert time.monotonic() - t1 < 1 and again.failures[0].reason == "circuit_open"
        assert len(told) == 1  # once per outage
    finally:
        c.close(1)


def test_a_broker_that_accepts_but_never_answers_is_reported_after_the_message_timeout() -> None:
    """A hung broker (TCP accepted, no answer, like a frozen process): the messages time
    out, and with no answer during their whole life the client reports the set."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accepted, never answered
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    told: list[str] = []
    port = server.getsockname()[1]
    c = ConfluentProducerClient(
        {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": 2000},
        unreachable_after=60.0,
        on_unreachable=told.append,
    )
    try:
        r = send_and_wait(c, "t", [b"a", b"b"])
        assert r.delivered == 0 and {f.reason for f in r.failures} == {"timeout"}
        deadline = time.monotonic() + 5
        while not told and time.monotonic() < deadline:
            time.sleep(0.05)
        # The time said is how long the messages waited: 2 s or a little more on a
        # loaded machine.
        assert told and re.search(r"no broker answered for \d+s \(messages timed out\)", told[0])
        assert send_and_wait(c, "t", [b"c"]).failures[0].reason == "circuit_open"
    finally:
        c.close(1)
        stop.set()
        t.join()
        for s in held:
            s.close()
        server.close()


def test_a_probe_really_tries_while_the_client_takes_the_set_for_unreachable() -> None:
    """After the set was reported unreachable, plain sends fail at once, but the
    breaker's probe is queued in librdkafka and waits for a broker (here: none, so it
    times out)."""
    c = ConfluentProducerClient(
        {"bootstrap.servers": f"127.0.0.1:{_free_port()}", "message.timeout.ms": 1500},
        unreachable_after=0.5,
    )
    try:
        send_and_wait(c, "t", [b"a"])  # reported unreachable on the way
        deadline = time.monotonic() + 10
        while c.reachability.unreachable is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.reachability.unreachable is not None
        assert send_and_wait(c, "t", [b"b"]).failures[0].reason == "circuit_open"
        t0 = time.monotonic()
        probe = send_and_wait(c, "t", [b"c"], probe=True)
        assert probe.failures[0].reason == "timeout" and time.monotonic() - t0 >= 1.0
    finally:
        c.close(1)
