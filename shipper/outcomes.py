"""What happened to the entries of a submission: the data behind an acknowledgement.

A *submission* is one batch handed to the pipeline. Its acknowledgement says, for
every entry, one of three things: delivered (acked by Kafka), handed to the DLQ
(durably stored for replay), or failed/rejected with a reason. Nothing is reported
as delivered that Kafka did not ack.

These types are plain picklable data: they travel back from the actors to the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["EntryFailure", "SegmentOutcome", "SubmissionResult"]


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """One entry that was not delivered, and why.

    ``reason`` is a tag (``serialization_error``, ``message_too_large``, ``timeout``,
    ``auth_failure``, ``error``, ...); ``error`` is the human-readable detail.
    ``value`` is the encoded entry when there is one (kept so it can go to the DLQ).
    """

    reason: str
    error: str
    topic: str | None = None
    value: bytes | None = None
    key: bytes | None = None
    line: int | None = None


@dataclass(slots=True)
class SegmentOutcome:
    """The outcome of the entries one submission sent to one topic."""

    topic: str
    entries: int
    delivered: int = 0
    dlq: int = 0
    failures: list[EntryFailure] = field(default_factory=list)
    # Seconds from the submission's start to the last Kafka ack of this segment.
    latency: float = 0.0

    def merge(self, other: SegmentOutcome) -> None:
        self.entries += other.entries
        self.delivered += other.delivered
        self.dlq += other.dlq
        self.failures.extend(other.failures)
        self.latency = max(self.latency, other.latency)


@dataclass(slots=True)
class SubmissionResult:
    """The acknowledgement of one submission.

    ``ok`` is true when every entry was delivered or handed to the DLQ; rejected or
    failed entries make it false, with each one listed in ``failures``.
    """

    submitted: int
    delivered_by_topic: dict[str, int] = field(default_factory=dict)
    dlq: int = 0
    failures: list[EntryFailure] = field(default_factory=list)
    submitted_at: float = 0.0
    latency: float = 0.0
    # Entries the Router refused and the DLQ took (their reasons, for the caller).
    dead_lettered: list[EntryFailure] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(self.delivered_by_topic.values())

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures and self.delivered + self.dlq == self.submitted

    def failed_by_reason(self) -> dict[str, int]:
        return dict(Counter(f.reason for f in self.failures))

    def dlq_by_reason(self) -> dict[str, int]:
        """Reasons of the Router's rejections that went to the DLQ (Kafka-side ones are
        counted in ``dlq`` only)."""
        return dict(Counter(f.reason for f in self.dead_lettered))

    def add_segment(self, seg: SegmentOutcome) -> None:
        self.delivered_by_topic[seg.topic] = (
            self.delivered_by_topic.get(seg.topic, 0) + seg.delivered
        )
        self.dlq += seg.dlq
        self.failures.extend(seg.failures)
        self.latency = max(self.latency, seg.latency)

    def summary(self) -> str:
        parts = [f"{self.delivered}/{self.submitted} delivered"]
        if self.dlq:
            parts.append(f"{self.dlq} to the DLQ")
        if self.failures:
            reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.failed_by_reason().items()))
            parts.append(f"{self.failed} failed ({reasons})")
        return "; ".join(parts)
