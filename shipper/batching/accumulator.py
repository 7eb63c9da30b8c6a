"""The flush policy of a per-topic Batcher, without Ray.

Entries arrive in *segments* (the part of one submission that goes to one topic).
The :class:`Accumulator` holds them in a bounded queue and says when to flush:
when ``batch_size`` entries are waiting, or when the oldest has waited
``batch_timeout``. A flush takes everything waiting and groups it into *chunks* of at
most ``batch_size`` entries; a chunk may hold several segments, and a segment larger
than ``batch_size`` is a chunk of its own (segments are never cut, see
:func:`plan_chunks`). Each segment carries its submission's id, so outcomes can be
credited back to the right submission.

Capacity counts entries from the moment they are offered until they are settled
(delivered, failed or handed to the DLQ), so memory stays bounded by ``capacity``
even while Kafka is slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Accumulator", "Segment", "plan_chunks"]


@dataclass(slots=True, eq=False)
class Segment:
    """Entries of one submission for one topic, already encoded."""

    values: Sequence[bytes] | Any  # a list, a shipper.packed.Packed or actors.payload.Stored
    keys: list[bytes | None] | None = None
    levels: list[str] | None = None
    submitted_at: float = 0.0  # wall-clock time the submission entered the pipeline
    arrived: float = 0.0  # monotonic time it reached the Batcher
    ident: int = 0
    replay: bool = False  # re-sent from the DLQ: failures go back to the DLQ actor, not in
    headers: Any = None  # a shipper.headers.HeaderTable, when the sink sets headers

    def __len__(self) -> int:
        return len(self.values)


def plan_chunks(segments: list[Segment], batch_size: int) -> list[list[Segment]]:
    """Group ``segments`` (in order) into chunks of at most ``batch_size`` entries.

    Segments are never cut: a segment travels to the Producer as the one buffer it
    arrived in (see :mod:`shipper.packed`), so a segment larger than ``batch_size``
    makes a chunk of its own. librdkafka still cuts what it sends into record
    batches of ``batch_size`` messages (``batch.num.messages``).
    """
    chunks: list[list[Segment]] = []
    current: list[Segment] = []
    size = 0
    for seg in segments:
        n = len(seg)
        if n == 0:
            continue
        if current and size + n > batch_size:
            chunks.append(current)
            current, size = [], 0
        current.append(seg)
        size += n
    if current:
        chunks.append(current)
    return chunks


@dataclass
class Accumulator:
    """Bounded queue + flush policy for one topic. Not thread-safe: one owner."""

    batch_size: int
    batch_timeout: float
    capacity: int
    clock: Callable[[], float] = time.monotonic
    pending: list[Segment] = field(default_factory=list)
    pending_entries: int = 0
    in_flight: int = 0

    @property
    def queued(self) -> int:
        """Entries accepted and not yet settled (waiting plus being produced)."""
        return self.pending_entries + self.in_flight

    @property
    def utilization(self) -> float:
        return self.queued / self.capacity if self.capacity else 1.0

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more entries fit. An empty queue takes any segment, so one
        segment larger than the capacity cannot wedge the pipeline."""
        return self.queued == 0 or self.queued + n <= self.capacity

    def offer(self, seg: Segment) -> None:
        seg.arrived = self.clock()
        self.pending.append(seg)
        self.pending_entries += len(seg)

    def due(self) -> bool:
        if not self.pending:
            return False
        if self.pending_entries >= self.batch_size:
            return True
        return self.clock() - self.pending[0].arrived >= self.batch_timeout

    def seconds_until_due(self) -> float | None:
        """How long until the oldest waiting entry times out (None: nothing waits)."""
        if not self.pending:
            return None
        if self.pending_entries >= self.batch_size:
            return 0.0
        return max(0.0, self.pending[0].arrived + self.batch_timeout - self.clock())

    def take(self) -> list[list[Segment]]:
        """Everything waiting, as chunks of at most ``batch_size``; moves it in flight."""
        segs, self.pending = self.pending, []
        n, self.pending_entries = self.pending_entries, 0
        self.in_flight += n
        return plan_chunks(segs, self.batch_size)

    def settle(self, n: int) -> None:
        """``n`` in-flight entries reached an outcome."""
        self.in_flight -= n
