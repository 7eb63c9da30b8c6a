"""The shipper's error tree.

Every error the library raises derives from :class:`ShipperError`, so callers can
catch one type. Errors cross Ray process boundaries, so each one pickles with its
arguments intact (no custom ``__init__`` state that ``pickle`` cannot rebuild).

::

    ShipperError
    ├── ConfigError            a configuration file or dict is invalid (lists every problem)
    ├── EntryError             one log entry could not be decoded or validated
    │   └── MessageTooLargeError   an encoded entry exceeds max_message_bytes
    ├── KafkaError             the broker or the client failed
    │   ├── ConnectionFailedError  "Failed to connect to Kafka broker"
    │   └── AuthenticationError    "SASL authentication failed"
    ├── BackpressureError      the pipeline cannot accept more entries right now
    └── ShutdownError          the shipper is closing or closed

Messages say what failed and what to do about it. They never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackpressureError",
    "ConfigError",
    "ConnectionFailedError",
    "EntryError",
    "KafkaError",
    "MessageTooLargeError",
    "ShipperError",
    "ShutdownError",
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

    def __init__(self, reason: str, detail: str, line: int | None = None) -> None:
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
            "message_too_large",
            f"Message size exceeds max_message_bytes ({size} > {limit} bytes); raise "
            "max_message_bytes (and the topic's max.message.bytes), enable compression, "
            "or split the message",
            line,
        )
        self.args = (size, limit, line)


class KafkaError(ShipperError):
    """The broker or the Kafka client reported a failure."""


class ConnectionFailedError(KafkaError):
    """No broker of a broker set could be reached."""


class AuthenticationError(KafkaError):
    """The broker refused the configured SASL credentials or TLS certificate."""


class BackpressureError(ShipperError):
    """The pipeline is full (queues past their limits and the DLQ's disk budget used up)."""


class ShutdownError(ShipperError):
    """The shipper is closing or closed and accepts no more entries."""


def brief(exc: BaseException, limit: int = 300) -> str:
    """The last line of an error's text, short enough for an acknowledgement or a
    DLQ record (Ray errors carry whole remote tracebacks)."""
    lines = str(exc).strip().splitlines()
    return lines[-1][:limit] if lines else type(exc).__name__
