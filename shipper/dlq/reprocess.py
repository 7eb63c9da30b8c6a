"""The one reprocessor: paced replay of DLQ records, for the DLQ actor and the CLI.

The DLQ actor runs it every ``reprocessing_config.interval`` (and when a breaker
closes), re-sending through the node's Batchers; ``shipper dlq replay`` runs it by
hand with a producer of its own. Both take the same steps and follow the same rules:

- Records are read oldest first, in *steps*. The first step holds
  ``reprocessing_config.batch_size`` records and each clean step doubles the next,
  up to :data:`MAX_STEP`, so a broker that has just come back gets a trickle first,
  not the whole backlog. Once the ramp is at full size, up to :data:`WINDOW` steps
  are in flight at once. A step with a failure halves the size and closes the window.
- A record is matched to its outcome by value and key (equal records are
  interchangeable). Delivered records are deleted. A record that failed gets
  ``attempts`` + 1 and the error, and is parked at ``max_retries``; with
  ``spend_every`` (the DLQ actor: its ``interval``) a record spends at most one retry
  per that time, so the quick passes after a failed one (1 s, 2 s, 4 s ...) try
  again without using up ``max_retries``. A record that met
  an open circuit breaker was not tried, and one whose re-send call broke (the actor
  or client died) may or may not have arrived: both stay as they are and spend no
  retry.
- A step in which nothing was delivered and something failed for a reason other than
  the data's own (``message_too_large``) means Kafka is refusing: the pass stops
  there, unless ``keep_going``, and the rest waits for the next pass.

The pass either pages through a filter (the actor: everything active, oldest first)
or through a list of ids fixed when the operator started it (the CLI: records that
arrive meanwhile are not touched, records gone meanwhile are counted as ``gone``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from shipper.dlq.codec import DlqFilter, DlqRecord
from shipper.dlq.store import DlqStore
from shipper.kafka.client import Failure
from shipper.outcomes import Reason
from shipper.telemetry import MetricsRecorder

__all__ = [
    "MAX_STEP",
    "NO_TOPIC",
    "WINDOW",
    "ReplaySummary",
    "Reprocessor",
    "Resend",
    "next_retry",
]

#: Largest step, in records.
MAX_STEP = 10_000
#: Steps in flight at once once the ramp has reached :data:`MAX_STEP`.
WINDOW = 4

NO_TOPIC = "the record has no topic, so it cannot be replayed"

# Outcomes that say nobody tried Kafka: an open breaker, a pipeline that is stopping.
_NOT_TRIED = frozenset({Reason.CIRCUIT_OPEN, Reason.SHUTDOWN})

#: Re-sends ``values`` (with ``keys`` and, when any record has them, each one's
#: headers) to ``topic``; returns the ones that failed.
Resend = Callable[
    [str, list[bytes], list[bytes | None], list[list[tuple[str, bytes]]] | None],
    Awaitable[Sequence[Failure]],
]


@dataclass
class ReplaySummary:
    """What a pass did; ``errors`` counts the failed records per error text."""

    selected: int = 0  # records read (or ids given)
    delivered: int = 0
    failed: int = 0  # failed again: attempts + 1
    parked: int = 0  # of those, the ones now out of retries
    untouched: int = 0  # met an open breaker: not tried, no retry spent
    #: of ``untouched``, those whose re-send call itself broke (a Batcher or Producer
    #: restarting): worth another pass soon, unlike an open breaker
    broken: int = 0
    #: failed again within ``spend_every`` of their last failure: kept as they were, no
    #: retry spent (a record spends at most one retry per interval); another pass soon
    early: int = 0
    gone: int = 0  # given by id, removed by someone else before their turn
    not_tried: int = 0  # left as they were because the pass stopped early
    stopped_early: bool = False
    with_headers: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.not_tried == 0 and self.untouched == 0 and not self.early

    @property
    def again_soon(self) -> bool:
        """Whether the next pass should come soon rather than a whole interval later:
        a re-send broke, or records failed while Kafka was being tried (the breaker
        was closed) and spent no retry for it."""
        return bool(self.broken or self.early)

    def as_dict(self) -> dict[str, int]:
        return {
            "selected": self.selected,
            "delivered": self.delivered,
            "failed": self.failed,
            "parked": self.parked,
            "untouched": self.untouched,
            "gone": self.gone,
            "not_tried": self.not_tried,
        }


@dataclass
class _Step:
    delivered: int = 0
    failed: int = 0
    parked: int = 0
    untouched: int = 0
    broken: int = 0
    early: int = 0
    data_only: bool = True  # every failure was decided by the data itself
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def refused(self) -> bool:
        """Kafka took nothing and not because of the data: stop the pass."""
        return self.delivered == 0 and (
            self.untouched > 0 or self.early > 0 or (self.failed > 0 and not self.data_only)
        )


#: The wait before the pass that follows one in which a re-send broke (then doubled).
RETRY_FIRST_SECONDS = 1.0


def next_retry(previous: float, soon: bool, interval: float) -> float:
    """The wait before the next scheduled pass: 0 (the normal ``interval``) unless the
    last pass asks for another one soon (:attr:`ReplaySummary.again_soon`); then 1 s,
    doubled after each such pass in a row, up to ``interval``."""
    if not soon:
        return 0.0
    return min(interval, max(RETRY_FIRST_SECONDS, previous * 2))


class Reprocessor:
    """Replays a :class:`DlqStore` through ``resend`` (see the module docstring).

    ``recorder`` (optional) receives ``log_capturer_dlq_replays_total``. One pass at
    a time: :meth:`run` is not meant to be called concurrently on one instance.
    """

    def __init__(
        self,
        store: DlqStore,
        resend: Resend,
        *,
        batch_size: int,
        max_retries: int,
        max_step: int = MAX_STEP,
        window: int = WINDOW,
        recorder: MetricsRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        spend_every: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if batch_size < 1 or max_step < 1 or window < 1:
            raise ValueError("batch_size, max_step and window must be at least 1")
        #: A record spends a retry only when its last failure is at least this old
        #: (0: every failure spends one, as ``shipper dlq replay`` does).
        self.spend_every = spend_every
        self.wall = wall
        self.store = store
        self.resend = resend
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.max_step = max(max_step, batch_size)
        self.window = window
        self.recorder = recorder
        self.clock = clock

    async def run(
        self,
        *,
        filter: DlqFilter | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
        keep_going: bool = False,
        on_progress: Callable[[ReplaySummary], None] | None = None,
    ) -> ReplaySummary:
        """One pass. ``filter`` (default: active records) pages oldest first;
        ``ids`` replays exactly those records (``filter.parked`` still applies).
        ``limit`` bounds the records read; ``on_progress`` sees the summary after
        every step."""
        flt = filter if filter is not None else DlqFilter(parked=False)
        summary = ReplaySummary(selected=len(ids) if ids is not None else 0)
        step = self.batch_size
        tasks: set[asyncio.Task[_Step]] = set()
        stop = False
        next_page = self._pager(flt, ids, limit, summary)

        def settle(done: asyncio.Task[_Step]) -> None:
            nonlocal step, stop
            r = done.result()
            summary.delivered += r.delivered
            summary.failed += r.failed
            summary.parked += r.parked
            summary.untouched += r.untouched
            summary.broken += r.broken
            summary.early += r.early
            summary.errors.update(r.errors)
            if r.failed or r.untouched or r.early:
                step = max(self.batch_size, step // 2)
            else:
                step = min(self.max_step, step * 2)
            if r.refused and not keep_going:
                stop = True
            if on_progress is not None:
                on_progress(summary)

        try:
            while not stop:
                # Full speed only once the ramp is at its top and every step is clean.
                allowed = self.window if step >= self.max_step else 1
                while tasks and len(tasks) >= allowed:
                    finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for t in finished:
                        tasks.discard(t)
                        settle(t)
                    allowed = self.window if step >= self.max_step else 1
                if stop:
                    break
                records = next_page(step)
                if records is None:
                    break
                if records:
                    tasks.add(asyncio.get_running_loop().create_task(self._step(records)))
            while tasks:
                finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    tasks.discard(t)
                    settle(t)
        finally:
            for t in tasks:
                t.cancel()
        if stop:
            summary.stopped_early = True
            if ids is not None:
                left = summary.selected - summary.gone
                summary.not_tried = max(
                    0, left - summary.delivered - summary.failed - summary.untouched
                )
        return summary

    def _pager(
        self,
        flt: DlqFilter,
        ids: Sequence[int] | None,
        limit: int | None,
        summary: ReplaySummary,
    ) -> Callable[[int], list[DlqRecord] | None]:
        """A function: step size in, next page out (None: nothing left to read)."""
        state = {"read": 0, "after": flt.after, "pos": 0}

        def next_page(size: int) -> list[DlqRecord] | None:
            if limit is not None:
                size = min(size, limit - state["read"])
            if size <= 0:
                return None
            if ids is not None:
                chunk = ids[state["pos"] : state["pos"] + size]
                if not chunk:
                    return None
                state["pos"] += len(chunk)
                state["read"] += len(chunk)
                records = self.store.select(dataclasses.replace(flt, ids=chunk), len(chunk))
                summary.gone += len(chunk) - len(records)
            else:
                records = self.store.select(dataclasses.replace(flt, after=state["after"]), size)
                if not records:
                    return None
                state["after"] = records[-1].id
                state["read"] += len(records)
                summary.selected += len(records)
            summary.with_headers += sum(1 for r in records if r.headers)
            return records

        return next_page

    async def _step(self, records: list[DlqRecord]) -> _Step:
        out = _Step()
        by_topic: dict[str, list[DlqRecord]] = {}
        failed: dict[str, list[DlqRecord]] = {}
        for r in records:
            if r.topic:
                by_topic.setdefault(r.topic, []).append(r)
            else:
                failed.setdefault(NO_TOPIC, []).append(r)
                out.data_only = False
        topics = list(by_topic)
        answers = await asyncio.gather(
            *(
                self.resend(
                    t,
                    [r.value for r in by_topic[t]],
                    [r.key for r in by_topic[t]],
                    _headers(by_topic[t]),
                )
                for t in topics
            ),
            return_exceptions=True,
        )
        delivered: list[DlqRecord] = []
        now = self.wall()
        for topic, answer in zip(topics, answers, strict=True):
            recs = by_topic[topic]
            if isinstance(answer, BaseException):
                # The re-send itself broke (the Batcher or the client died): nobody
                # knows what reached Kafka. The records stay as they are, without a
                # retry spent, and the pass stops; the next pass sends them again.
                out.untouched += len(recs)
                out.broken += len(recs)
                out.errors[f"re-send failed: {answer}"] += len(recs)
                continue
            pending: dict[tuple[bytes, bytes | None], list[Failure]] = {}
            for f in answer:
                pending.setdefault((bytes(f.value or b""), f.key), []).append(f)
            for r in recs:
                fails = pending.get((r.value, r.key))
                if not fails:
                    delivered.append(r)
                    continue
                f = fails.pop()
                if f.reason in _NOT_TRIED:
                    out.untouched += 1
                    continue
                if f.reason.retried:
                    out.data_only = False
                    if self.spend_every and now - r.last_failure < self.spend_every:
                        out.early += 1  # tried again soon after its last failure: free
                        out.errors[f.error] += 1
                        continue
                failed.setdefault(f.error, []).append(r)
        if delivered:
            self.store.delete([r.id for r in delivered])
            out.delivered = len(delivered)
            self._count(delivered, "delivered")
        for error, recs in failed.items():
            marked = self.store.mark_failed([r.id for r in recs], error, self.max_retries)
            out.failed += len(recs)
            out.parked += len(marked.parked)
            out.errors[error] += len(recs)
            given_up = set(marked.parked)
            self._count([r for r in recs if r.id in given_up], "given_up")
            self._count([r for r in recs if r.id not in given_up], "requeued")
        return out

    def _count(self, records: list[DlqRecord], outcome: str) -> None:
        if self.recorder is None or not records:
            return
        for reason, n in Counter(str(r.reason) for r in records).items():
            self.recorder.add(
                "log_capturer_dlq_replays_total", n, {"reason": reason, "outcome": outcome}
            )


def _headers(records: list[DlqRecord]) -> list[list[tuple[str, bytes]]] | None:
    """The records' headers for a re-send; None when none has any (the batch path)."""
    if not any(r.headers for r in records):
        return None
    return [[(k, bytes(v)) for k, v in r.headers] for r in records]
