"""Router actor: the pipeline's entrance, one call per submission.

It runs :class:`shipper.intake.Intake` (decode, validate, route, encode once,
size-check, key), hands each topic's segment to that topic's Batcher (created on
first sight, as a named actor so several Routers share it), dead-letters what the
intake refused, and answers with the submission's
:class:`~shipper.outcomes.SubmissionResult` once every entry has an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from shipper.entries import LogEntry
from shipper.errors import brief
from shipper.intake import Intake, Prepared
from shipper.ordering import SequenceGate
from shipper.outcomes import DropReason, EntryFailure, Reason, SegmentOutcome, SubmissionResult

from ._options import announce_start, named_actor, tune_gc
from .handles import Order, Ref, RouterHandle
from .payload import Stored, store
from .telemetry import Reporter
from .wiring import Wiring

__all__ = ["RouterActor", "start_router"]

_ERROR = {"sink": "kafka", "status": "error"}


class RouterActor:
    def __init__(self, wiring: Wiring) -> None:
        tune_gc()
        self.wiring = wiring
        self.sink = wiring.sink
        self.name = wiring.router_name()
        self.intake = Intake(self.sink)
        self.counts = {"submissions": 0, "entries": 0, "rejected": 0}
        # Calls are numbered per sender so that submit order survives Ray's
        # concurrent execution of async actor calls (see shipper.ordering).
        self.gate = SequenceGate()
        self.source = uuid.uuid4().hex[:12]
        self._seq: dict[str, int] = {}
        self.topics: list[str] = []
        self.metrics = Reporter(wiring.telemetry(), self.name)
        self.metrics.recorder.add("log_capturer_errors_total", 0, {"component": "router"})
        announce_start(wiring.namespace, "router", self.name)
        # The series the alerts read exist from the start, before the first event.
        self.metrics.push_now()

    async def submit_lines(
        self,
        lines: bytes | list[bytes] | Stored,
        submitted_at: float,
        first_line: int = 1,
        order: Order | None = None,
        labels: dict[str, str] | None = None,
    ) -> SubmissionResult:
        """Ship input lines; ``labels`` (from a source) are added to every entry."""
        stored = lines if isinstance(lines, Stored) else None
        raw = await lines.fetch_bytes() if isinstance(lines, Stored) else lines
        async with self._turn(order):
            prep = self.intake.prepare_lines(raw, first_line, labels)
            refs = self._hand_over(prep, submitted_at, stored, raw)
        return await self._collect(prep, refs, submitted_at)

    async def submit_objects(
        self,
        objs: Iterable[LogEntry | Mapping[str, Any] | str],
        submitted_at: float,
        order: Order | None = None,
    ) -> SubmissionResult:
        async with self._turn(order):
            prep = self.intake.prepare_objects(objs)
            refs = self._hand_over(prep, submitted_at)
        return await self._collect(prep, refs, submitted_at)

    def _turn(self, order: Order | None) -> Any:
        if order is None:
            return contextlib.nullcontext()
        return self.gate.turn(*order)

    def _next(self, topic: str) -> Order:
        seq = self._seq.get(topic)
        if seq is None:
            seq = 0
            self.topics.append(topic)
        self._seq[topic] = seq + 1
        return (self.source, seq)

    def _hand_over(
        self,
        prep: Prepared,
        submitted_at: float,
        stored: Stored | None = None,
        raw: Any = None,
    ) -> list[Ref[SegmentOutcome]]:
        refs = []
        for t, seg in prep.segments.items():
            values: Any
            if stored is not None and t == prep.whole:
                # The segment is the submitted blob itself: pass the driver's object
                # on (minus a final newline) rather than store a copy of it.
                size = len(raw) - 1 if raw.endswith(b"\n") else len(raw)
                values = stored.sized(len(seg), size)
            else:
                values = store(seg.values)
            order = self._next(t)
            refs.append(
                self.wiring.batcher(t).enqueue.remote(
                    values, seg.keys, seg.levels, submitted_at, order
                )
            )
        return refs

    async def _collect(
        self, prep: Prepared, refs: list[Ref[SegmentOutcome]], submitted_at: float
    ) -> SubmissionResult:
        self.counts["submissions"] += 1
        self.counts["entries"] += prep.submitted
        self.counts["rejected"] += len(prep.rejected)
        result = SubmissionResult(submitted=prep.submitted, submitted_at=submitted_at)
        await self._reject(prep.rejected, result)
        topics = list(prep.segments)
        outs = await asyncio.gather(*refs, return_exceptions=True)
        for topic, out in zip(topics, outs, strict=True):
            if isinstance(out, SegmentOutcome):
                result.add_segment(out)
                continue
            # The Batcher failed: every entry of the segment goes to the DLQ or is
            # reported, none is dropped.
            seg = prep.segments[topic]
            lost = [
                EntryFailure(
                    Reason.ERROR,
                    f"batcher for {topic} failed: {brief(out)}",
                    topic=topic,
                    value=value,
                    key=seg.keys[i] if seg.keys else None,
                )
                for i, value in enumerate(seg.values)
            ]
            await self._reject(lost, result)
        if result.latency == 0.0:
            result.latency = time.time() - submitted_at
        self.metrics.maybe_push()
        return result

    async def _reject(self, rejected: list[EntryFailure], result: SubmissionResult) -> None:
        """Entries that never reached a Batcher go to the DLQ when ``send_on_error``
        says so; otherwise, or if the DLQ refuses, they stay failures (counted)."""
        if not rejected:
            return
        rec = self.metrics.recorder
        rec.add("log_capturer_logs_sent_total", len(rejected), _ERROR)
        rec.add("log_capturer_errors_total", len(rejected), {"component": "router"})
        dlq = self.wiring.dlq()
        why = DropReason.DLQ_DISABLED if dlq is None else DropReason.NOT_DEAD_LETTERED
        note = ""
        if dlq is not None and self.sink.dlq_config.send_on_error:
            try:
                result.dlq += int(await dlq.put.remote(rejected))
                result.dead_lettered.extend(rejected)
                return
            except Exception as exc:
                why = DropReason.DLQ_FULL
                note = f" (not dead-lettered: {brief(exc)})"
                result.dlq_refused += len(rejected)
        result.failures.extend(
            EntryFailure(f.reason, f.error + note, f.topic, f.value, f.key, f.line, dropped=why)
            for f in rejected
        )
        rec.add("log_capturer_kafka_dropped_total", len(rejected), {"reason": str(why)})

    async def flush(self, order: Order | None = None) -> int:
        """Flush every Batcher this Router knows; return what is still queued.

        With ``order`` the flush takes its turn among the sender's submissions, and
        its turn at each Batcher after this Router's earlier hand-overs, so it sends
        everything submitted before it (Ray runs an async actor's calls in any order;
        without the turns the last submissions could miss the flush and wait out
        ``batch_timeout``).
        """
        calls = []
        async with self._turn(order):
            # Every Batcher of the node, also those this Router has not fed (it may be
            # a restart, or another Router may have created them).
            for t in sorted({*self.topics, *self.wiring.topics()}):
                calls.append(self.wiring.batcher(t).flush.remote(self._next(t)))
        left = await asyncio.gather(*calls)
        self.metrics.push_now()
        return int(sum(left))

    async def batcher_stats(self) -> list[dict[str, Any]]:
        topics = sorted({*self.topics, *self.wiring.topics()})
        stats = await asyncio.gather(*(self.wiring.batcher(t).stats.remote() for t in topics))
        return list(stats)

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)


def start_router(wiring: Wiring) -> RouterHandle:
    """Create (or find) the node pipeline's Router."""
    handle: RouterHandle = named_actor(
        RouterActor, wiring.router_name(), wiring.namespace, 256
    ).remote(wiring)
    return handle
