"""DLQ actor, one per node: owns the node's LMDB dead-letter queue and replays it.

``put`` stores failed entries durably (one LMDB transaction per call) and returns
only after the commit, so an entry counted as "handed to the DLQ" survives a crash.
When the disk budget is used up, ``put`` raises :class:`~shipper.dlq.DlqFullError`
and the caller keeps reporting those entries as failed: nothing is dropped silently.

Reprocessing (``dlq_config.reprocessing_config``) runs every ``interval`` and at once
when :meth:`kick` is called (the breaker supervisor does that when a breaker closes).
It pages through the active records oldest first, re-sends them through the Batchers
of their topics (their values are already encoded), deletes what Kafka acked and
marks the rest as failed again; a record that has failed ``max_retries`` times is
parked and kept. The pace starts at ``batch_size`` records per step and doubles after
each clean step (up to ``max_step``), halving on failure, so a broker that has just
come back is not flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import ray

from shipper.dlq import DlqFilter, DlqRecord, LmdbDlqStore
from shipper.errors import ShutdownError
from shipper.outcomes import EntryFailure, Reason

from ._options import named_actor
from .telemetry import Reporter

__all__ = ["DlqActor", "dlq_name", "failure_to_record", "get_dlq"]

log = logging.getLogger("shipper.dlq")

def dlq_name(node_id: str) -> str:
    return f"dlq:{node_id[:16]}"


def failure_to_record(f: EntryFailure, now: float) -> DlqRecord:
    return DlqRecord(
        id=0,
        value=f.value if f.value is not None else b"",
        topic=f.topic or "",
        key=f.key,
        headers=[],
        reason=Reason(f.reason),
        error=f.error,
        attempts=0,
        first_failure=now,
        last_failure=now,
        parked=not Reason(f.reason).retried,
    )


class DlqActor:
    def __init__(
        self,
        path: str,
        map_size: int,
        max_disk_bytes: int,
        reprocess_enabled: bool = True,
        interval: float = 300.0,
        max_retries: int = 3,
        batch_size: int = 50,
        max_step: int = 5000,
        store: Any = None,
        telemetry: Any = None,
    ) -> None:
        self.store = store or LmdbDlqStore(path, map_size=map_size, max_disk_bytes=max_disk_bytes)
        self.max_disk_bytes = max_disk_bytes
        self.reprocess_enabled = reprocess_enabled
        self.interval = interval
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.max_step = max_step
        self.resend: Callable[[str, list[bytes], list[bytes | None]], Any] | None = None
        self._batchers: Any = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Lock | None = None  # created on the actor's loop
        self.counts: dict[str, int] = defaultdict(int)
        self.metrics = Reporter(telemetry, f"dlq:{path}", refresh=self._refresh)
        self._closed = False

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
        for reason, n in Counter(r.reason.value for r in records).items():
            self.counts[f"written:{reason}"] += n
            self.metrics.recorder.add("log_capturer_dlq_writes_total", n, {"reason": reason})
        self.metrics.push_now()
        return len(ids)

    # ------------------------------------------------------------------ replay

    def attach(self, router: Any) -> None:
        """The Router whose Batchers replays go through (set by the Shipper)."""
        self._batchers = router

    def _ensure_loop(self) -> None:
        if self._closed:
            raise ShutdownError("the DLQ actor is closed; nothing more is reprocessed")
        if self._task is None:
            self._kick = asyncio.Event()
            self._busy = asyncio.Lock()
            self.metrics.start_periodic()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def start(self) -> None:
        if not self._closed:
            self._ensure_loop()

    async def _loop(self) -> None:
        assert self._kick is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self.interval)
            self._kick.clear()
            if self.reprocess_enabled and self._batchers is not None:
                try:
                    await self.reprocess()
                except Exception:
                    log.exception("DLQ reprocessing round failed")

    async def kick(self) -> None:
        """Start a reprocessing round now (e.g. a breaker just closed); a no-op once
        the actor is closed (a late kick while the Shipper shuts down)."""
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
        on_progress: Any = None,
    ) -> dict[str, int]:
        """One pass over the queue (oldest first). Returns delivered/failed/parked counts."""
        self._ensure_loop()
        assert self._busy is not None
        totals = {"sent": 0, "delivered": 0, "failed": 0, "parked": 0}
        async with self._busy:
            step = self.batch_size
            after = 0
            while limit is None or totals["sent"] < limit:
                n = step if limit is None else min(step, limit - totals["sent"])
                f = filter or DlqFilter(parked=None if include_parked else False)
                flt = dataclasses.replace(f, after=after)
                records = self.store.select(flt, n)
                if not records:
                    break
                after = records[-1].id
                delivered, failed, parked = await self._resend(records)
                totals["sent"] += len(records)
                totals["delivered"] += delivered
                totals["failed"] += failed
                totals["parked"] += parked
                if on_progress is not None:
                    on_progress.remote(dict(totals))
                # Additive pacing: grow while clean, back off when Kafka refuses.
                step = (
                    min(self.max_step, step * 2) if failed == 0 else max(self.batch_size, step // 2)
                )
                if failed and delivered == 0:
                    break  # Kafka still refuses; the next round (or a kick) tries again
        self.counts["replayed"] += totals["delivered"]
        return totals

    async def _resend(self, records: list[DlqRecord]) -> tuple[int, int, int]:
        assert self._batchers is not None
        by_topic: dict[str, list[DlqRecord]] = defaultdict(list)
        for r in records:
            by_topic[r.topic].append(r)
        topics = list(by_topic)
        outs = await asyncio.gather(
            *(
                self._batchers.replay.remote(
                    t, [r.value for r in by_topic[t]], [r.key for r in by_topic[t]]
                )
                for t in topics
            ),
            return_exceptions=True,
        )
        delivered_ids: list[int] = []
        untouched = 0
        failed: dict[str, list[int]] = defaultdict(list)
        for topic, out in zip(topics, outs, strict=True):
            recs = by_topic[topic]
            if isinstance(out, BaseException):
                failed[f"replay failed: {out}"].extend(r.id for r in recs)
                continue
            # Failed values come back with their error; match them to records by value
            # (a value that occurs twice in the queue is matched to its records in order).
            fails: dict[bytes, list[str]] = defaultdict(list)
            for fl in out.failures:
                # A breaker that is open again means nobody tried Kafka: no retry spent.
                fails[fl.value or b""].append("" if fl.reason == "circuit_open" else fl.error)
            for r in recs:
                errs = fails.get(r.value)
                if errs:
                    error = errs.pop()
                    if error:
                        failed[error].append(r.id)
                    else:
                        untouched += 1
                else:
                    delivered_ids.append(r.id)
        rec = self.metrics.recorder
        reason_of = {r.id: r.reason.value for r in records}
        if delivered_ids:
            self.store.delete(delivered_ids)
            for reason, n in Counter(reason_of[i] for i in delivered_ids).items():
                rec.add(
                    "log_capturer_dlq_replays_total", n, {"reason": reason, "outcome": "delivered"}
                )
        parked = 0
        n_failed = 0
        for error, ids in failed.items():
            res = self.store.mark_failed(ids, error, self.max_retries)
            parked += len(res.parked)
            for outcome, group in (("requeued", res.retried), ("given_up", res.parked)):
                for reason, n in Counter(reason_of[i] for i in group).items():
                    rec.add(
                        "log_capturer_dlq_replays_total", n, {"reason": reason, "outcome": outcome}
                    )
            n_failed += len(ids)
        return len(delivered_ids), n_failed + untouched, parked

    # ------------------------------------------------------------------ reading

    def count(self) -> int:
        return int(self.store.count())

    def has_room(self, nbytes: int = 1 << 16) -> bool:
        """Whether about ``nbytes`` more would fit in the disk budget."""
        return bool(self.store.disk_used() + nbytes <= self.max_disk_bytes)

    def stats(self) -> Any:
        return self.store.stats()

    def figures(self) -> dict[str, int]:
        return {"depth": int(self.store.count()), **self.counts}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        try:
            # Final figures while the store is still open; then no periodic refresh
            # may read the closed store (it used to log a ShutdownError traceback per
            # second).
            self.metrics.close()
        finally:
            self.store.close()


def get_dlq(namespace: str, options: dict[str, Any]) -> Any:
    """The DLQ actor of the calling node (created on first use, pinned to the node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return named_actor(
        DlqActor,
        dlq_name(node),
        namespace,
        64,
        max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(**options)
