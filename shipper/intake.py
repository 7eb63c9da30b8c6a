"""What the Router does to a submission, without Ray.

A submission arrives either as raw input lines (JSON lines or plain text, from files
and stdin) or as Python objects (from the API). :class:`Intake` decodes and
validates each entry, picks its topic, encodes it once as the Kafka value, enforces
``max_message_bytes``, extracts the partition key, and groups the survivors by topic.
Every entry that cannot go on is returned as an :class:`EntryFailure` with its
reason, so it can be counted and handed to the DLQ path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipper.config import KafkaSinkConfig
from shipper.entries import LogEntry, decode_lines, encode_entries, from_objects
from shipper.errors import EntryError, MessageTooLargeError
from shipper.outcomes import EntryFailure
from shipper.partitioning import make_partitioner
from shipper.routing import TopicRouter

__all__ = ["Intake", "Prepared", "TopicSegment"]


@dataclass(slots=True)
class TopicSegment:
    """The encoded entries of one submission that go to one topic."""

    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] | None = None
    levels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class Prepared:
    """A submission after the Router: per-topic segments plus what was rejected."""

    submitted: int
    segments: dict[str, TopicSegment]
    rejected: list[EntryFailure]


def _failure(err: EntryError, value: bytes | None = None, topic: str | None = None) -> EntryFailure:
    return EntryFailure(err.reason, str(err), topic=topic, value=value, line=err.line)


class Intake:
    def __init__(self, sink: KafkaSinkConfig) -> None:
        r = sink.routing
        self.router = TopicRouter(
            sink.topic,
            routing_enabled=r.enabled,
            high_topic=r.high_priority_topic,
            low_topic=r.low_priority_topic,
            high_levels=r.high_priority_levels,
            low_levels=r.low_priority_levels,
            topic_label=r.topic_label,
        )
        self.max_bytes = sink.max_message_bytes
        part = sink.partitioning
        # Keys are extracted here, next to the decoded entry; partitions are assigned
        # by the Batcher, which knows the topic's partition count.
        self.keyer = (
            make_partitioner(part.strategy, part.key_field)
            if part.enabled and part.strategy == "hash" and part.key_field
            else None
        )

    def prepare_lines(self, lines: bytes | Iterable[bytes | str], first_line: int = 1) -> Prepared:
        if isinstance(lines, bytes | bytearray):
            lines = bytes(lines).split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
        if not isinstance(lines, list):
            lines = list(lines)
        entries, errors = decode_lines(lines, first_line)

        def raw(err: EntryError) -> bytes | None:
            # Keep the bad input itself, so the DLQ holds what was refused.
            if err.line is None or not 0 <= err.line - first_line < len(lines):
                return None
            item = lines[err.line - first_line]
            return item.encode("utf-8", "surrogateescape") if isinstance(item, str) else bytes(item)

        return self._prepare(entries, errors, raw)

    def prepare_objects(self, objs: Iterable[LogEntry | Mapping[str, Any] | str]) -> Prepared:
        objs = list(objs)
        entries, errors = from_objects(objs)

        def raw(err: EntryError) -> bytes | None:
            if err.line is None or not 0 < err.line <= len(objs):
                return None
            return repr(objs[err.line - 1]).encode("utf-8", "replace")

        return self._prepare(entries, errors, raw)

    def _prepare(
        self,
        entries: list[LogEntry],
        errors: list[EntryError],
        raw: Callable[[EntryError], bytes | None],
    ) -> Prepared:
        rejected = [_failure(e, raw(e)) for e in errors]
        segments: dict[str, TopicSegment] = {}
        routed = self.router.route(entries)
        limit = self.max_bytes
        for topic, idx in routed.items():
            group = entries if len(idx) == len(entries) else [entries[i] for i in idx]
            values = encode_entries(group)
            # Whole-batch work on the fast path; the per-entry loop only runs when an
            # entry is too large (rare).
            if values and max(map(len, values)) > limit:
                kept = [i for i, v in enumerate(values) if len(v) <= limit]
                rejected.extend(
                    _failure(MessageTooLargeError(len(v), limit), v, topic)
                    for v in values
                    if len(v) > limit
                )
                group = [group[i] for i in kept]
                values = [values[i] for i in kept]
            if not values:
                continue
            segments[topic] = TopicSegment(
                values=values,
                keys=self.keyer.keys_for(group) if self.keyer is not None else None,
                levels=[e.level for e in group],
            )
        rejected.extend(_failure(e) for e in self.router.rejected)
        self.router.rejected = []
        return Prepared(len(entries) + len(errors), segments, rejected)
