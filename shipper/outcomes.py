"""What happened to the entries of a submission: the data behind an acknowledgement.

A *submission* is one batch handed to the pipeline. Its acknowledgement says, for
every entry, one of three things: delivered (acked by Kafka), handed to the DLQ
(durably stored for replay), or failed with a :class:`Reason`. Nothing is reported
as delivered that Kafka did not ack. An entry that failed and could not be handed to
the DLQ either carries a :class:`DropReason`, and the outcome counts the ones the DLQ
refused in ``dlq_refused``: callers decide on those fields, never on error texts.

These types are plain picklable data: they travel back from the actors to the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["DropReason", "EntryFailure", "Reason", "SegmentOutcome", "SubmissionResult"]


class Reason(StrEnum):
    """Why an entry was not delivered. The value is the tag users see: in
    acknowledgements, DLQ records (``shipper dlq list --reason``) and metric labels."""

    #: Kafka or the client refused the message for another reason.
    ERROR = "error"
    #: No acknowledgement within ``timeout`` (librdkafka's message.timeout.ms).
    TIMEOUT = "timeout"
    #: The broker refused the credentials or the topic's authorization.
    AUTH_FAILURE = "auth_failure"
    #: The encoded entry is larger than ``max_message_bytes``.
    MESSAGE_TOO_LARGE = "message_too_large"
    #: The input could not be decoded into an entry.
    SERIALIZATION_ERROR = "serialization_error"
    #: The entry's routing label names no valid Kafka topic.
    INVALID_TOPIC = "invalid_topic"
    #: The broker set's circuit breaker was open, or its client found no broker answering:
    #: no produce attempt was made (or the client gave up on it at once).
    CIRCUIT_OPEN = "circuit_open"
    #: Shed from a queue past ``queue_emergency_threshold``.
    EMERGENCY_BACKPRESSURE = "emergency_backpressure"
    #: The payload's owner died before a produce attempt: nothing left to send.
    PAYLOAD_LOST = "payload_lost"
    #: Still queued when the shipper stopped; parked so the next start sends it.
    SHUTDOWN = "shutdown"

    @property
    def from_broker(self) -> bool:
        """A failure that says the broker set is unwell (counts for its breaker)."""
        return self in _FROM_BROKER

    @property
    def retried(self) -> bool:
        """Whether re-sending can succeed. Reasons decided by the data itself are not
        retried: their DLQ records are parked at once for a human."""
        return self not in _DATA


# A produce that comes back circuit_open was failed by the client because no broker
# answers (shipper.kafka.reachability): a broker failure too (a Batcher diverting to the
# DLQ never produces, so its own circuit_open never reaches the breaker).
_FROM_BROKER = frozenset({Reason.ERROR, Reason.TIMEOUT, Reason.AUTH_FAILURE, Reason.CIRCUIT_OPEN})
_DATA = frozenset({Reason.MESSAGE_TOO_LARGE, Reason.SERIALIZATION_ERROR, Reason.INVALID_TOPIC})


class DropReason(StrEnum):
    """Why a failed entry is not in the DLQ either (the ``reason`` label of
    ``log_capturer_kafka_dropped_total``)."""

    #: ``dlq_config.enabled`` is false.
    DLQ_DISABLED = "dlq_disabled"
    #: ``send_on_error`` / ``send_on_timeout`` say this failure stays out of the DLQ.
    NOT_DEAD_LETTERED = "not_dead_lettered"
    #: The DLQ refused the write (its disk budget is used up, or it is unreachable).
    DLQ_FULL = "dlq_full"
    #: There is no value to keep (see :attr:`Reason.PAYLOAD_LOST`).
    PAYLOAD_LOST = "payload_lost"


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """One entry that was not delivered, and why.

    ``error`` is the human-readable detail. ``value`` is the encoded entry when there
    is one (kept so it can go to the DLQ); ``line`` the 1-based input line when known.
    ``dropped`` is set once the entry is known to be in neither Kafka nor the DLQ.
    """

    reason: Reason
    error: str
    topic: str | None = None
    value: bytes | None = None
    key: bytes | None = None
    line: int | None = None
    dropped: DropReason | None = None
    #: the message's Kafka headers, when the sink sets any (the DLQ keeps them)
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class SegmentOutcome:
    """The outcome of the entries one submission sent to one topic."""

    topic: str
    entries: int
    delivered: int = 0
    dlq: int = 0
    #: Entries the DLQ should have taken and refused (full or unreachable).
    dlq_refused: int = 0
    failures: list[EntryFailure] = field(default_factory=list)
    # Seconds from the submission's start to the last Kafka ack of this segment.
    latency: float = 0.0
    #: Of ``dlq``: how many for each reason (circuit_open, timeout, shutdown, ...).
    dlq_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SubmissionResult:
    """The acknowledgement of one submission.

    ``ok`` is true when every entry was delivered or handed to the DLQ; rejected or
    failed entries make it false, with each one listed in ``failures``.
    """

    submitted: int
    delivered_by_topic: dict[str, int] = field(default_factory=dict)
    dlq: int = 0
    dlq_refused: int = 0
    failures: list[EntryFailure] = field(default_factory=list)
    submitted_at: float = 0.0
    latency: float = 0.0
    # Entries the Router refused and the DLQ took (their reasons, for the caller).
    dead_lettered: list[EntryFailure] = field(default_factory=list)
    #: Entries the Batchers handed to the DLQ, by reason (Kafka's side).
    dlq_reasons: dict[str, int] = field(default_factory=dict)

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
        return dict(Counter(str(f.reason) for f in self.failures))

    def dlq_by_reason(self) -> dict[str, int]:
        """Every entry handed to the DLQ, by reason: the Router's rejections and what
        Kafka refused or the breaker diverted."""
        out = Counter(str(f.reason) for f in self.dead_lettered)
        out.update(self.dlq_reasons)
        return dict(out)

    def add_segment(self, seg: SegmentOutcome) -> None:
        self.delivered_by_topic[seg.topic] = (
            self.delivered_by_topic.get(seg.topic, 0) + seg.delivered
        )
        self.dlq += seg.dlq
        for reason, n in seg.dlq_reasons.items():
            self.dlq_reasons[reason] = self.dlq_reasons.get(reason, 0) + n
        self.dlq_refused += seg.dlq_refused
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
