"""DLQ actor, one per node: owns the node's LMDB dead-letter queue and replays it.

``put`` stores failed entries durably (one LMDB transaction per call) and returns
only after the commit, so an entry counted as "handed to the DLQ" survives a crash.
When the disk budget is used up, ``put`` raises
:class:`~shipper.errors.DlqFullError` and the caller reports those entries as failed
(``dlq_refused`` in the outcome): nothing is dropped silently.

Reprocessing (``dlq_config.reprocessing_config``) runs every ``interval`` and at once
on :meth:`kick` (the supervisor kicks when a breaker closes, and when this actor was
restarted). Each pass is one :class:`shipper.dlq.reprocess.Reprocessor` pass that
re-sends through the node's Batchers directly; the rules (paced ramp, retries,
parking, when to stop) live there and are the ones ``shipper dlq replay`` follows.
A pass in which a re-send call itself broke (a Batcher or Producer still restarting),
or in which records failed again while Kafka was being tried (the breaker closed), is
followed by another after 1 s, then 2, 4... up to ``interval``; such quick passes spend
no retry (a record spends at most one per ``interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shipper.dlq import DlqFilter, DlqRecord, DlqStats, DlqStore, LmdbDlqStore
from shipper.dlq.reprocess import ReplaySummary, Reprocessor, next_retry
from shipper.errors import ShutdownError
from shipper.kafka.client import Failure
from shipper.outcomes import EntryFailure, Reason

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .handles import DlqHandle
from .payload import store as to_store
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["DlqActor", "failure_to_record", "start_dlq"]

log = logging.getLogger("shipper.dlq")


def failure_to_record(f: EntryFailure, now: float) -> DlqRecord:
    reason = Reason(f.reason)
    return DlqRecord(
        id=0,
        value=f.value if f.value is not None else b"",
        topic=f.topic or "",
        key=f.key,
        headers=list(f.headers) if f.headers else [],
        reason=reason,
        error=f.error,
        attempts=0,
        first_failure=now,
        last_failure=now,
        # Reasons decided by the data itself cannot succeed on a replay: they are
        # kept for a human (list, export, replay by hand) instead of retried.
        parked=not reason.retried,
    )


class DlqActor:
    def __init__(self, wiring: Wiring, store: DlqStore | None = None) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        cfg = wiring.sink.dlq_config
        self.name = wiring.dlq_name()
        self.max_disk_bytes = cfg.max_disk_bytes
        self.path = str(Path(wiring.dlq_path()).resolve())
        self.store = store or LmdbDlqStore(
            self.path, map_size=cfg.map_size_bytes, max_disk_bytes=cfg.max_disk_bytes
        )
        r = cfg.reprocessing_config
        self.reprocess_enabled = r.enabled
        self.interval = r.interval
        self.metrics = Reporter(
            wiring.telemetry(), self.name, node=wiring.node, refresh=self._refresh
        )
        self.reprocessor = Reprocessor(
            self.store,
            self._resend,
            batch_size=r.batch_size,
            max_retries=r.max_retries,
            recorder=self.metrics.recorder,
            spend_every=r.interval,
        )
        self._kick: asyncio.Event | None = None
        self._retry = 0.0  # seconds before the next pass after a broken re-send
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Lock | None = None  # created on the actor's loop
        self.counts: Counter[str] = Counter()
        self._closed = False
        announce_start(wiring.namespace, "dlq", self.name)
        # The series the alerts read exist from the start, before the first event.
        self.metrics.push_now()

    def _refresh(self) -> None:
        self.metrics.recorder.set("log_capturer_dlq_depth", self.store.count())

    # ------------------------------------------------------------------ writes

    def put(self, failures: list[EntryFailure]) -> int:
        """Store ``failures`` durably; return how many. Raises ``DlqFullError``."""
        now = time.time()
        records = [failure_to_record(f, now) for f in failures]
        try:
            ids = self.store.put_batch(records)
        except Exception:
            self.metrics.recorder.add("log_capturer_errors_total", 1, {"component": "dlq"})
            raise
        for reason, n in Counter(str(r.reason) for r in records).items():
            self.counts[f"written:{reason}"] += n
            self.metrics.recorder.add("log_capturer_dlq_writes_total", n, {"reason": reason})
        self.metrics.push_now()
        return len(ids)

    # ------------------------------------------------------------------ replay

    async def _resend(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: list[list[tuple[str, bytes]]] | None = None,
    ) -> Sequence[Failure]:
        from shipper.packed import Packed

        try:
            batcher = await self.wiring.open_batcher(topic)
            out = await batcher.replay.remote(to_store(Packed.of(values)), keys, headers)
        except Exception:
            # Its Batcher is gone (its node is leaving, or it is being made anew): the
            # next pass looks the topic's Batcher up again, or has one made.
            self.wiring.forget(self.wiring.batcher_name(topic))
            raise
        return [Failure(f.value, f.key, Reason(f.reason), f.error, f.headers) for f in out.failures]

    def _ensure_loop(self) -> None:
        if self._closed:
            raise ShutdownError("the DLQ actor is closed; nothing more is reprocessed")
        if self._task is None:
            self._kick = asyncio.Event()
            self._busy = asyncio.Lock()
            self.metrics.start_periodic()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._kick is not None
        wait = self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=wait)
            self._kick.clear()
            wait = self.interval
            if self.reprocess_enabled and self.store.count():
                try:
                    summary = await self.reprocess()
                except Exception:
                    log.exception("DLQ reprocessing pass failed")
                    self._retry = 0.0
                    continue
                self._retry = next_retry(self._retry, summary.again_soon, self.interval)
                if self._retry:
                    # A re-send broke (seen when the kick after a restart lands while
                    # the Batchers and Producers are still coming back), or records
                    # failed while the breaker was closed: try again soon rather than a
                    # whole interval later (such quick passes spend no retry).
                    wait = self._retry
                    log.info("DLQ reprocessing: %d records met a re-send that broke, %d "
                             "failed again; next pass in %gs", summary.broken,
                             summary.early, wait)  # fmt: skip

    async def kick(self) -> None:
        """Start a reprocessing pass now (a breaker just closed, the actor restarted);
        a no-op once the actor is closed (a late kick while the Shipper shuts down)."""
        if self._closed:
            return
        self._ensure_loop()
        assert self._kick is not None
        self._kick.set()

    async def reprocess(
        self,
        *,
        include_parked: bool = False,
        filter: DlqFilter | None = None,
        limit: int | None = None,
    ) -> ReplaySummary:
        """One pass over the queue (oldest first); waits for a running pass first."""
        self._ensure_loop()
        assert self._busy is not None
        flt = filter or DlqFilter(parked=None if include_parked else False)
        async with self._busy:
            summary = await self.reprocessor.run(filter=flt, limit=limit)
        self.counts["replayed"] += summary.delivered
        self.metrics.push_now()
        return summary

    # ------------------------------------------------------------------ reading

    def count(self) -> int:
        return int(self.store.count())

    def has_room(self, nbytes: int = 1 << 16) -> bool:
        """Whether about ``nbytes`` more would fit in the disk budget."""
        return bool(self.store.disk_used() + nbytes <= self.max_disk_bytes)

    def stats(self) -> DlqStats:
        return self.store.stats()

    # ------------------------------------------------------------------ stop protocol

    def stop_intake(self) -> None:
        """No more reprocessing passes from now on (failures are still stored: ``put``;
        a pass under way ends on its own, its records stay in the queue until sent)."""
        self.reprocess_enabled = False

    def drain(self, seconds: float) -> int:
        """Nothing waits here: every ``put`` is committed before it answers."""
        return 0

    def park(self) -> int:
        return 0

    def close(self) -> dict[str, Any]:
        """Close the store; the figures (records written per reason, replayed)."""
        counts = dict(self.counts)
        self._close()
        return {"counts": counts}

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        try:
            # Final figures while the store is still open; then no periodic refresh
            # may read the closed store.
            self.metrics.close()
        finally:
            self.store.close()


def start_dlq(wiring: Wiring) -> DlqHandle:
    """Create (or find) the DLQ actor of ``wiring.node``, pinned to that node (its files
    are on that node's disk)."""
    handle: DlqHandle = named_actor(
        DlqActor,
        wiring.dlq_name(),
        wiring.namespace,
        64,
        max_task_retries=0,
        **wiring.placement("dlq"),
    ).remote(wiring)
    return handle
