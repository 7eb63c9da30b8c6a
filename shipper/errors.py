"""The shipper's error tree.

Every error the library raises derives from :class:`ShipperError`, so callers can
catch one type. Errors cross Ray process boundaries, so each one pickles with its
arguments intact (no custom ``__init__`` state that ``pickle`` cannot rebuild).

::

    ShipperError
    ├── ConfigError            a configuration file or dict is invalid (lists every problem)
    ├── EntryError             one log entry could not be decoded or validated
    │   └── MessageTooLargeError   an encoded entry exceeds max_message_bytes
    ├── BackpressureError      the pipeline cannot accept more entries right now
    │   └── DlqFullError           the DLQ's disk budget has no room for a batch
    ├── DlqError               the DLQ store cannot be used as asked (opened twice)
    │   └── DlqFormatError         a stored record cannot be decoded
    ├── ShutdownError          the shipper is closing or closed
    └── StartError             the node pipelines did not start (in time)

Kafka's own failures are not exceptions here: a message Kafka did not take is an
outcome with a :class:`~shipper.outcomes.Reason` (``timeout``, ``auth_failure``, ...),
and it goes to the DLQ, not up the stack.

Messages say what failed and what to do about it. They never contain secrets.
"""

from __future__ import annotations

from shipper.outcomes import Reason

__all__ = [
    "BackpressureError",
    "ConfigError",
    "DlqError",
    "DlqFormatError",
    "DlqFullError",
    "EntryError",
    "MessageTooLargeError",
    "ShipperError",
    "ShutdownError",
    "StartError",
    "brief",
]


class ShipperError(Exception):
    """Base of every error raised by the shipper."""


class ConfigError(ShipperError):
    """A configuration is invalid.

    ``problems`` holds one line per problem, each starting with the YAML path, e.g.
    ``sinks.kafka.compression: 'brotli' is not one of none, gzip, snappy, lz4, zstd``.
    """

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        super().__init__(problems, source)

    def __str__(self) -> str:
        where = f" in {self.source}" if self.source else ""
        n = len(self.problems)
        head = f"{n} configuration problem{'s' if n != 1 else ''}{where}:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class EntryError(ShipperError):
    """A log entry was rejected.

    ``reason`` is a short machine-readable tag (``serialization_error``,
    ``message_too_large``, ...); ``line`` is the 1-based input line when known.
    """

    def __init__(self, reason: Reason, detail: str, line: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.line = line
        super().__init__(reason, detail, line)

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.detail}"


class MessageTooLargeError(EntryError):
    """An encoded entry is larger than ``max_message_bytes``."""

    def __init__(self, size: int, limit: int, line: int | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            Reason.MESSAGE_TOO_LARGE,
            f"Message size exceeds max_message_bytes ({size} > {limit} bytes); raise "
            "max_message_bytes (and the topic's max.message.bytes), enable compression, "
            "or split the message",
            line,
        )
        self.args = (size, limit, line)


class BackpressureError(ShipperError):
    """The pipeline is full (queues past their limits and the DLQ's disk budget used up)."""


class DlqError(ShipperError):
    """The DLQ store cannot be used as asked (opened twice, unreadable data)."""


class DlqFormatError(DlqError):
    """A stored record cannot be decoded (unknown format version or damaged bytes)."""


class DlqFullError(BackpressureError):
    """The DLQ's disk budget (or LMDB map) has no room for a batch; nothing was written."""

    def __init__(
        self, used: int, limit: int, needed: int, where: str, limit_name: str = "max_disk_bytes"
    ) -> None:
        self.used = used
        self.limit = limit
        self.needed = needed
        self.where = where
        self.limit_name = limit_name
        super().__init__(used, limit, needed, where, limit_name)

    def __str__(self) -> str:
        return (
            f"DLQ at {self.where} is full: {self.used} bytes in use, the batch needs about "
            f"{self.needed} more and {self.limit_name} is {self.limit} bytes; nothing of the "
            "batch was written. Let the DLQ drain once Kafka is reachable (`shipper dlq "
            "replay`), remove records you do not need (`shipper dlq purge`), or raise "
            "dlq_config.max_disk_bytes (and map_size_bytes, which must stay larger)"
        )


class ShutdownError(ShipperError):
    """The shipper is closing or closed and accepts no more entries."""


class StartError(ShipperError):
    """The node pipelines did not start, or not within ``fleet.start_timeout``; the
    message names the nodes still waiting and why a start failed."""


def brief(exc: BaseException, limit: int = 300) -> str:
    """The last line of an error's text, short enough for an acknowledgement or a
    DLQ record (Ray errors carry whole remote tracebacks)."""
    lines = str(exc).strip().splitlines()
    return lines[-1][:limit] if lines else type(exc).__name__
