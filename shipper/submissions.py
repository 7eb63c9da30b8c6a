"""The driver's side of submitting: in-flight budget, acknowledgements, run figures.

:class:`SubmissionTracker` is what the ``Shipper`` consults before each submission
(may it go now, or must it wait for the oldest to settle?) and feeds with each
acknowledgement. It holds no Ray objects of its own: ``key`` is whatever identifies a
submission to the caller (an ``ObjectRef`` in the driver, an int in the unit tests).

The budget has two limits: at most ``max_submissions`` in flight, and at most
``entry_budget`` entries in flight, except that one submission always goes (so a
submission larger than the budget cannot wedge the caller). Keeping the driver's own
entries under the Batchers' warning band means a small ``queue_size`` slows
``submit()`` down instead of filling the queue up to where it sheds to the DLQ.

The calls' numbers are the sender's :class:`shipper.ordering.OrderCounter`, held by
its :class:`actors.client.RouterClient`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shipper.outcomes import EntryFailure, Reason, SubmissionResult

__all__ = ["CloseReport", "RunStats", "SubmissionTracker", "weighted_percentile"]

K = TypeVar("K", bound=Hashable)


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Weighted percentile of (value, weight) pairs: each value counts ``weight`` times
    (0.0 when there are none)."""
    if not pairs:
        return 0.0
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    target = q * total
    acc = 0
    for v, w in pairs:
        acc += w
        if acc >= target:
            return v
    return pairs[-1][0]


@dataclass
class RunStats:
    """Per-run figures of a Shipper (only settled submissions are counted)."""

    entries_in: int = 0
    delivered_by_topic: Counter[str] = field(default_factory=Counter)
    dlq: int = 0
    #: Of ``dlq``: how many for each reason (the Router's rejections, what Kafka refused,
    #: what the breaker diverted, what was parked at shutdown).
    dlq_by_reason: Counter[str] = field(default_factory=Counter)
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    submissions: int = 0
    #: Entries sent again because the pipeline that had them died (possible duplicates).
    resent: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _latencies: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def delivered(self) -> int:
        return sum(self.delivered_by_topic.values())

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Delivered entries per second over the run."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, q: float) -> float:
        """Seconds from submit to the last Kafka ack of a submission, ``q`` in [0, 1]."""
        return weighted_percentile(self._latencies, q)

    def record(self, r: SubmissionResult) -> None:
        self.submissions += 1
        self.entries_in += r.submitted
        self.delivered_by_topic.update(r.delivered_by_topic)
        self.dlq += r.dlq
        self.dlq_by_reason.update(r.dlq_by_reason())
        self.failed_by_reason.update(str(f.reason) for f in r.failures)
        if r.submitted:
            self._latencies.append((r.latency, r.submitted))

    def merge(self, other: RunStats) -> None:
        """Add another sender's figures (a source's) to these."""
        self.submissions += other.submissions
        self.entries_in += other.entries_in
        self.delivered_by_topic.update(other.delivered_by_topic)
        self.dlq += other.dlq
        self.dlq_by_reason.update(other.dlq_by_reason)
        self.failed_by_reason.update(other.failed_by_reason)
        self.resent += other.resent
        self._latencies.extend(other._latencies)

    def brief(self) -> str:
        """One line: in, delivered, to the DLQ (by reason), failed."""
        dlq = f"{self.dlq:,} to the DLQ"
        if self.dlq_by_reason:
            dlq += (
                " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(self.dlq_by_reason.items())) + ")"
            )
        return (
            f"{self.entries_in:,} in, {self.delivered:,} delivered, {dlq}, {self.failed:,} failed"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries_in": self.entries_in,
            "delivered": self.delivered,
            "delivered_by_topic": dict(self.delivered_by_topic),
            "dlq": self.dlq,
            "dlq_by_reason": dict(self.dlq_by_reason),
            "failed": self.failed,
            "failed_by_reason": dict(self.failed_by_reason),
            "submissions": self.submissions,
            "resent": self.resent,
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1),
            "latency_p50_ms": round(self.latency(0.50) * 1000, 2),
            "latency_p95_ms": round(self.latency(0.95) * 1000, 2),
            "latency_p99_ms": round(self.latency(0.99) * 1000, 2),
        }

    def table(self) -> str:
        rows = [("entries in", f"{self.entries_in:,}"), ("delivered", f"{self.delivered:,}")]
        for topic, n in sorted(self.delivered_by_topic.items()):
            rows.append((f"  to {topic}", f"{n:,}"))
        rows.append(("to the DLQ", f"{self.dlq:,}"))
        for reason, n in sorted(self.dlq_by_reason.items()):
            rows.append((f"  {reason}", f"{n:,}"))
        rows.append(("failed", f"{self.failed:,}"))
        for reason, n in sorted(self.failed_by_reason.items()):
            rows.append((f"  {reason}", f"{n:,}"))
        if self.resent:
            rows.append(("sent again (node lost)", f"{self.resent:,}"))
        rows += [
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("rate", f"{self.rate:,.0f} entries/s"),
            (
                "ack latency p50/p95/p99",
                f"{self.latency(0.5) * 1000:.1f} / {self.latency(0.95) * 1000:.1f} / "
                f"{self.latency(0.99) * 1000:.1f} ms",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass
class CloseReport:
    """What ``Shipper.close`` leaves behind: whether everything settled, and the run."""

    drained: bool
    in_flight_submissions: int
    in_flight_entries: int
    stats: RunStats
    #: Entries still queued after the drain timeout, parked in the DLQ (``shutdown``).
    parked: int = 0
    #: What each kind of source did (``files``, ``http``); ``stats`` counts them too.
    sources: dict[str, RunStats] = field(default_factory=dict)
    #: Actors that did not answer a step of the stop (each a line naming it): what
    #: they held is not known to be in Kafka or the DLQ, so the close did not drain.
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.drained:
            return "closed: every submission has an outcome"
        if not self.in_flight_submissions and self.problems:
            return "closed, but " + "; ".join(self.problems)
        return (
            f"closed with {self.in_flight_submissions} submissions "
            f"({self.in_flight_entries} entries) still in flight after the drain timeout"
        ) + ("; " + "; ".join(self.problems) if self.problems else "")


class SubmissionTracker(Generic[K]):
    """In-flight submissions of one sender, and the figures of its run.

    ``dlq_full`` turns true when an acknowledgement reports entries the DLQ refused;
    the caller then accepts nothing more until the DLQ has room (and clears it).
    """

    def __init__(
        self,
        max_submissions: int,
        entry_budget: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_submissions < 1 or entry_budget < 1:
            raise ValueError("max_submissions and entry_budget must be at least 1")
        self.max_submissions = max_submissions
        self.entry_budget = entry_budget
        self.stats = RunStats(started=clock())
        self._clock = clock
        self._sizes: dict[K, int] = {}
        self._entries = 0
        self.dlq_full = False

    @property
    def in_flight(self) -> int:
        return len(self._sizes)

    @property
    def in_flight_entries(self) -> int:
        return self._entries

    def keys(self) -> list[K]:
        """In-flight submissions, oldest first."""
        return list(self._sizes)

    def has_room(self, size: int) -> bool:
        """Whether a submission of ``size`` entries may go now."""
        if not self._sizes:
            return True
        return len(self._sizes) < self.max_submissions and self._entries + size <= self.entry_budget

    def add(self, key: K, size: int) -> None:
        self._sizes[key] = size
        self._entries += size

    def settle(self, key: K, result: SubmissionResult) -> bool:
        """Record ``key``'s acknowledgement; False if it was not in flight (already
        settled). Returns True when it was counted."""
        size = self._sizes.pop(key, None)
        if size is None:
            return False
        self._entries -= size
        self.stats.record(result)
        if result.dlq_refused:
            self.dlq_full = True
        return True

    def finish(self) -> None:
        self.stats.finished = self._clock()

    def report(self, parked: int = 0, problems: list[str] | None = None) -> CloseReport:
        return CloseReport(
            drained=not self._sizes and not problems,
            problems=list(problems or []),
            in_flight_submissions=len(self._sizes),
            in_flight_entries=self._entries,
            stats=self.stats,
            parked=parked,
        )


def lost_submission(size: int, error: str) -> SubmissionResult:
    """The acknowledgement of a submission whose receiver died with it: every entry
    reported failed, none dropped silently."""
    return SubmissionResult(submitted=size, failures=[EntryFailure(Reason.ERROR, error)] * size)
