"""The file source actor: the Ray shell around :class:`shipper.sources.follow.FileFollower`.

It runs on the node that has the files, follows them with the follower (budget,
resends, checkpoint pacing: all there), and hands each block to the node's Batchers
itself: the intake validates and routes it with the file's labels
(:class:`shipper.intake.Intake`) and :class:`actors.feeder.Feeder` makes the Batcher
calls (no Router hop). The driver only starts it and stops it, with the stop protocol
every actor speaks (:mod:`actors.stopping`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shipper.fleet import node_path
from shipper.headers import file_entry_ids
from shipper.intake import Intake
from shipper.outcomes import SubmissionResult
from shipper.sources.checkpoints import open_checkpoints
from shipper.sources.files import Block, FileTailer
from shipper.sources.follow import FileFollower
from shipper.submissions import RunStats

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .feeder import Feeder
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["FileSourceActor", "start_file_source"]

log = logging.getLogger("shipper.sources")

#: Seconds the close waits for blocks still in flight after the pipeline parked.
CLOSE_WAIT = 10.0


class FileSourceActor:
    def __init__(self, wiring: Wiring) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.name = wiring.source_name("files")
        cfg = wiring.config
        self.metrics = Reporter(
            wiring.telemetry(), self.name, node=wiring.node, refresh=self._refresh
        )
        store, note = open_checkpoints(
            wiring.checkpoint_path(), cfg.sources.checkpoints.map_size_bytes
        )
        # "{node}" in a glob names this node's own files (simulated nodes on one
        # machine, or a shared directory with a folder per node).
        groups = [
            g.model_copy(update={"paths": [node_path(p, wiring.node) for p in g.paths]})
            for g in cfg.sources.files
        ]
        tailer = FileTailer(groups, store, cfg.sources.tail)
        self.intake = Intake(wiring.sink)
        self._ids = wiring.sink.entry_id_header is not None  # stable ids per file line
        self.feeder = Feeder(wiring, self.metrics.recorder, "source")
        self.follower = FileFollower(
            tailer,
            self._send,
            self.metrics.recorder,
            # Like the driver's own budget: under the queues' warning band.
            max_inflight_lines=wiring.sink.inflight_entries,
        )
        if note:
            log.warning("%s", note)
            self.metrics.recorder.add(
                "log_capturer_source_problems_total",
                1,
                {"source": "file", "kind": "checkpoint_error"},
            )
        self._task: asyncio.Task[None] | None = None
        announce_start(wiring.namespace, "source", self.name)
        self.metrics.push_now()

    def _refresh(self) -> None:
        self.metrics.recorder.set(
            "log_capturer_source_files", len(self.follower.tailer.files), {"source": "file"}
        )

    async def _send(self, b: Block) -> SubmissionResult:
        now = time.time()
        ids = None
        if self._ids:
            # The node (inode numbers repeat across machines) and the file's generation
            # (a truncation starts its offsets again) make the identity.
            ident = f"{self.wiring.node}/{b.key}/{b.gen}"
            ids = file_entry_ids(ident, b.start, b.data, b.sizes)
        prep = self.intake.prepare_lines(b.data, b.first_line, b.labels, ids)
        refs = await self.feeder.hand_over(prep, now)
        return await self.feeder.collect(prep, refs, now)

    async def start(self) -> None:
        """Start following the files (idempotent)."""
        if self._task is None and not self.follower.stopping:
            self.metrics.start_periodic()
            self._task = asyncio.get_running_loop().create_task(self.follower.run())

    def run_stats(self) -> RunStats:
        """In, delivered, to the DLQ (by reason), failed: the lines read so far."""
        return self.follower.stats

    # ------------------------------------------------------------------ stop protocol

    async def stop_intake(self) -> None:
        """Read no more."""
        self.follower.stop_intake()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def drain(self, seconds: float) -> int:
        """Wait up to ``seconds`` for the blocks in flight; the blocks left."""
        return await self.follower.drain(seconds)

    def park(self) -> int:
        """Nothing of its own to park: its blocks in flight end where the Batchers
        put them (the DLQ, reason ``shutdown``), and :meth:`close` waits for that."""
        return 0

    async def close(self) -> dict[str, Any]:
        """Write the positions and close; what was done: ``counts`` and ``run`` (in,
        delivered, to the DLQ, failed)."""
        await self.stop_intake()
        await self.follower.drain(CLOSE_WAIT)
        counts = self.follower.close()
        self.metrics.close()
        return {"counts": counts, "run": self.follower.stats}


def start_file_source(wiring: Wiring) -> Any:
    """Create (or find) the node's file source, pinned to the node."""
    return named_actor(
        FileSourceActor,
        wiring.source_name("files"),
        wiring.namespace,
        64,
        **wiring.placement("source"),
    ).remote(wiring)
