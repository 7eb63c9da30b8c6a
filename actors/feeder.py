"""Prepared entries to the Batchers, outcomes back: the part every entrance shares.

The Router runs :class:`Feeder` for submissions from the driver; the file source and
the HTTP intake run one of their own, so entries read on a node go from the source
straight to that node's Batchers (no Router hop). A Feeder numbers its calls to each
Batcher (``shipper.ordering``), so one sender's entries keep their order per topic,
hands over whole segments (large ones through the object store once), dead-letters
what the intake refused, and assembles the submission's result.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shipper.errors import brief
from shipper.intake import Prepared
from shipper.ordering import OrderCounter
from shipper.outcomes import DropReason, EntryFailure, Reason, SegmentOutcome, SubmissionResult
from shipper.telemetry import MetricsRecorder

from .handles import Order, Ref
from .payload import Stored, store
from .wiring import Wiring

__all__ = ["Feeder"]

_ERROR = {"sink": "kafka", "status": "error"}


class Feeder:
    """Hands prepared submissions to the node's Batchers for one sender."""

    def __init__(self, wiring: Wiring, recorder: MetricsRecorder, component: str) -> None:
        self.wiring = wiring
        self.rec = recorder
        self.component = component
        self.orders = OrderCounter()
        self._handing = asyncio.Lock()
        self.counts = {"submissions": 0, "entries": 0, "rejected": 0}
        recorder.add("log_capturer_errors_total", 0, {"component": component})

    @property
    def source(self) -> str:
        """This sender's id in its calls' numbers."""
        return self.orders.sender

    @property
    def topics(self) -> list[str]:
        """The topics this sender has fed, in the order it met them."""
        return self.orders.receivers()

    def next_order(self, topic: str) -> Order:
        return self.orders.next(topic)

    async def hand_over(
        self,
        prep: Prepared,
        submitted_at: float,
        stored: Stored | None = None,
        raw: Any = None,
    ) -> list[Ref[SegmentOutcome]]:
        """Start the Batcher calls (in this sender's order); await :meth:`collect`.

        A topic met for the first time gets its Batcher first (made by the keeper).
        Every Batcher is found before the first call goes, so a hand-over that fails
        sent nothing (its sender may send it again whole); hand-overs run one at a
        time, in the order they were asked for, so their numbers follow that order."""
        async with self._handing:
            batchers = {t: await self.wiring.open_batcher(t) for t in prep.segments}
            refs = []
            for t, seg in prep.segments.items():
                values: Any
                if stored is not None and t == prep.whole:
                    # The segment is the submitted blob itself: pass the sender's object
                    # on (minus a final newline) rather than store a copy of it.
                    size = len(raw) - 1 if raw.endswith(b"\n") else len(raw)
                    values = stored.sized(len(seg), size)
                else:
                    values = store(seg.values)
                refs.append(
                    batchers[t].enqueue.remote(
                        values, seg.keys, seg.levels, submitted_at, self.next_order(t), seg.headers
                    )
                )
        return refs

    async def collect(
        self, prep: Prepared, refs: list[Ref[SegmentOutcome]], submitted_at: float
    ) -> SubmissionResult:
        """The submission's result once every entry has an outcome."""
        self.counts["submissions"] += 1
        self.counts["entries"] += prep.submitted
        self.counts["rejected"] += len(prep.rejected)
        for why, n in prep.topic_fallbacks.items():
            self.rec.add("log_capturer_topic_fallbacks_total", n, {"reason": why})
        result = SubmissionResult(submitted=prep.submitted, submitted_at=submitted_at)
        await self.reject(prep.rejected, result)
        topics = list(prep.segments)
        outs = await asyncio.gather(*refs, return_exceptions=True)
        for topic, out in zip(topics, outs, strict=True):
            if isinstance(out, SegmentOutcome):
                result.add_segment(out)
                continue
            # The Batcher failed: every entry of the segment goes to the DLQ or is
            # reported, none is dropped. Its handle may name a dead actor now.
            self.wiring.forget(self.wiring.batcher_name(topic))
            seg = prep.segments[topic]
            lost = [
                EntryFailure(
                    Reason.ERROR,
                    f"batcher for {topic} failed: {brief(out)}",
                    topic=topic,
                    value=value,
                    key=seg.keys[i] if seg.keys else None,
                    headers=seg.headers[i] if seg.headers else None,
                )
                for i, value in enumerate(seg.values)
            ]
            await self.reject(lost, result)
        if result.latency == 0.0:
            result.latency = time.time() - submitted_at
        return result

    async def reject(self, rejected: list[EntryFailure], result: SubmissionResult) -> None:
        """Entries that never reached a Batcher go to the DLQ when ``send_on_error``
        says so; otherwise, or if the DLQ refuses, they stay failures (counted)."""
        if not rejected:
            return
        rec = self.rec
        rec.add("log_capturer_logs_sent_total", len(rejected), _ERROR)
        rec.add("log_capturer_errors_total", len(rejected), {"component": self.component})
        dlq = self.wiring.dlq()
        sink = self.wiring.sink
        why = DropReason.DLQ_DISABLED if dlq is None else DropReason.NOT_DEAD_LETTERED
        note = ""
        if dlq is not None and sink.dlq_config.send_on_error:
            try:
                result.dlq += int(await dlq.put.remote(rejected))
                result.dead_lettered.extend(rejected)
                return
            except Exception as exc:
                why = DropReason.DLQ_FULL
                note = f" (not dead-lettered: {brief(exc)})"
                result.dlq_refused += len(rejected)
        result.failures.extend(
            EntryFailure(f.reason, f.error + note, f.topic, f.value, f.key, f.line, why, f.headers)
            for f in rejected
        )
        rec.add("log_capturer_kafka_dropped_total", len(rejected), {"reason": str(why)})
