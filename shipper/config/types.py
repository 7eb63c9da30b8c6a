"""Constrained value types shared by the config sections.

Durations ("100ms", "5s", "5m" or seconds), broker addresses, topic names, acks, and
the rule helper that lets a model validator report several problems at once, each
under its own YAML path. Nothing here knows about the sections themselves.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)
from pydantic_core import PydanticCustomError

from shipper.durations import DurationError, format_duration, parse_duration

MASK = "**********"

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
Strategy = Literal["hash", "round-robin", "random"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PresetName = Literal["high-throughput", "low-latency", "high-durability", "balanced"]

# Bytes librdkafka adds around a value (record batch header, record header, key,
# headers). message.max.bytes bounds the whole request, so it must exceed the value
# limit by this much or a value just under max_message_bytes would be refused.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
# librdkafka's own ceiling for message.max.bytes.
LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000
# The longest span any duration may name: librdkafka's millisecond settings are
# 32-bit, and nothing here should wait longer than a few weeks anyway.
_MAX_DURATION = 596 * 3600.0


# --------------------------------------------------------------------------- types


def _to_seconds(value: object) -> float:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


def _duration_bounds(value: float) -> float:
    if value > _MAX_DURATION:
        raise PydanticCustomError(
            "duration_range", "must be at most {limit}", {"limit": format_duration(_MAX_DURATION)}
        )
    return value


def at_least(limit: float) -> AfterValidator:
    def check(value: float) -> float:
        if value < limit:
            raise PydanticCustomError(
                "duration_range", "must be at least {limit}", {"limit": format_duration(limit)}
            )
        return value

    return AfterValidator(check)


def _positive(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError("duration_range", "must be longer than 0s")
    return value


#: A span of time: "100ms", "5s", "5m", "1h" or a number of seconds; stored as float
#: seconds, written back as the most compact string in JSON/YAML dumps.
Duration: TypeAlias = Annotated[
    float,
    BeforeValidator(_to_seconds),
    AfterValidator(_duration_bounds),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
PositiveDuration: TypeAlias = Annotated[Duration, AfterValidator(_positive)]

_BROKER = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)


def _check_broker(value: str) -> str:
    m = _BROKER.match(value)
    if m is None or not 1 <= int(m.group("port")) <= 65535:
        raise PydanticCustomError(
            "broker", "is not a host:port address (e.g. kafka1:9092 or [::1]:9092)"
        )
    return value


# Kafka's own rule for topic names (legal characters, at most 249 of them).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _check_topic(value: str) -> str:
    if not _TOPIC.match(value) or value in (".", ".."):
        raise PydanticCustomError(
            "topic",
            "is not a Kafka topic name (1-249 characters of A-Z, a-z, 0-9, '.', '_', '-')",
        )
    return value


def _check_topic_or_template(value: str) -> str:
    from shipper.routing import TopicTemplate, is_template

    if not is_template(value):
        return _check_topic(value)
    try:
        TopicTemplate(value)
    except ValueError as exc:
        raise PydanticCustomError("topic_template", str(exc)) from None
    return value


_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,254}")


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise PydanticCustomError(
            "header_name",
            "'{value}' is not a usable header name: use 1-255 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            {"value": value},
        )
    return value


Broker: TypeAlias = Annotated[str, AfterValidator(_check_broker)]
HeaderName: TypeAlias = Annotated[str, AfterValidator(_check_header_name)]
Topic: TypeAlias = Annotated[str, AfterValidator(_check_topic)]
TopicOrTemplate: TypeAlias = Annotated[str, AfterValidator(_check_topic_or_template)]
NonEmptyStr: TypeAlias = Annotated[str, Field(min_length=1)]


def _acks_from_text(value: object) -> object:
    # Literal[0, 1, -1] refuses "1", but "${KAFKA_ACKS}" always arrives as text.
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, bool):
        # bool is an int subclass: "required_acks: true" must not mean 1.
        raise PydanticCustomError("acks_type", "expected one of 0, 1, -1")
    return value


RequiredAcks: TypeAlias = Annotated[Literal[0, 1, -1], BeforeValidator(_acks_from_text)]

MODEL_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    # pydantic's own messages (seen only when a model is built directly, not through
    # load_config) must not quote a password either.
    hide_input_in_errors=True,
    validate_default=False,
)


def rules(problems: list[tuple[str, str]]) -> None:
    """Raise one error carrying several ``(relative path, message)`` problems.

    A model validator can only raise once; packing every broken rule into the
    context lets the loader report each under its own YAML path.
    """
    if problems:
        raise PydanticCustomError(
            "shipper_rules",
            "{summary}",
            {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
        )
