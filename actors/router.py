"""Router actor: the pipeline's entrance, one call per submission.

It runs :class:`shipper.intake.Intake` (decode, validate, route, encode once,
size-check, key), hands each topic's segment to that topic's Batcher (created on
first sight, as a named actor so several Routers share it), and answers with the
submission's :class:`~shipper.outcomes.SubmissionResult` once every entry has an
outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from shipper.config import KafkaSinkConfig
from shipper.entries import LogEntry
from shipper.errors import brief
from shipper.intake import Intake, Prepared
from shipper.ordering import SequenceGate
from shipper.outcomes import EntryFailure, SegmentOutcome, SubmissionResult
from shipper.packed import Packed

from ._options import named_actor, tune_gc
from .batcher import start_batcher
from .payload import Stored, store
from .telemetry import Reporter

__all__ = ["RouterActor", "start_router"]


class RouterActor:
    def __init__(
        self,
        sink: KafkaSinkConfig,
        producers: list[Any],
        namespace: str,
        supervisor: Any = None,
        dlq: Any = None,
        telemetry: Any = None,
    ) -> None:
        tune_gc()
        self.sink = sink
        self.producers = producers
        self.namespace = namespace
        self.supervisor = supervisor
        self.dlq = dlq if sink.dlq_config.enabled else None
        self.telemetry = telemetry
        self.intake = Intake(sink)
        self.batchers: dict[str, Any] = {}
        self.counts = {"submissions": 0, "entries": 0, "rejected": 0}
        # Calls are numbered per sender so that submit order survives Ray's
        # concurrent execution of async actor calls (see shipper.ordering).
        self.gate = SequenceGate()
        self.source = uuid.uuid4().hex[:12]
        self._seq: dict[str, int] = {}
        self.metrics = Reporter(telemetry, f"router:{self.source}")
        self.metrics.recorder.add("log_capturer_errors_total", 0, {"component": "router"})

    def _batcher(self, topic: str) -> Any:
        handle = self.batchers.get(topic)
        if handle is None:
            handle = start_batcher(
                topic,
                self.sink,
                self.producers,
                self.namespace,
                self.supervisor,
                self.dlq,
                self.telemetry,
            )
            self.batchers[topic] = handle
        return handle

    async def submit_lines(
        self,
        lines: bytes | list[bytes] | Stored,
        submitted_at: float,
        first_line: int = 1,
        order: tuple[str, int] | None = None,
    ) -> SubmissionResult:
        stored = lines if isinstance(lines, Stored) else None
        raw = await lines.fetch_bytes() if isinstance(lines, Stored) else lines
        async with self._turn(order):
            prep = self.intake.prepare_lines(raw, first_line)
            refs = self._hand_over(prep, submitted_at, stored, raw)
        return await self._collect(prep, refs, submitted_at)

    async def submit_objects(
        self,
        objs: Iterable[LogEntry | Mapping[str, Any] | str],
        submitted_at: float,
        order: tuple[str, int] | None = None,
    ) -> SubmissionResult:
        async with self._turn(order):
            prep = self.intake.prepare_objects(objs)
            refs = self._hand_over(prep, submitted_at)
        return await self._collect(prep, refs, submitted_at)

    def _turn(self, order: tuple[str, int] | None) -> Any:
        if order is None:
            return contextlib.nullcontext()
        return self.gate.turn(*order)

    def _hand_over(
        self,
        prep: Prepared,
        submitted_at: float,
        stored: Stored | None = None,
        raw: Any = None,
    ) -> list[Any]:
        refs = []
        for t, seg in prep.segments.items():
            seq = self._seq.get(t, 0)
            self._seq[t] = seq + 1
            values: Any
            if stored is not None and t == prep.whole:
                # The segment is the submitted blob itself: pass the driver's object
                # on (minus a final newline) rather than store a copy of it.
                size = len(raw) - 1 if raw.endswith(b"\n") else len(raw)
                values = stored.sized(len(seg), size)
            else:
                values = store(seg.values)
            refs.append(
                self._batcher(t).enqueue.remote(
                    values, seg.keys, seg.levels, submitted_at, (self.source, seq)
                )
            )
        return refs

    async def _collect(
        self, prep: Prepared, refs: list[Any], submitted_at: float
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
            self.batchers.pop(topic, None)
            lost = [
                EntryFailure(
                    "error",
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
        """Entries the Router refused (bad data, too large) go to the DLQ when
        ``send_on_error`` says so; otherwise, or if the DLQ refuses, they stay failures."""
        if not rejected:
            return
        rec = self.metrics.recorder
        rec.add("log_capturer_logs_sent_total", len(rejected), {"sink": "kafka", "status": "error"})
        rec.add("log_capturer_errors_total", len(rejected), {"component": "router"})
        if self.dlq is not None and self.sink.dlq_config.send_on_error:
            try:
                result.dlq += int(await self.dlq.put.remote(rejected))
                result.dead_lettered.extend(rejected)
                return
            except Exception as exc:
                note = f" (not dead-lettered: {brief(exc)})"
                rejected = [
                    EntryFailure(f.reason, f.error + note, f.topic, f.value, f.key, f.line)
                    for f in rejected
                ]
        result.failures.extend(rejected)
        for f in rejected:
            rec.add("log_capturer_kafka_dropped_total", 1, {"reason": f.reason})

    async def replay(
        self, topic: str, values: list[bytes], keys: list[bytes | None] | None
    ) -> SegmentOutcome:
        """Re-send already encoded DLQ records to ``topic`` (called by the DLQ actor)."""
        packed = store(Packed.of(values))
        return await self._batcher(topic).replay.remote(packed, keys)  # type: ignore[no-any-return]

    async def flush(self, order: tuple[str, int] | None = None) -> int:
        """Flush every Batcher this Router knows; return what is still queued.

        With ``order`` the flush takes its turn among the sender's submissions, and
        its turn at each Batcher after this Router's earlier hand-overs, so it sends
        everything submitted before it (Ray runs an async actor's calls in any order;
        without the turns the last submissions could miss the flush and wait out
        ``batch_timeout``).
        """
        calls = []
        async with self._turn(order):
            for t, b in self.batchers.items():
                seq = self._seq.get(t, 0)
                self._seq[t] = seq + 1
                calls.append(b.flush.remote((self.source, seq)))
        left = await asyncio.gather(*calls)
        self.metrics.push_now()
        return int(sum(left))

    async def batcher_stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(b.stats.remote() for b in self.batchers.values())))

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)


def start_router(
    sink: KafkaSinkConfig,
    producers: list[Any],
    namespace: str,
    supervisor: Any = None,
    dlq: Any = None,
    telemetry: Any = None,
    index: int = 0,
) -> Any:
    return named_actor(RouterActor, f"router:{index}", namespace, 256).remote(
        sink, producers, namespace, supervisor, dlq, telemetry
    )
