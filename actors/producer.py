"""Producer actor: one ``confluent_kafka.Producer`` for one broker set.

A broker set is a broker list plus its security settings; a set may have several
replicas that the Batchers share round-robin. Each call carries a whole chunk (up to
``batch_size`` entries, in pieces that belong to different submissions) and returns
one result per piece once every message of it is acked or has failed. The client
(:mod:`shipper.kafka.client`) does the work; this shell reads the object store,
keeps calls in order and owns the Ray lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from shipper.kafka.client import ConfluentProducerClient, ProducerClient, SendResult
from shipper.kafka.settings import librdkafka_settings
from shipper.kafka.stats import make_stats_cb
from shipper.logs import librdkafka_logger
from shipper.ordering import SequenceGate
from shipper.packed import as_list

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .handles import Order, ProducerHandle
from .payload import lost_payload, resolve
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["ProducerActor", "start_producer"]

log = logging.getLogger("shipper.producer")


class ProducerActor:
    """Holds the Kafka client; every method is safe to call concurrently (async actor)."""

    def __init__(self, wiring: Wiring, replica: int, client: ProducerClient | None = None) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.broker_set = wiring.broker_set
        self.name = wiring.producer_name(replica)
        self.telemetry = wiring.telemetry()
        self.metrics = Reporter(self.telemetry, self.name, node=wiring.node)
        if client is None:
            sink = wiring.sink
            conf = librdkafka_settings(sink)
            # librdkafka's own figures (rtt, queue depth, retries, compression ratio),
            # every second (the client also reads them: see shipper.kafka.reachability).
            conf["statistics.interval.ms"] = 1000
            conf["stats_cb"] = make_stats_cb(
                self.metrics.recorder,
                self.broker_set,
                codec=sink.compression,
                on_summary=self._on_stats,
            )
            # librdkafka's own notices go to the shipper's log file, not to stderr.
            conf["logger"] = librdkafka_logger(wiring.log_file())
            client = ConfluentProducerClient(
                conf,
                unreachable_after=sink.circuit_breaker.unreachable_after,
                on_unreachable=self._unreachable,
                on_reachable=self._reachable,
            )
        self._client = client
        self._produced = 0
        self._failed = 0
        self.gate = SequenceGate()
        announce_start(wiring.namespace, "producer", self.name)

    async def produce(
        self, topic: str, parts: list[Any], order: Order | None = None, probe: bool = False
    ) -> list[SendResult]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[SendResult]] = []
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            # Read every stored payload first (concurrently), then produce in order. A
            # payload that cannot be read (its owner is gone) fails its own part only.
            payloads = await asyncio.gather(
                *(resolve(part[0]) for part in parts), return_exceptions=True
            )
            for payload, (raw, keys, partitions, headers) in zip(payloads, parts, strict=True):
                fut: asyncio.Future[SendResult] = loop.create_future()
                futures.append(fut)
                if isinstance(payload, BaseException):
                    fut.set_result(lost_payload(topic, len(raw), keys, payload))
                    continue

                def done(r: SendResult, fut: asyncio.Future[SendResult] = fut) -> None:
                    loop.call_soon_threadsafe(fut.set_result, r)

                self._client.send(topic, as_list(payload), keys, partitions, done, probe, headers)
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

    def _unreachable(self, why: str) -> None:
        """The client found the broker set unreachable (and failed what it held, to the
        DLQ): open the set's breaker now, so new entries go straight to the DLQ."""
        # Runs on the client's poll thread; fire and forget.
        log.warning("%s: Kafka unreachable (%s); opening the circuit breaker", self.name, why)
        self.wiring.supervisor().trip.remote(self.broker_set, f"Kafka unreachable: {why}")

    def _reachable(self) -> None:
        """A broker of the set answers again: let the breaker probe now rather than at
        the end of its open timeout (a probe still decides whether it closes)."""
        log.warning("%s: a broker answers again; asking for a probe", self.name)
        self.wiring.supervisor().reachable.remote(self.broker_set)

    async def partition_count(self, topic: str) -> int:
        """The topic's partitions from broker metadata; 0 (unknown) at once while the
        client takes the broker set for unreachable (a metadata request would wait)."""
        reach = getattr(self._client, "reachability", None)
        if reach is not None and reach.unreachable is not None:
            return 0
        return await asyncio.to_thread(self._client.partition_count, topic, 5.0)

    # ------------------------------------------------------------------ stop protocol

    def stop_intake(self) -> None:
        """Chunks that still come are produced (the Batchers stop after the entrances)."""

    async def drain(self, seconds: float) -> int:
        """Wait up to ``seconds`` for Kafka to answer what is outstanding; what is left."""
        return int(await asyncio.to_thread(self._client.flush, seconds))

    async def park(self) -> int:
        """Give Kafka one more second, then purge what is left: each purged message
        comes back to its Batcher failed and goes to the DLQ. The messages purged."""
        return int(await asyncio.to_thread(self._client.close, 1.0))

    async def close(self, timeout: float = 5.0) -> dict[str, Any]:
        """Close the client (after ``timeout`` s, what is left is purged the same way)."""
        purged = await asyncio.to_thread(self._client.close, timeout)
        self.metrics.push_now()
        return {"counts": {**self.health(), "purged": int(purged)}}

    def health(self) -> dict[str, Any]:
        return {
            "outstanding": self._client.outstanding,
            "last_error": self._client.last_error,
            "delivered": self._produced,
            "failed": self._failed,
        }


def start_producer(wiring: Wiring, replica: int) -> ProducerHandle:
    """Create (or find) the named Producer actor ``replica`` of the wiring's broker set."""
    handle: ProducerHandle = named_actor(
        ProducerActor,
        wiring.producer_name(replica),
        wiring.namespace,
        256,
        **wiring.placement("producer"),
    ).remote(wiring, replica)
    return handle
