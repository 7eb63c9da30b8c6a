"""Batcher actor, one per topic: a bounded queue that flushes whole chunks to Producers.

``enqueue`` accepts a segment (one submission's entries for this topic), waits while
the queue is full (so memory stays bounded by ``queue_size``), and returns the
segment's outcome once every entry of it is acked or failed. A background task
flushes when ``batch_size`` entries wait or the oldest has waited ``batch_timeout``,
assigns partitions per the configured strategy, and hands each chunk to the next
Producer replica of the topic's broker set.

If a Producer call fails (the actor died, say), the entries of that chunk are
reported as failed with the reason; they are never counted as delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import Any

import ray

from shipper.batching import Accumulator, Piece, Segment
from shipper.config import KafkaSinkConfig
from shipper.kafka_client import SendResult
from shipper.ordering import SequenceGate
from shipper.outcomes import EntryFailure, SegmentOutcome
from shipper.partitioning import make_partitioner

__all__ = ["BatcherActor", "batcher_name", "start_batcher"]

# Partition counts are re-read from broker metadata this often, so a topic that
# grows partitions gets them used.
PARTITION_REFRESH_SECONDS = 30.0


def batcher_name(topic: str) -> str:
    return f"batcher:{topic}"


class _Pending:
    """A segment waiting for its outcome."""

    __slots__ = ("future", "outcome", "remaining")

    def __init__(self, future: asyncio.Future[SegmentOutcome], outcome: SegmentOutcome) -> None:
        self.future = future
        self.outcome = outcome
        self.remaining = outcome.entries


class BatcherActor:
    def __init__(self, topic: str, sink: KafkaSinkConfig, producers: list[Any]) -> None:
        self.topic = topic
        self.sink = sink
        self.producers = producers
        self.acc = Accumulator(sink.batch_size, sink.batch_timeout, sink.queue_size)
        part = sink.partitioning
        self.partitioner = (
            make_partitioner(part.strategy, part.key_field, random.Random())
            if part.enabled
            else None
        )
        self._num_partitions = 0
        self._partitions_read = 0.0
        self._waiting: dict[int, _Pending] = {}
        self._next_id = 0
        self._rr = 0
        self._wakeup: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._chunks: set[asyncio.Task[None]] = set()
        self.stats_counts = {"entries": 0, "chunks": 0, "delivered": 0, "failed": 0}
        self.gate = SequenceGate()
        self.source = uuid.uuid4().hex[:12]
        self._chunk_seq = 0

    # ------------------------------------------------------------------ intake

    def _start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._room = asyncio.Condition()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def enqueue(
        self,
        values: list[bytes],
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        submitted_at: float,
        order: tuple[str, int] | None = None,
    ) -> SegmentOutcome:
        self._start()
        assert self._room is not None and self._wakeup is not None
        n = len(values)
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            async with self._room:
                await self._room.wait_for(lambda: self.acc.has_room(n))
            loop = asyncio.get_running_loop()
            ident = self._next_id
            self._next_id += 1
            pending = _Pending(loop.create_future(), SegmentOutcome(self.topic, n))
            self._waiting[ident] = pending
            seg = Segment(values, keys, levels, submitted_at, ident=ident)
            self.acc.offer(seg)
            self.stats_counts["entries"] += n
            if self.acc.due():
                self._wakeup.set()
        return await pending.future

    # ------------------------------------------------------------------ flushing

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            wait = self.acc.seconds_until_due()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass
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
        producer = self.producers[0]
        try:
            count = int(await producer.partition_count.remote(self.topic))
        except Exception:
            count = 0
        if count > 0:
            self._num_partitions = count
            self._partitions_read = now

    def _parts_for(
        self, chunk: list[Piece]
    ) -> list[tuple[list[bytes], list[bytes | None] | None, list[int] | None]]:
        parts = []
        for piece in chunk:
            seg = piece.segment
            whole = piece.start == 0 and piece.end == len(seg)
            values = seg.values if whole else seg.values[piece.start : piece.end]
            keys = None
            if seg.keys is not None:
                keys = seg.keys if whole else seg.keys[piece.start : piece.end]
            partitions = None
            if self.partitioner is not None and self._num_partitions > 0:
                ks = keys if keys is not None else [None] * len(values)
                partitions = self.partitioner.assign(ks, self._num_partitions)
            parts.append((values, keys, partitions))
        return parts

    async def _send(self, chunk: list[Piece]) -> None:
        producer = self.producers[self._rr % len(self.producers)]
        self._rr += 1
        self.stats_counts["chunks"] += 1
        parts = self._parts_for(chunk)
        seq = self._chunk_seq
        self._chunk_seq += 1
        try:
            results: list[SendResult] = await producer.produce.remote(
                self.topic, parts, (self.source, seq)
            )
        except Exception as exc:
            results = [
                SendResult(
                    topic=self.topic,
                    sent=len(v),
                    failures=[],
                    finished=time.time(),
                )
                for v, _k, _p in parts
            ]
            for r, (values, keys, _p) in zip(results, parts, strict=True):
                from shipper.kafka_client import Failure

                r.failures = [
                    Failure(v, keys[i] if keys else None, "error", f"producer unavailable: {exc}")
                    for i, v in enumerate(values)
                ]
        for piece, r in zip(chunk, results, strict=True):
            self._credit(piece, r)
        self.acc.settle(sum(len(p) for p in chunk))
        assert self._room is not None
        async with self._room:
            self._room.notify_all()

    def _credit(self, piece: Piece, r: SendResult) -> None:
        pending = self._waiting.get(piece.segment.ident)
        if pending is None:
            return
        out = pending.outcome
        out.delivered += r.delivered
        self.stats_counts["delivered"] += r.delivered
        self.stats_counts["failed"] += len(r.failures)
        for f in r.failures:
            out.failures.append(EntryFailure(f.reason, f.error, self.topic, f.value, f.key))
        out.latency = max(out.latency, r.finished - piece.segment.submitted_at)
        pending.remaining -= len(piece)
        if pending.remaining == 0:
            del self._waiting[piece.segment.ident]
            if not pending.future.done():
                pending.future.set_result(out)

    # ------------------------------------------------------------------ control

    async def flush(self) -> int:
        """Send everything waiting now and return once nothing is in flight."""
        self._start()
        await self._flush_now()
        while self._chunks:
            await asyncio.gather(*list(self._chunks), return_exceptions=True)
        return self.acc.queued

    def stats(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "queued": self.acc.queued,
            "capacity": self.acc.capacity,
            "utilization": self.acc.utilization,
            "partitions": self._num_partitions,
            **self.stats_counts,
        }


def start_batcher(topic: str, sink: KafkaSinkConfig, producers: list[Any], namespace: str) -> Any:
    cls = ray.remote(BatcherActor)
    return cls.options(  # type: ignore[attr-defined]
        name=batcher_name(topic),
        namespace=namespace,
        get_if_exists=True,
        max_concurrency=1024,
        max_restarts=-1,
        num_cpus=0,
    ).remote(topic, sink, producers)
