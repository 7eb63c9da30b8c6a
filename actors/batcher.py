"""Batcher actor, one per topic: a bounded queue that flushes whole chunks to Producers.

``enqueue`` accepts a segment (one submission's entries for this topic), applies the
backpressure policy, waits while the queue is full (so memory stays bounded by
``queue_size``), and returns the segment's outcome once every entry of it is acked,
handed to the DLQ, or failed. A background task flushes when ``batch_size`` entries
wait or the oldest has waited ``batch_timeout``, assigns partitions per the
configured strategy, and hands each chunk to the next Producer replica of the
topic's broker set.

Failure handling, in order:

- the broker set's circuit breaker is pushed here by the supervisor; while it is open
  a chunk goes straight to the DLQ (``circuit_open``) without a produce attempt, and
  while it is half-open only the chunk holding the supervisor's probe is produced;
- every chunk's outcome is reported to the supervisor (fire and forget);
- entries Kafka did not take go to the node's DLQ actor when ``dlq_config`` says so
  (``send_on_error``, ``send_on_timeout``) and count as handed over only once the DLQ
  has committed them; the rest, and everything the DLQ refuses (disk budget used up),
  stay failures in the acknowledgement. A Producer that dies fails its chunk the same
  way: never counted as delivered, never dropped silently.

Backpressure (``backpressure_config``), measured as queued / queue_size:
warning -> a rate-limited log line; critical -> intake slows (an arriving segment
waits for the queue to drop below critical, for an escalated timeout); emergency ->
entries are shed to the DLQ (``emergency_backpressure``) lowest level first, while
error, fatal and critical entries wait for room instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import ray

from shipper.backpressure import BackpressurePolicy, Pressure, RateLimitedLog
from shipper.batching import Accumulator, Segment
from shipper.breaker import BreakerState
from shipper.config import KafkaSinkConfig
from shipper.errors import brief
from shipper.kafka.client import Failure, SendResult
from shipper.ordering import SequenceGate
from shipper.outcomes import EntryFailure, SegmentOutcome
from shipper.packed import Packed
from shipper.partitioning import HashPartitioner, make_partitioner

from ._options import named_actor, tune_gc
from .payload import Stored, resolve
from .producer import Part, lost_payload
from .telemetry import Reporter

__all__ = ["BatcherActor", "batcher_name", "start_batcher"]

log = logging.getLogger("shipper.batcher")

# Partition counts are re-read from broker metadata this often, so a topic that
# grows partitions gets them used.
PARTITION_REFRESH_SECONDS = 30.0
# Failures that say the broker set is unwell (as opposed to a bad entry).
BROKER_FAILURES = frozenset({"timeout", "error", "auth_failure"})


def batcher_name(topic: str) -> str:
    return f"batcher:{topic}"


class _Pending:
    """A segment waiting for its outcome."""

    __slots__ = ("future", "outcome", "remaining")

    def __init__(self, future: asyncio.Future[SegmentOutcome], outcome: SegmentOutcome) -> None:
        self.future = future
        self.outcome = outcome
        self.remaining = 0


class BatcherActor:
    def __init__(
        self,
        topic: str,
        sink: KafkaSinkConfig,
        producers: list[Any],
        supervisor: Any = None,
        dlq: Any = None,
        telemetry: Any = None,
    ) -> None:
        tune_gc()
        self.topic = topic
        self.sink = sink
        self.producers = producers
        self.supervisor = supervisor
        self.dlq = dlq if sink.dlq_config.enabled else None
        self.telemetry = telemetry
        self.broker_set = sink.broker_set_id()
        self.breaker_state = BreakerState.CLOSED
        self.acc = Accumulator(sink.batch_size, sink.batch_timeout, sink.queue_size)
        bp = sink.backpressure_config
        self.policy = BackpressurePolicy(
            bp.queue_warning_threshold,
            bp.queue_critical_threshold,
            bp.queue_emergency_threshold,
            enabled=bp.enabled,
            timeout_escalation=bp.timeout_escalation,
        )
        self.warn = RateLimitedLog(10.0, logger=log)
        part = sink.partitioning
        self.partitioner = (
            make_partitioner(part.strategy, part.key_field, random.Random())
            if part.enabled
            else None
        )
        # Keyed entries under hash partitioning are placed by librdkafka: the Producer
        # runs its murmur2 partitioner, the same function as Kafka's Java client (and
        # as shipper.partitioning.murmur2), so passing the key is enough and no
        # per-entry Python work is done here. Keyless entries still get the
        # round-robin fallback from here.
        self._hash = isinstance(self.partitioner, HashPartitioner)
        self._num_partitions = 0
        self._partitions_read = 0.0
        self._waiting: dict[int, _Pending] = {}
        self._next_id = 0
        self._rr = 0
        self._wakeup: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._chunks: set[asyncio.Task[None]] = set()
        self.gate = SequenceGate()
        self.source = uuid.uuid4().hex[:12]
        # Call numbers per Producer replica: only chunks that really go to a replica
        # are numbered, so a chunk diverted to the DLQ leaves no gap for it to wait on.
        self._replica_seq = [0] * len(producers)
        self.counts: dict[str, int] = {
            "entries": 0,
            "chunks": 0,
            "delivered": 0,
            "failed": 0,
            "dlq": 0,
            "circuit_open": 0,
            "shed": 0,
            "backpressure_warning": 0,
            "backpressure_critical": 0,
            "backpressure_emergency": 0,
        }
        self._last_pressure = Pressure.NORMAL
        self._last_ok_report = 0.0
        self._failed_since_ok = False
        self.metrics = Reporter(telemetry, f"batcher:{topic}", refresh=self._refresh)
        rec = self.metrics.recorder
        for status in ("success", "error"):
            rec.add("log_capturer_logs_sent_total", 0, {"sink": "kafka", "status": status})
        rec.add("log_capturer_kafka_delivered_total", 0, {"topic": topic})
        rec.add("log_capturer_errors_total", 0, {"component": "kafka_sink"})
        for lvl in ("warning", "critical", "emergency"):
            rec.add("log_capturer_kafka_backpressure_total", 0, {"level": lvl})

    def _refresh(self) -> None:
        rec = self.metrics.recorder
        rec.set("log_capturer_kafka_queue_size", self.acc.queued, {"topic": self.topic})
        rec.set("log_capturer_kafka_queue_utilization", self.acc.utilization, {"topic": self.topic})

    # ------------------------------------------------------------------ wiring

    async def _start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._room = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.metrics.start_periodic()
        if self.supervisor is not None:
            me = ray.get_runtime_context().current_actor
            state = await self.supervisor.register.remote(self.broker_set, me)
            self.breaker_state = BreakerState(state)

    def set_breaker_state(self, state: int) -> None:
        """Pushed by the supervisor on every breaker change of this broker set."""
        self.breaker_state = BreakerState(state)

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        values: Sequence[bytes] | Stored,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        submitted_at: float,
        order: tuple[str, int] | None = None,
    ) -> SegmentOutcome:
        await self._start()
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            out = SegmentOutcome(self.topic, len(values))
            values, keys, levels = await self._apply_pressure(values, keys, levels, out)
            fut = await self._offer(values, keys, levels, submitted_at, out, replay=False)
        return await fut

    async def replay(
        self, values: Sequence[bytes] | Stored, keys: list[bytes | None] | None
    ) -> SegmentOutcome:
        """Re-send DLQ records: same queue and breaker, but failures come back to the
        caller (the DLQ actor) instead of being dead-lettered again."""
        await self._start()
        out = SegmentOutcome(self.topic, len(values))
        if self.breaker_state == BreakerState.OPEN:
            # Kafka is known to be down: do not spend a retry of these records on it.
            out.failures = [
                EntryFailure("circuit_open", self._open_text(), self.topic, v)
                for v in await resolve(values)
            ]
            return out
        fut = await self._offer(values, keys, None, time.time(), out, replay=True)
        return await fut

    async def _offer(
        self,
        values: Sequence[bytes] | Stored,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        submitted_at: float,
        out: SegmentOutcome,
        replay: bool,
    ) -> asyncio.Future[SegmentOutcome]:
        assert self._room is not None and self._wakeup is not None
        fut: asyncio.Future[SegmentOutcome] = asyncio.get_running_loop().create_future()
        n = len(values)
        if n == 0:
            fut.set_result(out)
            return fut
        async with self._room:
            await self._room.wait_for(lambda: self.acc.has_room(n))
        ident = self._next_id
        self._next_id += 1
        pending = _Pending(fut, out)
        pending.remaining = n
        self._waiting[ident] = pending
        first = not self.acc.pending
        self.acc.offer(Segment(values, keys, levels, submitted_at, ident=ident, replay=replay))
        self.counts["entries"] += n
        # Wake the flush loop when a batch is full, or when this is the first waiting
        # segment (so the loop starts counting batch_timeout from it).
        if first or self.acc.due():
            self._wakeup.set()
        return fut

    async def _apply_pressure(
        self,
        values: Sequence[bytes] | Stored,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        out: SegmentOutcome,
    ) -> tuple[Sequence[bytes] | Stored, list[bytes | None] | None, list[str] | None]:
        if not self.policy.enabled or not values:
            return values, keys, levels
        pressure = self.policy.level(self.acc.utilization)
        if pressure > self._last_pressure and pressure >= Pressure.WARNING:
            # Count each upward crossing once, not every segment that sees it.
            self.metrics.recorder.add(
                "log_capturer_kafka_backpressure_total", 1, {"level": pressure.name.lower()}
            )
        self._last_pressure = pressure
        if pressure >= Pressure.WARNING:
            self.counts[f"backpressure_{pressure.name.lower()}"] += 1
            self.warn.warning(
                "queue for topic %s at %.0f%% of queue_size %d (%s)",
                self.topic,
                self.acc.utilization * 100,
                self.acc.capacity,
                pressure.name.lower(),
                key=pressure.name,
            )
        if pressure == Pressure.CRITICAL:
            # Slow intake: give the Producers a moment to drain below critical.
            wait = self.policy.escalated_timeout(
                min(self.sink.batch_timeout, 0.1), self.acc.utilization
            )
            assert self._room is not None
            with contextlib.suppress(TimeoutError):
                async with self._room:
                    await asyncio.wait_for(
                        self._room.wait_for(
                            lambda: self.policy.level(self.acc.utilization) < Pressure.CRITICAL
                        ),
                        wait,
                    )
        if (self.acc.queued + len(values)) / self.acc.capacity < self.policy.emergency:
            return values, keys, levels  # everything fits below the shedding band
        adm = self.policy.admit(
            levels or ["info"] * len(values), self.acc.queued, self.acc.capacity
        )
        if not adm.shed:
            return values, keys, levels
        values = await resolve(values)
        shed = [
            EntryFailure(
                "emergency_backpressure",
                f"queue for topic {self.topic} past queue_emergency_threshold "
                f"({self.acc.utilization:.0%} of {self.acc.capacity}); entry sent to the DLQ",
                self.topic,
                values[i],
                keys[i] if keys else None,
            )
            for i in adm.shed
        ]
        self.counts["shed"] += len(shed)
        await self._dead_letter(shed, out)
        keep = sorted(adm.admitted + adm.waiting)
        return (
            Packed.of([values[i] for i in keep]),
            [keys[i] for i in keep] if keys is not None else None,
            [levels[i] for i in keep] if levels is not None else None,
        )

    # ------------------------------------------------------------------ flushing

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            wait = self.acc.seconds_until_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            self._wakeup.clear()
            if self.acc.due():
                await self._flush_now()

    async def _flush_now(self) -> None:
        chunks = self.acc.take()
        if not chunks:
            return
        await self._ensure_partitions()
        for chunk in chunks:
            task = asyncio.get_running_loop().create_task(self._send(chunk))
            self._chunks.add(task)
            task.add_done_callback(self._chunks.discard)

    async def _ensure_partitions(self) -> None:
        if self.partitioner is None:
            return
        now = time.monotonic()
        if self._num_partitions and now - self._partitions_read < PARTITION_REFRESH_SECONDS:
            return
        try:
            count = int(await self.producers[0].partition_count.remote(self.topic))
        except Exception:
            count = 0
        if count > 0:
            self._num_partitions = count
            self._partitions_read = now

    def _parts_for(self, chunk: list[Segment]) -> list[Part]:
        parts: list[Part] = []
        for seg in chunk:
            # plan_chunks never cuts a segment, so its packed values travel on as they are.
            values = seg.values
            keys = seg.keys
            partitions = None
            if self.partitioner is not None and self._num_partitions > 0:
                if not self._hash:
                    partitions = self.partitioner.assign([None] * len(values), self._num_partitions)
                elif keys is None or None in keys:
                    # Keyed entries stay with librdkafka (-1), whatever else the
                    # segment holds, so a key never depends on its neighbours.
                    assert isinstance(self.partitioner, HashPartitioner)
                    partitions = self.partitioner.assign_keyless(
                        keys, len(values), self._num_partitions
                    )
            parts.append((values, keys, partitions))
        return parts

    def _open_text(self) -> str:
        return (
            f"Circuit breaker open for broker set {self.broker_set}: no produce attempt, "
            "entries kept in the DLQ until Kafka recovers"
        )

    async def _may_produce(self) -> bool:
        if self.breaker_state == BreakerState.CLOSED or self.supervisor is None:
            return True
        if self.breaker_state == BreakerState.HALF_OPEN:
            return bool(await self.supervisor.acquire_probe.remote(self.broker_set))
        return False

    async def _send(self, chunk: list[Segment]) -> None:
        parts = self._parts_for(chunk)
        started = time.monotonic()
        if await self._may_produce():
            replica = self._rr % len(self.producers)
            producer = self.producers[replica]
            self._rr += 1
            seq = self._replica_seq[replica]
            self._replica_seq[replica] = seq + 1
            self.counts["chunks"] += 1
            chunk_size = sum(len(v) for v, _k, _p in parts)
            try:
                results: list[SendResult] = await producer.produce.remote(
                    self.topic, parts, (f"{self.source}:{replica}", seq)
                )
            except Exception as exc:
                results = await _failed_results(
                    self.topic, parts, "error", f"producer unavailable: {brief(exc)}"
                )
            rec = self.metrics.recorder
            # A chunk of whole segments may hold more than batch_size entries; the
            # client still sends at most batch_size per batch (batch.num.messages), so
            # the batch figures count it as that many batches.
            full, rest = divmod(chunk_size, self.sink.batch_size)
            labels = {"topic": self.topic}
            if full:
                rec.observe(
                    "log_capturer_kafka_batch_size", self.sink.batch_size, labels, count=full
                )
            if rest:
                rec.observe("log_capturer_kafka_batch_size", rest, labels)
            rec.observe(
                "log_capturer_kafka_batch_duration_seconds",
                time.monotonic() - started,
                labels,
                count=full + (1 if rest else 0),
            )
            n_failed = sum(len(r.failures) for r in results)
            if n_failed:
                rec.add("log_capturer_errors_total", n_failed, {"component": "kafka_sink"})
            delivered = sum(r.delivered for r in results)
            broken = any(f.reason in BROKER_FAILURES for r in results for f in r.failures)
            ok = delivered > 0 or not broken
            # Failures always reach the breaker; successes while it is closed only
            # need to reset its failure count, so once a second is enough.
            now = time.monotonic()
            if self.supervisor is not None and (
                not ok
                or self.breaker_state != BreakerState.CLOSED
                or now - self._last_ok_report >= 1.0
                or self._failed_since_ok
            ):
                self.supervisor.report.remote(self.broker_set, ok)
                if ok:
                    self._last_ok_report = now
                self._failed_since_ok = not ok
        else:
            n = sum(len(v) for v, _k, _p in parts)
            self.counts["circuit_open"] += n
            results = await _failed_results(self.topic, parts, "circuit_open", self._open_text())
        await self._settle(chunk, results)

    async def _settle(self, chunk: list[Segment], results: list[SendResult]) -> None:
        # Dead-letter what qualifies, then credit each segment's submission.
        for seg, r in zip(chunk, results, strict=True):
            pending = self._waiting.get(seg.ident)
            if pending is None:
                continue
            out = pending.outcome
            out.delivered += r.delivered
            self.counts["delivered"] += r.delivered
            rec = self.metrics.recorder
            labels = {"topic": self.topic}
            if r.delivered:
                rec.add("log_capturer_kafka_delivered_total", r.delivered, labels)
            if not seg.replay:
                if r.delivered:
                    rec.add("log_capturer_logs_sent_total", r.delivered, _SUCCESS)
                    rec.observe(
                        "log_capturer_kafka_end_to_end_latency_seconds",
                        max(0.0, r.finished - seg.submitted_at),
                        labels,
                        count=r.delivered,
                    )
                if r.failures:
                    rec.add("log_capturer_logs_sent_total", len(r.failures), _ERROR)
            failures = [
                EntryFailure(f.reason, f.error, self.topic, f.value, f.key) for f in r.failures
            ]
            if failures and not seg.replay:
                await self._dead_letter(failures, out)
            else:
                out.failures.extend(failures)
                self.counts["failed"] += len(failures)
            out.latency = max(out.latency, r.finished - seg.submitted_at)
            pending.remaining -= len(seg)
            if pending.remaining == 0:
                del self._waiting[seg.ident]
                if not pending.future.done():
                    pending.future.set_result(out)
        self.acc.settle(sum(len(p) for p in chunk))
        self.metrics.maybe_push()
        assert self._room is not None
        async with self._room:
            self._room.notify_all()

    def _qualifies(self, reason: str) -> bool:
        cfg = self.sink.dlq_config
        return cfg.send_on_timeout if reason == "timeout" else cfg.send_on_error

    async def _dead_letter(self, failures: list[EntryFailure], out: SegmentOutcome) -> None:
        """Hand ``failures`` to the DLQ where the config says so; count the rest as failed."""

        def dlq_bound(f: EntryFailure) -> bool:
            return self.dlq is not None and f.value is not None and self._qualifies(f.reason)

        to_dlq = [f for f in failures if dlq_bound(f)]
        kept = [f for f in failures if not dlq_bound(f)]
        if to_dlq:
            assert self.dlq is not None
            try:
                stored = int(await self.dlq.put.remote(to_dlq))
                out.dlq += stored
                self.counts["dlq"] += stored
            except Exception as exc:
                note = f" (not dead-lettered: {brief(exc)})"
                kept += [
                    EntryFailure(f.reason, f.error + note, f.topic, f.value, f.key) for f in to_dlq
                ]
        out.failures.extend(kept)
        self.counts["failed"] += len(kept)
        if kept:
            why = "dlq_disabled" if self.dlq is None else "dlq_full"
            for reason, count in Counter(
                "payload_lost" if f.value is None else why for f in kept
            ).items():
                self.metrics.recorder.add(
                    "log_capturer_kafka_dropped_total", count, {"reason": reason}
                )

    # ------------------------------------------------------------------ control

    async def flush(self, order: tuple[str, int] | None = None) -> int:
        """Send everything waiting now and return once nothing is in flight.

        ``order`` is the caller's call number (see ``enqueue``): the flush then waits for
        the caller's earlier segments to be queued, and sends them too."""
        await self._start()
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            await self._flush_now()
        while self._chunks:
            await asyncio.gather(*list(self._chunks), return_exceptions=True)
        self.metrics.push_now()
        return self.acc.queued

    def stats(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "queued": self.acc.queued,
            "capacity": self.acc.capacity,
            "utilization": self.acc.utilization,
            "partitions": self._num_partitions,
            "breaker_state": int(self.breaker_state),
            **self.counts,
        }


_SUCCESS = {"sink": "kafka", "status": "success"}
_ERROR = {"sink": "kafka", "status": "error"}


async def _failed_results(
    topic: str, parts: list[Part], reason: str, error: str
) -> list[SendResult]:
    now = time.time()
    out = []
    for values, keys, _p in parts:
        try:
            vals = await resolve(values)
        except Exception as exc:
            # The payload's owner is gone (see actors.payload): nothing left to re-send.
            out.append(lost_payload(topic, len(values), keys, exc))
            continue
        r = SendResult(topic=topic, sent=len(vals), started=now, finished=now)
        r.failures = [
            Failure(v, keys[i] if keys else None, reason, error) for i, v in enumerate(vals)
        ]
        out.append(r)
    return out


def start_batcher(
    topic: str,
    sink: KafkaSinkConfig,
    producers: list[Any],
    namespace: str,
    supervisor: Any = None,
    dlq: Any = None,
    telemetry: Any = None,
) -> Any:
    return named_actor(BatcherActor, batcher_name(topic), namespace, 1024).remote(
        topic, sink, producers, supervisor, dlq, telemetry
    )
