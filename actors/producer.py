"""Producer actor: one ``confluent_kafka.Producer`` for one broker set.

A broker set is a broker list plus its security settings; the actor is named after
the set's stable id, and a set may have several replicas that Batchers share
round-robin. Each call carries a whole chunk (up to ``batch_size`` entries, in
pieces that belong to different submissions) and returns one result per piece once
every message of it is acked or has failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from shipper.config import KafkaSinkConfig
from shipper.errors import brief
from shipper.kafka.client import ConfluentProducerClient, Failure, ProducerClient, SendResult
from shipper.kafka.settings import librdkafka_settings
from shipper.kafka.stats import make_stats_cb
from shipper.ordering import SequenceGate
from shipper.packed import as_list

from ._options import named_actor, tune_gc
from .payload import Stored, resolve
from .telemetry import Reporter

__all__ = ["Part", "ProducerActor", "lost_payload", "producer_name", "start_producer"]

#: One piece of a chunk: values (a list or a Packed), keys (or None) and explicit
#: partitions (or None: librdkafka's murmur2 partitioner places keyed messages).
Part = tuple[Sequence[bytes] | Stored, list[bytes | None] | None, list[int] | None]


def producer_name(broker_set: str, replica: int) -> str:
    return f"producer:{broker_set}:{replica}"


class ProducerActor:
    """Holds the Kafka client; every method is safe to call concurrently (async actor)."""

    def __init__(
        self,
        sink: KafkaSinkConfig,
        client: ProducerClient | None = None,
        telemetry: Any = None,
        replica: int = 0,
    ) -> None:
        tune_gc()
        self.broker_set = sink.broker_set_id()
        self.telemetry = telemetry
        self.metrics = Reporter(telemetry, f"producer:{self.broker_set}:{replica}")
        if client is None:
            conf = librdkafka_settings(sink)
            # librdkafka's own figures (rtt, queue depth, retries, compression ratio).
            conf.setdefault("statistics.interval.ms", 5000)
            conf["stats_cb"] = make_stats_cb(
                self.metrics.recorder,
                self.broker_set,
                codec=sink.compression,
                on_summary=self._on_stats,
            )
            client = ConfluentProducerClient(conf)
        self._client = client
        self._produced = 0
        self._failed = 0
        self.gate = SequenceGate()

    async def produce(
        self, topic: str, parts: list[Part], order: tuple[str, int] | None = None
    ) -> list[SendResult]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[SendResult]] = []
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            # Read every stored payload first (concurrently), then produce in order. A
            # payload that cannot be read (its owner is gone) fails its own part only.
            payloads = await asyncio.gather(
                *(resolve(v) for v, _k, _p in parts), return_exceptions=True
            )
            lists = [p if isinstance(p, BaseException) else as_list(p) for p in payloads]
            for values, (raw, keys, partitions) in zip(lists, parts, strict=True):
                fut: asyncio.Future[SendResult] = loop.create_future()
                futures.append(fut)
                if isinstance(values, BaseException):
                    fut.set_result(lost_payload(topic, len(raw), keys, values))
                    continue

                def done(r: SendResult, fut: asyncio.Future[SendResult] = fut) -> None:
                    loop.call_soon_threadsafe(fut.set_result, r)

                self._client.send(topic, values, keys, partitions, done)
        results = list(await asyncio.gather(*futures))
        for r in results:
            self._produced += r.delivered
            self._failed += len(r.failures)
        return results

    def _on_stats(self, summary: Any) -> None:
        # Runs on the client's poll thread every statistics interval.
        if getattr(summary, "brokers_up", 0) and self.telemetry is not None:
            self.telemetry.report_health.remote(self.broker_set, None, time.time())
        self.metrics.maybe_push()

    async def partition_count(self, topic: str) -> int:
        return await asyncio.to_thread(self._client.partition_count, topic)

    async def flush(self, timeout: float) -> int:
        return await asyncio.to_thread(self._client.flush, timeout)

    async def close(self, timeout: float) -> int:
        return await asyncio.to_thread(self._client.close, timeout)

    def health(self) -> dict[str, Any]:
        return {
            "outstanding": self._client.outstanding,
            "last_error": self._client.last_error,
            "delivered": self._produced,
            "failed": self._failed,
        }


def lost_payload(
    topic: str, n: int, keys: list[bytes | None] | None, exc: BaseException
) -> SendResult:
    """The result for ``n`` entries whose payload could not be read: reported failures
    with no value (nothing to re-send), reason ``payload_lost``."""
    now = time.time()
    text = f"payload lost before a produce attempt: {brief(exc)}"
    r = SendResult(topic=topic, sent=n, started=now, finished=now)
    r.failures = [Failure(None, keys[i] if keys else None, "payload_lost", text) for i in range(n)]
    return r


def start_producer(
    sink: KafkaSinkConfig, broker_set: str, replica: int, namespace: str, telemetry: Any = None
) -> Any:
    """Create (or find) the named Producer actor for ``broker_set``/``replica``."""
    return named_actor(ProducerActor, producer_name(broker_set, replica), namespace, 256).remote(
        sink, None, telemetry, replica
    )
