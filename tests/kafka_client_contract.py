"""One contract for the Kafka client seam, run against the in-memory client (unit tests)
and against librdkafka on the real broker (integration tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shipper.kafka.client import ProducerClient, SendResult


def send_and_wait(
    client: ProducerClient, topic: str, values: list[bytes], **kw: object
) -> SendResult:
    done = threading.Event()
    box: list[SendResult] = []

    def on_done(r: SendResult) -> None:
        box.append(r)
        done.set()

    client.send(
        topic,
        values,
        kw.get("keys"),  # type: ignore[arg-type]
        kw.get("partitions"),  # type: ignore[arg-type]
        on_done,
        probe=bool(kw.get("probe", False)),
    )
    assert done.wait(60), "on_done was never called"
    assert len(box) == 1
    return box[0]


class KafkaClientContract:
    """Subclasses provide ``client``, ``new_topic(partitions) -> name`` and
    ``read_back(topic) -> list[(partition, key, value)]`` fixtures/methods."""

    def test_every_value_is_delivered_once(
        self,
        client: ProducerClient,
        new_topic: Callable[[int], str],
        read_back: Callable[[str], list[tuple[int, bytes | None, bytes]]],
    ) -> None:
        topic = new_topic(3)
        values = [f"v{i}".encode() for i in range(2000)]
        r = send_and_wait(client, topic, values)
        assert (r.sent, r.delivered, r.failures) == (2000, 2000, [])
        assert r.finished >= r.started
        assert sorted(v for _, _, v in read_back(topic)) == sorted(values)

    def test_explicit_partitions_and_keys_are_kept(
        self,
        client: ProducerClient,
        new_topic: Callable[[int], str],
        read_back: Callable[[str], list[tuple[int, bytes | None, bytes]]],
    ) -> None:
        topic = new_topic(3)
        values = [f"v{i}".encode() for i in range(30)]
        keys = [f"k{i % 5}".encode() for i in range(30)]
        parts = [i % 3 for i in range(30)]
        r = send_and_wait(client, topic, values, keys=keys, partitions=parts)
        assert r.delivered == 30
        got = {v: (p, k) for p, k, v in read_back(topic)}
        assert got == {values[i]: (parts[i], keys[i]) for i in range(30)}

    def test_unknown_partition_fails_only_that_message(
        self,
        client: ProducerClient,
        new_topic: Callable[[int], str],
        read_back: Callable[[str], list[tuple[int, bytes | None, bytes]]],
    ) -> None:
        topic = new_topic(2)
        r = send_and_wait(client, topic, [b"ok", b"bad", b"ok2"], partitions=[0, 7, 1])
        assert r.delivered == 2
        assert [(f.value, f.reason) for f in r.failures] == [(b"bad", "error")]
        assert sorted(v for _, _, v in read_back(topic)) == [b"ok", b"ok2"]

    def test_empty_send_completes(
        self, client: ProducerClient, new_topic: Callable[[int], str]
    ) -> None:
        r = send_and_wait(client, new_topic(1), [])
        assert (r.sent, r.delivered) == (0, 0)

    def test_partition_count_comes_from_metadata(
        self, client: ProducerClient, new_topic: Callable[[int], str]
    ) -> None:
        assert client.partition_count(new_topic(4)) == 4
