"""The topic batcher core: one topic's bounded queue, its flushes and its outcomes.

The Batcher actor is a shell around :class:`TopicBatcher`: it awaits (room in the
queue, the Producer, the DLQ) and owns the Ray lifecycle; every decision is made
here, without Ray, so unit tests drive it with an in-memory client and a fake clock.

One enqueue call goes through it like this::

    ticket = core.open(n, submitted_at)        an outcome to fill, n entries to settle
    core.arrival()                             pressure level: warn, slow down, or shed
    kept, shed = core.shed(ticket, ...)        past the emergency band: to the DLQ
    core.offer(ticket, values, keys, levels)   into the queue (the caller waited for room)
                                               (a call core.oversized: in pieces, each
                                               offered once core.piece_fits, never shed)
        ... the flush loop ...
    chunks = core.take()                       due: chunks of whole segments, partitioned
    gate = core.gate()                         produce, divert (breaker open) or probe
    letters = core.settle(chunk, results)      outcomes credited; DLQ-bound failures out
    core.dead_lettered(letters, refused)       after the DLQ answered
    core.finished()                            tickets whose every entry has an outcome

Failures that qualify (``dlq_config.send_on_error`` / ``send_on_timeout``) go to the
DLQ and count as handed over only once the DLQ committed them; everything else ends
as a failure in the acknowledgement with a :class:`~shipper.outcomes.DropReason` and
is counted in ``log_capturer_kafka_dropped_total``. Entries re-sent from the DLQ
(``replay``) are never dead-lettered again: their failures go back to the DLQ actor.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from shipper.batching.accumulator import Accumulator, Segment
from shipper.batching.backpressure import BackpressurePolicy, Pressure, RateLimitedLog
from shipper.batching.results import failed_result, probe_failed
from shipper.breaker import BreakerState
from shipper.config import KafkaSinkConfig
from shipper.headers import HeaderTable
from shipper.kafka.client import SendResult
from shipper.outcomes import DropReason, EntryFailure, Reason, SegmentOutcome
from shipper.packed import Packed
from shipper.partitioning import HashPartitioner, make_partitioner
from shipper.telemetry import MetricsRecorder

__all__ = ["Chunk", "DeadLetters", "Gate", "Part", "TopicBatcher", "failed_result", "probe_failed"]

log = logging.getLogger("shipper.batcher")

#: One piece of a chunk as the Producer takes it: values (a list, a ``Packed`` or a
#: handle the actor resolves), keys or None, explicit partitions or None (librdkafka's
#: murmur2 partitioner places keyed messages), each message's headers or None.
Part = tuple[Any, list[bytes | None] | None, list[int] | None, HeaderTable | None]

# Partition counts are re-read from broker metadata this often, so a topic that
# grows partitions gets them used.
PARTITION_REFRESH_SECONDS = 30.0

_SUCCESS = {"sink": "kafka", "status": "success"}
_ERROR = {"sink": "kafka", "status": "error"}


class Gate(Enum):
    """What the breaker lets a chunk do."""

    PRODUCE = "produce"
    DIVERT = "divert"  # open: straight to the DLQ, no produce attempt
    PROBE = "probe"  # half-open: produce only if the supervisor hands out the probe
    PARK = "park"  # the shipper is stopping: to the DLQ (reason shutdown), no attempt


@dataclass(slots=True)
class _Ticket:
    outcome: SegmentOutcome
    remaining: int
    submitted_at: float
    replay: bool


@dataclass(slots=True, eq=False)
class Chunk:
    """Segments flushed together, with the parts the Producer gets (same order)."""

    segments: list[Segment]
    parts: list[Part]

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.segments)


@dataclass(slots=True)
class DeadLetters:
    """Failures bound for the DLQ, each with the ticket it belongs to (same order)."""

    failures: list[EntryFailure] = field(default_factory=list)
    tickets: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.failures)


class TopicBatcher:
    """Queue, flush policy, partitioning and outcome assembly for one topic.

    Not thread-safe: one owner (the Batcher actor's event loop) calls it.
    ``recorder`` receives the topic's metrics; ``clock`` is monotonic seconds,
    ``wall`` wall-clock seconds (latencies are measured from the submitter's wall
    time); ``rng`` feeds the random partitioner.
    """

    def __init__(
        self,
        topic: str,
        sink: KafkaSinkConfig,
        recorder: MetricsRecorder,
        *,
        dlq_enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.topic = topic
        self.sink = sink
        self.rec = recorder
        self.clock = clock
        self.wall = wall
        self.dlq_enabled = sink.dlq_config.enabled if dlq_enabled is None else dlq_enabled
        self.acc = Accumulator(sink.batch_size, sink.batch_timeout, sink.queue_size, clock)
        bp = sink.backpressure_config
        self.policy = BackpressurePolicy(
            bp.queue_warning_threshold,
            bp.queue_critical_threshold,
            bp.queue_emergency_threshold,
            enabled=bp.enabled,
            timeout_escalation=bp.timeout_escalation,
        )
        self.warn = RateLimitedLog(10.0, logger=log, clock=clock)
        part = sink.partitioning
        self.partitioner = (
            make_partitioner(part.strategy, part.key_field, rng or random.Random())
            if part.enabled
            else None
        )
        # Keyed entries under hash partitioning are placed by librdkafka (its murmur2
        # partitioner is Kafka's, and ours): no per-entry Python work for them here.
        self._hash = isinstance(self.partitioner, HashPartitioner)
        self.partitions = 0
        self._partitions_read = -PARTITION_REFRESH_SECONDS
        self.breaker = BreakerState.CLOSED
        self._tickets: dict[int, _Ticket] = {}
        self._done: list[int] = []
        self._next_ticket = 0
        self._replica = 0
        self._pieced: dict[int, int | None] = {}  # ticket in pieces -> its replica
        self._replica_seq: dict[int, int] = {}
        self._urgent = False
        #: Set when the shipper stops: whatever is queued or arrives goes to the DLQ.
        self.parked = False
        self._last_pressure = Pressure.NORMAL
        self._last_ok_report = -1.0
        self._failed_since_ok = False
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
        # Series the alerts read exist from the start, so rate() has data at once.
        for status in (_SUCCESS, _ERROR):
            recorder.add("log_capturer_logs_sent_total", 0, status)
        recorder.add("log_capturer_kafka_delivered_total", 0, {"topic": topic})
        recorder.add("log_capturer_errors_total", 0, {"component": "kafka_sink"})
        for lvl in ("warning", "critical", "emergency"):
            recorder.add("log_capturer_kafka_backpressure_total", 0, {"level": lvl})

    # ------------------------------------------------------------------ reading

    @property
    def queued(self) -> int:
        return self.acc.queued

    @property
    def in_flight_tickets(self) -> int:
        return len(self._tickets)

    def refresh_gauges(self) -> None:
        """Set the queue gauges (called before every metrics push)."""
        labels = {"topic": self.topic}
        self.rec.set("log_capturer_kafka_queue_size", self.acc.queued, labels)
        self.rec.set("log_capturer_kafka_queue_utilization", self.acc.utilization, labels)

    def stats(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "queued": self.acc.queued,
            "capacity": self.acc.capacity,
            "utilization": self.acc.utilization,
            "partitions": self.partitions,
            "breaker_state": int(self.breaker),
            **self.counts,
        }

    # ------------------------------------------------------------------ intake

    def open(self, n: int, submitted_at: float, replay: bool = False) -> int:
        """A ticket for ``n`` entries of one call; its outcome fills as they settle."""
        ident = self._next_ticket
        self._next_ticket += 1
        self._tickets[ident] = _Ticket(SegmentOutcome(self.topic, n), n, submitted_at, replay)
        if n == 0:
            self._done.append(ident)
        return ident

    def arrival(self) -> Pressure:
        """The pressure a new segment meets. Counts upward crossings (once each, not
        per segment), logs a rate-limited warning; the caller slows down on CRITICAL
        (see :meth:`critical_wait`) and sheds past the emergency band (:meth:`shed`)."""
        if not self.policy.enabled:
            return Pressure.NORMAL
        pressure = self.policy.level(self.acc.utilization)
        if pressure > self._last_pressure and pressure >= Pressure.WARNING:
            self.rec.add(
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
        return pressure

    def critical_wait(self) -> float:
        """Longest a segment arriving under critical pressure waits for relief."""
        return self.policy.escalated_timeout(
            min(self.sink.batch_timeout, 0.1), self.acc.utilization
        )

    def relieved(self) -> bool:
        return self.policy.level(self.acc.utilization) < Pressure.CRITICAL

    def must_shed(self, n: int) -> bool:
        """Whether ``n`` more entries would reach into the emergency band."""
        return (
            self.policy.enabled
            and n > 0
            and (self.acc.queued + n) / self.acc.capacity >= self.policy.emergency
        )

    def oversized(self, n: int) -> bool:
        """Whether a call of ``n`` entries is larger than any sender should hand over
        at once (the in-flight budget: an API blob or an HTTP request its sender did not
        split). On its own it could reach into the emergency band even of an empty
        queue, so it goes in pieces of :attr:`piece_size` instead of being shed for its size."""
        return n > self.sink.inflight_entries

    @property
    def piece_size(self) -> int:
        """Entries per piece of an oversized call: the room between the warning and
        the emergency bands (senders keep their own entries under the warning band, so
        a piece waits for them at most that long), never more than the budget."""
        bp = self.sink.backpressure_config
        room = round(
            self.acc.capacity * (bp.queue_emergency_threshold - bp.queue_warning_threshold)
        )
        return max(1, min(room, self.sink.inflight_entries))

    def pieced(self, ticket: int) -> None:
        """``ticket`` goes in pieces: its chunks all go to one Producer (see
        :meth:`next_replica`), so its entries keep their order per partition."""
        self._pieced[ticket] = None

    def forget(self, ticket: int) -> None:
        """Drop a ticket whose entries never entered the queue (the call failed)."""
        self._tickets.pop(ticket, None)
        self._pieced.pop(ticket, None)

    def piece_fits(self, n: int) -> bool:
        """Whether a piece of ``n`` entries enters now: the queue is empty, or it stays
        below the emergency band (and within the capacity)."""
        if self.acc.queued == 0:
            return True
        return self.acc.queued + n <= self.acc.capacity and not self.must_shed(n)

    def shed(
        self,
        ticket: int,
        values: Sequence[bytes],
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        headers: HeaderTable | None = None,
    ) -> tuple[
        Sequence[bytes],
        list[bytes | None] | None,
        list[str] | None,
        HeaderTable | None,
        DeadLetters,
    ]:
        """Split ``values`` (already resolved) into what the queue admits and what is
        shed to the DLQ, lowest levels first; error and above are never shed."""
        adm = self.policy.admit(
            levels or ["info"] * len(values), self.acc.queued, self.acc.capacity
        )
        if not adm.shed:
            return values, keys, levels, headers, DeadLetters()
        text = (
            f"queue for topic {self.topic} past queue_emergency_threshold "
            f"({self.acc.utilization:.0%} of {self.acc.capacity}); entry sent to the DLQ"
        )
        letters = DeadLetters(
            [
                EntryFailure(
                    Reason.EMERGENCY_BACKPRESSURE,
                    text,
                    self.topic,
                    values[i],
                    keys[i] if keys else None,
                    headers=headers[i] if headers is not None else None,
                )
                for i in adm.shed
            ],
            [ticket] * len(adm.shed),
        )
        self.counts["shed"] += len(adm.shed)
        keep = sorted(adm.admitted + adm.waiting)
        return (
            Packed.of([values[i] for i in keep]),
            [keys[i] for i in keep] if keys is not None else None,
            [levels[i] for i in keep] if levels is not None else None,
            headers.take(keep) if headers is not None else None,
            self._route(letters),
        )

    def has_room(self, n: int) -> bool:
        return self.acc.has_room(n)

    def offer(
        self,
        ticket: int,
        values: Any,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        headers: HeaderTable | None = None,
    ) -> bool:
        """Queue ``values`` for ``ticket``; True when the flush loop should wake (a full
        batch, or the first waiting segment, from which ``batch_timeout`` counts)."""
        n = len(values)
        if n == 0:
            return False
        t = self._tickets[ticket]
        first = not self.acc.pending
        seg = Segment(values, keys, levels, t.submitted_at, ident=ticket, replay=t.replay)
        seg.headers = headers
        self.acc.offer(seg)
        self.counts["entries"] += n
        # A replay from the DLQ is a batch already: the reprocessor paced it and waits
        # for it, so it goes out at once instead of waiting out batch_timeout.
        self._urgent = self._urgent or t.replay
        return first or self.due()

    def due(self) -> bool:
        urgent = self._urgent or self.parked
        return (urgent and bool(self.acc.pending)) or self.acc.due()

    def seconds_until_due(self) -> float | None:
        if (self._urgent or self.parked) and self.acc.pending:
            return 0.0
        return self.acc.seconds_until_due()

    # ------------------------------------------------------------------ flushing

    def partitions_stale(self) -> bool:
        """Whether the partition count should be (re)read before the next take."""
        if self.partitioner is None:
            return False
        return (
            not self.partitions or self.clock() - self._partitions_read >= PARTITION_REFRESH_SECONDS
        )

    def set_partitions(self, count: int) -> None:
        """The topic's partition count from broker metadata (0: unknown, keep asking)."""
        if count > 0:
            self.partitions = count
            self._partitions_read = self.clock()

    def take(self) -> list[Chunk]:
        """Everything waiting, as chunks of whole segments, with partitions assigned."""
        self._urgent = False
        return [Chunk(segs, [self._part(s) for s in segs]) for segs in self.acc.take()]

    def _part(self, seg: Segment) -> Part:
        values, keys = seg.values, seg.keys
        partitions = None
        if self.partitioner is not None and self.partitions > 0:
            if not self._hash:
                partitions = self.partitioner.assign([None] * len(values), self.partitions)
            elif keys is None or None in keys:
                # Keyed entries stay with librdkafka (-1) whatever else the segment
                # holds, so a key's partition never depends on its neighbours.
                assert isinstance(self.partitioner, HashPartitioner)
                partitions = self.partitioner.assign_keyless(keys, len(values), self.partitions)
        return (values, keys, partitions, seg.headers)

    def gate(self) -> Gate:
        if self.parked:
            return Gate.PARK
        if self.breaker == BreakerState.CLOSED:
            return Gate.PRODUCE
        if self.breaker == BreakerState.HALF_OPEN:
            return Gate.PROBE
        return Gate.DIVERT

    def next_replica(self, replicas: int, chunk: Chunk | None = None) -> tuple[int, int]:
        """The Producer replica for the next produced chunk, round-robin, and the
        call's number on it. Only chunks that really go to a replica are numbered, so
        a chunk diverted to the DLQ leaves no gap for the next one to wait on. A chunk
        with a piece of a call queued in pieces goes where its earlier pieces went."""
        replica = None
        pieced = (
            [s.ident for s in chunk.segments if s.ident in self._pieced]
            if chunk is not None and self._pieced
            else []
        )
        for ident in pieced:
            replica = self._pieced[ident]
            if replica is not None:
                break
        if replica is None:
            replica = self._replica % replicas
            self._replica += 1
        for ident in pieced:
            self._pieced[ident] = replica
        seq = self._replica_seq.get(replica, 0)
        self._replica_seq[replica] = seq + 1
        self.counts["chunks"] += 1
        return replica, seq

    def open_text(self, broker_set: str) -> str:
        return (
            f"Circuit breaker open for broker set {broker_set}: no produce attempt, "
            "entries kept in the DLQ until Kafka recovers"
        )

    def record_produce(self, chunk: Chunk, seconds: float, results: list[SendResult]) -> None:
        """Batch metrics for a chunk that was produced. A chunk of whole segments may
        hold more than batch_size entries; the client still sends at most batch_size
        per batch (batch.num.messages), so it counts as that many batches."""
        labels = {"topic": self.topic}
        full, rest = divmod(chunk.size, self.sink.batch_size)
        if full:
            self.rec.observe(
                "log_capturer_kafka_batch_size", self.sink.batch_size, labels, count=full
            )
        if rest:
            self.rec.observe("log_capturer_kafka_batch_size", rest, labels)
        self.rec.observe(
            "log_capturer_kafka_batch_duration_seconds",
            seconds,
            labels,
            count=full + (1 if rest else 0),
        )
        n_failed = sum(len(r.failures) for r in results)
        if n_failed:
            self.rec.add("log_capturer_errors_total", n_failed, {"component": "kafka_sink"})

    def breaker_report(self, results: list[SendResult]) -> bool | None:
        """The outcome to report to the breaker for a produced chunk, or None when no
        report is needed. Failures always count; successes while the breaker is closed
        only reset its failure count, so one a second is enough."""
        delivered = sum(r.delivered for r in results)
        broken = any(f.reason.from_broker for r in results for f in r.failures)
        ok = delivered > 0 or not broken
        now = self.clock()
        if (
            not ok
            or self.breaker != BreakerState.CLOSED
            or now - self._last_ok_report >= 1.0
            or self._failed_since_ok
        ):
            if ok:
                self._last_ok_report = now
            self._failed_since_ok = not ok
            return ok
        return None

    def settle(self, chunk: Chunk, results: list[SendResult]) -> DeadLetters:
        """Credit each segment's ticket with its result; return the failures that go to
        the DLQ (hand them over, then call :meth:`dead_lettered`)."""
        letters = DeadLetters()
        for seg, r in zip(chunk.segments, results, strict=True):
            t = self._tickets.get(seg.ident)
            if t is not None:
                self._credit(seg.ident, t, r, letters)
        self.acc.settle(chunk.size)
        return self._route(letters)

    def answer(self, ticket: int, result: SendResult) -> DeadLetters:
        """Credit ``ticket`` with ``result`` for entries that never entered the queue
        (a replay met an open breaker)."""
        letters = DeadLetters()
        t = self._tickets.get(ticket)
        if t is not None:
            self._credit(ticket, t, result, letters)
        return self._route(letters)

    def _credit(self, ident: int, t: _Ticket, r: SendResult, letters: DeadLetters) -> None:
        labels = {"topic": self.topic}
        rec = self.rec
        out = t.outcome
        out.delivered += r.delivered
        self.counts["delivered"] += r.delivered
        if r.delivered:
            rec.add("log_capturer_kafka_delivered_total", r.delivered, labels)
        if not t.replay:
            # Replays are counted by the DLQ's own metrics instead.
            if r.delivered:
                rec.add("log_capturer_logs_sent_total", r.delivered, _SUCCESS)
                rec.observe(
                    "log_capturer_kafka_end_to_end_latency_seconds",
                    max(0.0, r.finished - t.submitted_at),
                    labels,
                    count=r.delivered,
                )
            if r.failures:
                rec.add("log_capturer_logs_sent_total", len(r.failures), _ERROR)
        out.latency = max(out.latency, r.finished - t.submitted_at)
        t.remaining -= r.delivered
        failures = [
            EntryFailure(f.reason, f.error, self.topic, f.value, f.key, headers=f.headers)
            for f in r.failures
        ]
        if t.replay:
            out.failures.extend(failures)
            self.counts["failed"] += len(failures)
            t.remaining -= len(failures)
        else:
            letters.failures.extend(failures)
            letters.tickets.extend([ident] * len(failures))
        self._check_done(ident, t)

    def _qualifies(self, f: EntryFailure) -> DropReason | None:
        """None when ``f`` goes to the DLQ, else why it does not."""
        if f.value is None:
            return DropReason.PAYLOAD_LOST
        if not self.dlq_enabled:
            return DropReason.DLQ_DISABLED
        if f.reason == Reason.SHUTDOWN:
            return None  # a stop leaves every entry in Kafka or the DLQ
        cfg = self.sink.dlq_config
        wanted = cfg.send_on_timeout if f.reason == Reason.TIMEOUT else cfg.send_on_error
        return None if wanted else DropReason.NOT_DEAD_LETTERED

    def _route(self, letters: DeadLetters) -> DeadLetters:
        """Keep the DLQ-bound failures; end the others now as dropped failures."""
        bound = DeadLetters()
        for f, ident in zip(letters.failures, letters.tickets, strict=True):
            why = self._qualifies(f)
            if why is None:
                bound.failures.append(f)
                bound.tickets.append(ident)
            else:
                self._fail(ident, f, why)
        return bound

    def dead_lettered(self, letters: DeadLetters, refused: str | None = None) -> None:
        """The DLQ committed ``letters`` (``refused`` None) or refused them with that
        error (disk budget used up, DLQ unreachable): they then end as failures."""
        if not letters:
            return
        if refused is None:
            self.counts["dlq"] += len(letters)
            for f, ident in zip(letters.failures, letters.tickets, strict=True):
                t = self._tickets.get(ident)
                if t is None:
                    continue
                t.outcome.dlq += 1
                reasons = t.outcome.dlq_reasons
                reasons[str(f.reason)] = reasons.get(str(f.reason), 0) + 1
                t.remaining -= 1
                self._check_done(ident, t)
            return
        note = f" (not dead-lettered: {refused})"
        for f, ident in zip(letters.failures, letters.tickets, strict=True):
            t = self._tickets.get(ident)
            if t is not None:
                t.outcome.dlq_refused += 1
            self._fail(
                ident,
                EntryFailure(f.reason, f.error + note, f.topic, f.value, f.key, f.line),
                DropReason.DLQ_FULL,
            )

    def _fail(self, ident: int, f: EntryFailure, why: DropReason) -> None:
        self.counts["failed"] += 1
        self.rec.add("log_capturer_kafka_dropped_total", 1, {"reason": str(why)})
        t = self._tickets.get(ident)
        if t is None:
            return
        t.outcome.failures.append(
            EntryFailure(f.reason, f.error, f.topic, f.value, f.key, f.line, dropped=why)
        )
        t.remaining -= 1
        self._check_done(ident, t)

    def _check_done(self, ident: int, t: _Ticket) -> None:
        if t.remaining <= 0:
            self._done.append(ident)

    def finished(self) -> list[tuple[int, SegmentOutcome]]:
        """Tickets whose every entry now has an outcome (each returned once)."""
        out = []
        for ident in self._done:
            t = self._tickets.pop(ident, None)
            self._pieced.pop(ident, None)
            if t is not None:
                out.append((ident, t.outcome))
        self._done = []
        return out

    def counted_open(self, n: int) -> None:
        """``n`` entries diverted to the DLQ because the breaker was open."""
        self.counts["circuit_open"] += n
