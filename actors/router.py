"""Router actor: the pipeline's entrance, one call per submission.

It runs :class:`shipper.intake.Intake` (decode, validate, route, encode once,
size-check, key) on what the driver submits, and its :class:`actors.feeder.Feeder`
hands each topic's segment to that topic's Batcher (created on first sight, as a
named actor so several entrances share it), dead-letters what the intake refused,
and answers with the submission's :class:`~shipper.outcomes.SubmissionResult` once
every entry has an outcome. The sources of a node have feeders of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from shipper.entries import LogEntry
from shipper.intake import Intake, Prepared
from shipper.ordering import SequenceGate
from shipper.outcomes import SegmentOutcome, SubmissionResult

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .feeder import Feeder
from .handles import Order, Ref, RouterHandle
from .payload import Stored
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["RouterActor", "start_router"]


class RouterActor:
    def __init__(self, wiring: Wiring) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.sink = wiring.sink
        self.name = wiring.router_name()
        self.intake = Intake(self.sink)
        # Calls are numbered per sender so that submit order survives Ray's
        # concurrent execution of async actor calls (see shipper.ordering).
        self.gate = SequenceGate()
        self.metrics = Reporter(wiring.telemetry(), self.name, node=wiring.node)
        self.feeder = Feeder(wiring, self.metrics.recorder, "router")
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
            refs = await self.feeder.hand_over(prep, submitted_at, stored, raw)
        return await self._finish(prep, refs, submitted_at)

    async def submit_objects(
        self,
        objs: Iterable[LogEntry | Mapping[str, Any] | str],
        submitted_at: float,
        order: Order | None = None,
    ) -> SubmissionResult:
        async with self._turn(order):
            prep = self.intake.prepare_objects(objs)
            refs = await self.feeder.hand_over(prep, submitted_at)
        return await self._finish(prep, refs, submitted_at)

    async def _finish(
        self, prep: Prepared, refs: list[Ref[SegmentOutcome]], submitted_at: float
    ) -> SubmissionResult:
        result = await self.feeder.collect(prep, refs, submitted_at)
        self.metrics.maybe_push()
        return result

    def _turn(self, order: Order | None) -> Any:
        if order is None:
            return contextlib.nullcontext()
        return self.gate.turn(*order)

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
            for t in sorted({*self.feeder.topics, *self.wiring.topics()}):
                batcher = await self.wiring.open_batcher(t)
                calls.append(batcher.flush.remote(self.feeder.next_order(t)))
        left = await asyncio.gather(*calls)
        self.metrics.push_now()
        return int(sum(left))

    async def batcher_stats(self) -> list[dict[str, Any]]:
        topics = sorted({*self.feeder.topics, *self.wiring.topics()})
        batchers = [await self.wiring.open_batcher(t) for t in topics]
        stats = await asyncio.gather(*(b.stats.remote() for b in batchers))
        return list(stats)

    def stats(self) -> dict[str, Any]:
        return dict(self.feeder.counts)

    # ------------------------------------------------------------------ stop protocol

    def stop_intake(self) -> None:
        """Submissions that come now are still taken (a sender's last ones may be on
        their way); the driver and the sources stop sending first."""

    async def drain(self, seconds: float) -> int:
        """Flush every Batcher of the node (up to ``seconds``); the entries left queued."""
        try:
            return await asyncio.wait_for(self.flush(), seconds)
        except TimeoutError:
            return int(sum(s["queued"] for s in await self.batcher_stats()))

    def park(self) -> int:
        """Nothing of its own: what it handed over is queued at the Batchers."""
        return 0

    def close(self) -> dict[str, Any]:
        """Final figures (submissions, entries, rejected)."""
        self.metrics.push_now()
        return {"counts": self.stats()}


def start_router(wiring: Wiring) -> RouterHandle:
    """Create (or find) the node pipeline's Router."""
    handle: RouterHandle = named_actor(
        RouterActor, wiring.router_name(), wiring.namespace, 256, **wiring.placement("router")
    ).remote(wiring)
    return handle
