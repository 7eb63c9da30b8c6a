"""Batcher actor, one per topic: the Ray shell around :class:`shipper.batching.topic.TopicBatcher`.

It awaits what the core cannot: room in the bounded queue, the Producer's call, the
DLQ's commit, the supervisor's probe; a background task flushes when the core says
the queue is due. ``enqueue`` returns a segment's outcome once every entry of it is
acked, in the DLQ, or failed; see the core for every rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from shipper.batching.backpressure import Pressure
from shipper.batching.topic import (
    Chunk,
    DeadLetters,
    Gate,
    TopicBatcher,
    failed_result,
    probe_failed,
)
from shipper.breaker import BreakerState
from shipper.errors import brief
from shipper.headers import Headers, HeaderTable
from shipper.kafka.client import SendResult
from shipper.ordering import SequenceGate
from shipper.outcomes import Reason, SegmentOutcome
from shipper.packed import Packed

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .handles import BatcherHandle, Order
from .payload import lost_payload, resolve
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["BatcherActor", "start_batcher"]

log = logging.getLogger("shipper.batcher")


class BatcherActor:
    def __init__(self, wiring: Wiring, topic: str) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.topic = topic
        self.name = wiring.batcher_name(topic)
        self.broker_set = wiring.broker_set
        self.metrics = Reporter(
            wiring.telemetry(), self.name, node=wiring.node, refresh=self._refresh
        )
        self.core = TopicBatcher(topic, wiring.sink, self.metrics.recorder)
        self.producers = wiring.producers()
        self.gate = SequenceGate()
        self.source = f"{self.name}:{time.time_ns()}"
        self._futures: dict[int, asyncio.Future[SegmentOutcome]] = {}
        self._wakeup: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._chunks: set[asyncio.Task[None]] = set()
        self._recount: asyncio.Task[None] | None = None  # a partition count on its way
        announce_start(wiring.namespace, "batcher", self.name)
        # The series the alerts read exist from the start, before the first event.
        self.metrics.push_now()

    def _refresh(self) -> None:
        self.core.refresh_gauges()

    async def _start(self) -> None:
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._room = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.metrics.start_periodic()
        state = await self.wiring.supervisor().register.remote(self.broker_set, self.name)
        self.core.breaker = BreakerState(state)

    async def start(self) -> dict[str, Any]:
        """Start now rather than at the first entry: subscribed to the breaker from
        here on (a node pipeline's Batchers all show an open breaker, busy or not)."""
        await self._start()
        return self.core.stats()

    def set_breaker_state(self, state: int) -> None:
        """Pushed by the supervisor on every breaker change of this broker set."""
        self.core.breaker = BreakerState(state)

    # ------------------------------------------------------------------ intake

    async def enqueue(
        self,
        values: Any,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        submitted_at: float,
        order: Order | None = None,
        headers: HeaderTable | None = None,
    ) -> SegmentOutcome:
        await self._start()
        turn = self.gate.turn(*order) if order is not None else contextlib.nullcontext()
        async with turn:
            ticket = self.core.open(len(values), submitted_at)
            fut = self._future(ticket)
            pressure = self.core.arrival()
            if pressure == Pressure.CRITICAL:
                await self._relief()
            if self.core.oversized(len(values)):
                await self._offer_pieces(ticket, values, keys, levels, headers)
            elif self.core.must_shed(len(values)):
                resolved = await resolve(values)
                values, keys, levels, headers, shed = self.core.shed(
                    ticket, resolved, keys, levels, headers
                )
                await self._dead_letter(shed)
                await self._offer(ticket, values, keys, levels, headers)
            else:
                await self._offer(ticket, values, keys, levels, headers)
        self._complete()
        return await fut

    async def _offer_pieces(
        self,
        ticket: int,
        values: Any,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        headers: HeaderTable | None = None,
    ) -> None:
        """A call larger than the in-flight budget, in pieces that each wait until the
        queue can take them below its emergency band: its sender waits, and nothing of
        it is shed for its own size. The queue holds at most its capacity; this actor
        holds the call's payload until its last piece is queued."""
        assert self._room is not None and self._wakeup is not None
        try:
            resolved = await resolve(values)
        except BaseException:
            self.core.forget(ticket)
            self._futures.pop(ticket, None)
            raise
        self.core.pieced(ticket)
        size = self.core.piece_size
        for i in range(0, len(resolved), size):
            # Packed again: the piece travels to the Producer as one buffer.
            piece = Packed.of(resolved[i : i + size])
            fits = functools.partial(self.core.piece_fits, len(piece))
            async with self._room:
                # Checked and queued under one lock: nothing can slip in between.
                await self._room.wait_for(fits)
                wake = self.core.offer(
                    ticket,
                    piece,
                    keys[i : i + size] if keys is not None else None,
                    levels[i : i + size] if levels is not None else None,
                    headers.slice(i, i + size) if headers is not None else None,
                )
            if wake:
                self._wakeup.set()

    async def replay(
        self,
        values: Any,
        keys: list[bytes | None] | None,
        rows: list[Headers] | None = None,
    ) -> SegmentOutcome:
        """Re-send DLQ records: same queue and breaker, but failures come back to the
        caller (the DLQ actor) instead of being dead-lettered again. ``rows``: each
        record's headers, when any has some."""
        await self._start()
        headers = HeaderTable.of_rows(rows) if rows is not None else None
        ticket = self.core.open(len(values), time.time(), replay=True)
        fut = self._future(ticket)
        if self.core.gate() == Gate.DIVERT:
            # Kafka is known to be down: do not spend a retry of these records on it.
            result = failed_result(
                self.topic,
                await resolve(values),
                keys,
                Reason.CIRCUIT_OPEN,
                self.core.open_text(self.broker_set),
                headers,
            )
            self.core.answer(ticket, result)
        else:
            await self._offer(ticket, values, keys, None, headers)
        self._complete()
        return await fut

    def _future(self, ticket: int) -> asyncio.Future[SegmentOutcome]:
        fut: asyncio.Future[SegmentOutcome] = asyncio.get_running_loop().create_future()
        self._futures[ticket] = fut
        return fut

    async def _relief(self) -> None:
        """Under critical pressure, give the Producers a moment to drain below it."""
        assert self._room is not None
        with contextlib.suppress(TimeoutError):
            async with self._room:
                await asyncio.wait_for(
                    self._room.wait_for(self.core.relieved), self.core.critical_wait()
                )

    async def _offer(
        self,
        ticket: int,
        values: Any,
        keys: list[bytes | None] | None,
        levels: list[str] | None,
        headers: HeaderTable | None = None,
    ) -> None:
        assert self._room is not None and self._wakeup is not None
        n = len(values)
        if n == 0:
            return
        async with self._room:
            await self._room.wait_for(lambda: self.core.has_room(n))
        if self.core.offer(ticket, values, keys, levels, headers):
            self._wakeup.set()

    def _complete(self) -> None:
        for ticket, outcome in self.core.finished():
            fut = self._futures.pop(ticket, None)
            if fut is not None and not fut.done():
                fut.set_result(outcome)

    async def _dead_letter(self, letters: DeadLetters) -> None:
        if not letters:
            return
        dlq = self.wiring.dlq()
        refused: str | None = None
        try:
            if dlq is None:
                raise RuntimeError("the DLQ is disabled")
            await dlq.put.remote(letters.failures)
        except Exception as exc:
            refused = brief(exc)
        self.core.dead_lettered(letters, refused)

    # ------------------------------------------------------------------ flushing

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            wait = self.core.seconds_until_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            self._wakeup.clear()
            if self.core.due():
                await self._flush_now()

    async def _flush_now(self) -> None:
        # Only while Kafka takes entries: with the breaker open or probing, a metadata
        # request would wait for a broker that is away. A count known already is
        # refreshed beside the flush, never in front of it (Kafka may have just gone).
        if self.core.partitions_stale() and self.core.gate() == Gate.PRODUCE:
            if self.core.partitions:
                if self._recount is None or self._recount.done():
                    self._recount = asyncio.get_running_loop().create_task(self._partitions())
            else:
                await self._partitions()
        for chunk in self.core.take():
            task = asyncio.get_running_loop().create_task(self._send(chunk))
            self._chunks.add(task)
            task.add_done_callback(self._chunks.discard)

    async def _partitions(self) -> None:
        try:
            count = await self.producers[0].partition_count.remote(self.topic)
        except Exception:
            count = 0
        self.core.set_partitions(int(count))

    # ------------------------------------------------------------------ stop protocol

    def stop_intake(self) -> None:
        """Entries that still come are taken (the entrances stop first)."""

    async def drain(self, seconds: float) -> int:
        """Send what is queued and wait up to ``seconds`` for it; the entries left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), seconds)
        return int(self.core.queued)

    def close(self) -> dict[str, Any]:
        """Final figures; the actor keeps answering what is still in flight."""
        self.metrics.push_now()
        return {"counts": self.core.stats()}

    async def park(self) -> int:
        """The shipper is stopping: what is queued (and what still arrives) goes to
        the DLQ with reason ``shutdown`` instead of waiting for Kafka. Returns the
        entries parked now; chunks already at a Producer end there (its close purges
        them into the DLQ the same way)."""
        await self._start()
        self.core.parked = True
        queued = self.core.acc.pending_entries
        await self._flush_now()
        return queued

    async def _may_produce(self) -> tuple[bool, bool]:
        """May this chunk be produced, and is it the breaker's probe?"""
        gate = self.core.gate()
        if gate == Gate.PROBE:
            got = bool(await self.wiring.supervisor().acquire_probe.remote(self.broker_set))
            return got, got
        return gate == Gate.PRODUCE, False

    async def _send(self, chunk: Chunk) -> None:
        may, probe = await self._may_produce()
        if may:
            replica, seq = self.core.next_replica(len(self.producers), chunk)
            started = time.monotonic()
            try:
                results: list[SendResult] = await self.producers[replica].produce.remote(
                    self.topic, chunk.parts, (f"{self.source}:{replica}", seq), probe
                )
            except Exception as exc:
                results = await _failed_parts(
                    self.topic, chunk, Reason.ERROR, f"producer unavailable: {brief(exc)}"
                )
            self.core.record_produce(chunk, time.monotonic() - started, results)
            ok = self.core.breaker_report(results)
            if ok is not None:
                self.wiring.supervisor().report.remote(self.broker_set, ok)
            if probe:
                results = probe_failed(results)
        elif self.core.parked:
            results = await _failed_parts(
                self.topic,
                chunk,
                Reason.SHUTDOWN,
                "still queued when the shipper stopped; kept in the DLQ for the next start",
            )
        else:
            self.core.counted_open(chunk.size)
            results = await _failed_parts(
                self.topic, chunk, Reason.CIRCUIT_OPEN, self.core.open_text(self.broker_set)
            )
        letters = self.core.settle(chunk, results)
        await self._dead_letter(letters)
        self._complete()
        self.metrics.maybe_push()
        assert self._room is not None
        async with self._room:
            self._room.notify_all()

    # ------------------------------------------------------------------ control

    async def flush(self, order: Order | None = None) -> int:
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
        return self.core.queued

    def stats(self) -> dict[str, Any]:
        return self.core.stats()


async def _failed_parts(topic: str, chunk: Chunk, reason: Reason, error: str) -> list[SendResult]:
    out = []
    for values, keys, _p, headers in chunk.parts:
        try:
            vals = await resolve(values)
        except Exception as exc:
            # The payload's owner is gone (see actors.payload): nothing left to re-send.
            out.append(lost_payload(topic, len(values), keys, exc))
            continue
        out.append(failed_result(topic, vals, keys, reason, error, headers))
    return out


def start_batcher(wiring: Wiring, topic: str) -> BatcherHandle:
    """Create (or find) the named Batcher of ``topic``."""
    handle: BatcherHandle = named_actor(
        BatcherActor,
        wiring.batcher_name(topic),
        wiring.namespace,
        1024,
        **wiring.placement("batcher"),
    ).remote(wiring, topic)
    return handle
