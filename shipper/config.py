"""Configuration: the typed model of a shipper config file and the loader that builds it.

A config file is YAML with a ``sinks.kafka`` section (the spec's Kafka sink options)
and two optional sections of our own, ``metrics`` and ``pipeline``. Loading goes:

1. read and parse the YAML (syntax errors name the line),
2. replace ``${VAR}`` / ``${VAR:-default}`` in every string value from the environment,
3. lay the chosen ``sinks.kafka.preset`` underneath the file's own keys,
4. let ``KAFKA_BROKERS`` (comma-separated) replace ``sinks.kafka.brokers``,
5. validate with pydantic and translate *every* problem into one line that starts
   with the YAML path and says what is allowed; they are raised together as one
   :class:`~shipper.errors.ConfigError`.

Secrets: ``sinks.kafka.auth.password`` is a :class:`pydantic.SecretStr`. Its value is
masked in reprs and in ``model_dump(mode="json")`` (unless the caller passes
``context={"reveal_secrets": True}``), and error messages never quote it, nor any value
that came from an environment variable, nor the contents of a mapping or list.

Whether the TLS files exist is not a parse-time question (a config is often checked on
another machine than the one it runs on): :func:`check_files` answers it, and is called
by ``shipper check-config`` and at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shipper.durations import DurationError, format_duration, parse_duration
from shipper.errors import ConfigError

__all__ = [
    "MASK",
    "PRESETS",
    "AuthConfig",
    "BackpressureConfig",
    "CircuitBreakerConfig",
    "DlqConfig",
    "KafkaSinkConfig",
    "MetricsConfig",
    "PartitioningConfig",
    "PipelineConfig",
    "ReprocessingConfig",
    "RoutingConfig",
    "ShipperConfig",
    "SinksConfig",
    "TlsConfig",
    "check_files",
    "load_config",
    "parse_config_text",
    "to_yaml",
]

#: What a secret looks like in dumps, reprs and ``check-config`` output.
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
_LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000
# The longest span any duration may name: librdkafka's millisecond settings are
# 32-bit, and nothing here should wait longer than a few weeks anyway.
_MAX_DURATION = 596 * 3600.0
# librdkafka's linger.ms: the Batcher already gathers batch_size entries (or waits
# batch_timeout) and hands a chunk over in one produce_batch call, so the client
# should send almost at once; 1 ms lets librdkafka pack a chunk into few requests
# (5 ms cost the low-latency preset 4 ms at the median and bought no throughput).
_MAX_LINGER = 0.001


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


def _at_least(limit: float) -> AfterValidator:
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


Broker: TypeAlias = Annotated[str, AfterValidator(_check_broker)]
Topic: TypeAlias = Annotated[str, AfterValidator(_check_topic)]
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

_MODEL_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    # pydantic's own messages (seen only when a model is built directly, not through
    # load_config) must not quote a password either.
    hide_input_in_errors=True,
    validate_default=False,
)


def _rules(problems: list[tuple[str, str]]) -> None:
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


# --------------------------------------------------------------------------- models


class PartitioningConfig(BaseModel):
    """How entries are spread over a topic's partitions."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(
        default=False,
        description="Assign partitions ourselves; when false librdkafka's default "
        "partitioner decides.",
    )
    strategy: Strategy = Field(
        default="hash",
        description="hash: same key, same partition (Kafka's murmur2); round-robin: even "
        "spread; random: uniform choice.",
    )
    key_field: NonEmptyStr | None = Field(
        default=None,
        description="Entry field (then label) whose value is the hash key. With strategy "
        "hash and no key_field, or an entry without that field, the entry is sent "
        "without a key and librdkafka picks the partition.",
    )


class AuthConfig(BaseModel):
    """SASL authentication towards the brokers."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=False, description="Authenticate with SASL.")
    mechanism: Mechanism = Field(default="PLAIN", description="SASL mechanism.")
    username: NonEmptyStr | None = Field(
        default=None, description="SASL user name; required when enabled."
    )
    password: SecretStr | None = Field(
        default=None,
        description="SASL password; required when enabled. Never printed: masked in "
        "reprs, dumps and errors. Use ${KAFKA_PASSWORD} rather than the clear value.",
    )

    @field_serializer("password", when_used="json")
    def _dump_password(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        ctx = info.context
        if isinstance(ctx, Mapping) and ctx.get("reveal_secrets") is True:
            return value.get_secret_value()
        return MASK

    @model_validator(mode="after")
    def _credentials_when_enabled(self) -> AuthConfig:
        problems: list[tuple[str, str]] = []
        if self.enabled:
            if not self.username:
                problems.append(("username", "is required when auth.enabled is true"))
            if self.password is None or not self.password.get_secret_value():
                problems.append(("password", "is required when auth.enabled is true"))
        _rules(problems)
        return self


class TlsConfig(BaseModel):
    """TLS towards the brokers: server verification and, with a client pair, mTLS."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=False, description="Encrypt the connection with TLS.")
    verify_certificate: bool = Field(
        default=True,
        description="Check the broker's certificate chain and host name. Turn off only "
        "for throwaway test brokers.",
    )
    ca_file: NonEmptyStr | None = Field(
        default=None, description="PEM file with the CA that signed the broker certificates."
    )
    cert_file: NonEmptyStr | None = Field(
        default=None, description="PEM client certificate for mutual TLS (needs key_file)."
    )
    key_file: NonEmptyStr | None = Field(
        default=None, description="PEM private key of cert_file (needs cert_file)."
    )

    @model_validator(mode="after")
    def _client_pair(self) -> TlsConfig:
        problems: list[tuple[str, str]] = []
        if self.cert_file and not self.key_file:
            problems.append(("key_file", "is required when cert_file is set (mutual TLS)"))
        if self.key_file and not self.cert_file:
            problems.append(("cert_file", "is required when key_file is set (mutual TLS)"))
        _rules(problems)
        return self


class ReprocessingConfig(BaseModel):
    """Periodic replay of dead-lettered entries once Kafka is back."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=True, description="Replay DLQ entries periodically.")
    interval: PositiveDuration = Field(default=300.0, description="Time between replay passes.")
    max_retries: int = Field(
        default=3, ge=0, le=1_000_000, description="Replays per entry before it stays parked."
    )
    batch_size: int = Field(
        default=50, ge=1, le=1_000_000, description="Entries replayed per step of a pass."
    )


class DlqConfig(BaseModel):
    """The local dead-letter queue (LMDB) that holds entries Kafka did not take."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=True, description="Park undeliverable entries on local disk.")
    send_on_error: bool = Field(
        default=True, description="Park entries that failed with a delivery or data error."
    )
    send_on_timeout: bool = Field(
        default=True, description="Park entries whose delivery timed out."
    )
    path: NonEmptyStr = Field(
        default="./data/dlq", description="Directory of the LMDB environment."
    )
    map_size_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        le=1 << 40,
        description="Largest size the LMDB file may reach (address space, not disk).",
    )
    max_disk_bytes: int = Field(
        default=512 << 20,
        ge=1 << 16,
        le=1 << 40,
        description="Disk budget of the DLQ; when it is used up the shipper pushes back.",
    )
    reprocessing_config: ReprocessingConfig = Field(
        default_factory=lambda: ReprocessingConfig(), description="Replay of parked entries."
    )

    @model_validator(mode="after")
    def _budget_fits_map(self) -> DlqConfig:
        # LMDB needs head-room above the data for its own pages; the store refuses
        # a budget above 90 % of the map size, so refuse it here first.
        limit = self.map_size_bytes * 9 // 10
        if self.max_disk_bytes > limit:
            _rules(
                [
                    (
                        "max_disk_bytes",
                        f"must be at most 90% of map_size_bytes ({limit}), "
                        f"got {self.max_disk_bytes}",
                    )
                ]
            )
        return self


_Fraction: TypeAlias = Annotated[float, Field(gt=0.0, le=1.0)]


class BackpressureConfig(BaseModel):
    """Queue-fill levels at which the shipper warns, slows down and sheds to the DLQ."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=True, description="Apply the thresholds below.")
    queue_warning_threshold: _Fraction = Field(
        default=0.75, description="Fill ratio (0-1] above which warnings are logged."
    )
    queue_critical_threshold: _Fraction = Field(
        default=0.90, description="Fill ratio above which timeouts grow and producers are slowed."
    )
    queue_emergency_threshold: _Fraction = Field(
        default=0.95, description="Fill ratio above which new entries go to the DLQ."
    )
    timeout_escalation: bool = Field(
        default=True, description="Lengthen timeouts while the queue is under pressure."
    )

    @model_validator(mode="after")
    def _increasing(self) -> BackpressureConfig:
        _rules(
            _threshold_rules(
                self.queue_warning_threshold,
                self.queue_critical_threshold,
                self.queue_emergency_threshold,
            )
        )
        return self


def _threshold_rules(w: float | None, c: float | None, e: float | None) -> list[tuple[str, str]]:
    # Each band (warn, slow down, shed) must be entered in order as the queue fills.
    # None stands for a threshold that is itself invalid (reported on its own).
    problems: list[tuple[str, str]] = []
    if w is not None and c is not None and not w < c:
        problems.append(
            (
                "queue_critical_threshold",
                f"must be greater than queue_warning_threshold ({w}), got {c}",
            )
        )
    if c is not None and e is not None and not c < e:
        problems.append(
            (
                "queue_emergency_threshold",
                f"must be greater than queue_critical_threshold ({c}), got {e}",
            )
        )
    return problems


class RoutingConfig(BaseModel):
    """Priority routing: which topic an entry goes to when it names none itself."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(
        default=True,
        description="Route by level; when false every entry goes to sinks.kafka.topic.",
    )
    high_priority_topic: Topic = Field(
        default="logs-high-priority", description="Topic for entries with a high-priority level."
    )
    low_priority_topic: Topic = Field(
        default="logs-low-priority", description="Topic for entries with a low-priority level."
    )
    high_priority_levels: list[NonEmptyStr] = Field(
        default_factory=lambda: ["error", "fatal", "critical"],
        description="Levels (case-insensitive) sent to high_priority_topic.",
    )
    low_priority_levels: list[NonEmptyStr] = Field(
        default_factory=lambda: ["debug", "trace"],
        description="Levels (case-insensitive) sent to low_priority_topic.",
    )
    topic_label: NonEmptyStr = Field(
        default="kafka_topic",
        description="Entry label whose value, when present, is the topic (wins over levels).",
    )

    @field_validator("high_priority_levels", "low_priority_levels")
    @classmethod
    def _lower(cls, levels: list[str]) -> list[str]:
        # Entries spell levels in any case; comparing lower-case once here is cheaper
        # than normalising the configuration on every entry.
        return [level.lower() for level in levels]

    @model_validator(mode="after")
    def _disjoint(self) -> RoutingConfig:
        both = sorted(set(self.high_priority_levels) & set(self.low_priority_levels))
        if both:
            _rules([("low_priority_levels", f"also listed as high priority: {', '.join(both)}")])
        return self


class CircuitBreakerConfig(BaseModel):
    """When to stop calling a failing broker set, and when to try it again."""

    model_config = _MODEL_CONFIG

    failure_threshold: int = Field(
        default=10, ge=1, le=1_000_000, description="Consecutive failures that open the breaker."
    )
    success_threshold: int = Field(
        default=2, ge=1, le=1_000_000, description="Consecutive half-open successes that close it."
    )
    timeout: PositiveDuration = Field(
        default=60.0, description="How long the breaker stays open before a half-open trial."
    )


class KafkaSinkConfig(BaseModel):
    """The ``sinks.kafka`` section: one Kafka cluster, its topic and the delivery policy."""

    model_config = _MODEL_CONFIG

    preset: PresetName | None = Field(
        default=None,
        description="Tuning preset whose values apply where this section says nothing.",
    )
    enabled: bool = Field(default=False, description="Ship to Kafka at all.")
    brokers: list[Broker] = Field(
        min_length=1,
        description="Bootstrap brokers as host:port; KAFKA_BROKERS (comma-separated) "
        "replaces this list when set.",
    )
    topic: Topic = Field(description="Topic for entries that no label or level routes elsewhere.")
    compression: Compression = Field(default="none", description="Codec for produced batches.")
    batch_size: int = Field(
        default=1000, ge=1, le=1_000_000, description="Entries per batch handed to the producer."
    )
    batch_timeout: PositiveDuration = Field(
        default=5.0, description="Longest a partial batch waits before it is sent anyway."
    )
    queue_size: int = Field(
        default=50000, ge=1, le=100_000_000, description="Entries a topic's queue holds at most."
    )
    max_message_bytes: int = Field(
        default=1048576,
        ge=1,
        le=_LIBRDKAFKA_MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES,
        description="Largest encoded entry; bigger ones are refused and go to the DLQ.",
    )
    required_acks: RequiredAcks = Field(
        default=1,
        description="Acknowledgements per message: 0 none, 1 leader, -1 all in-sync replicas.",
    )
    timeout: Annotated[PositiveDuration, _at_least(0.01)] = Field(
        default=30.0, description="Longest a message may take from produce to acknowledgement."
    )
    retry_max: int = Field(
        default=3, ge=0, le=2_147_483_647, description="Retries of a failed produce request."
    )
    partitioning: PartitioningConfig = Field(
        default_factory=lambda: PartitioningConfig(), description="Partition assignment."
    )
    auth: AuthConfig = Field(
        default_factory=lambda: AuthConfig(), description="SASL authentication."
    )
    tls: TlsConfig = Field(default_factory=lambda: TlsConfig(), description="TLS encryption.")
    dlq_config: DlqConfig = Field(
        default_factory=lambda: DlqConfig(), description="Dead-letter queue."
    )
    backpressure_config: BackpressureConfig = Field(
        default_factory=lambda: BackpressureConfig(), description="Queue-fill thresholds."
    )
    routing: RoutingConfig = Field(
        default_factory=lambda: RoutingConfig(), description="Label and level based topic routing."
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=lambda: CircuitBreakerConfig(),
        description="Circuit breaker per broker set.",
    )

    @model_validator(mode="after")
    def _cross_fields(self) -> KafkaSinkConfig:
        _rules(_kafka_rules(self.batch_size, self.queue_size))
        return self

    @property
    def security_protocol(self) -> str:
        """librdkafka's security.protocol for these auth and tls settings."""
        if self.auth.enabled:
            return "SASL_SSL" if self.tls.enabled else "SASL_PLAINTEXT"
        return "SSL" if self.tls.enabled else "PLAINTEXT"

    def broker_set_id(self) -> str:
        """Stable 12-hex-digit name of this broker list plus its security settings.

        Two sinks that would open identical connections get the same id, in any
        process and across restarts (sha256, never ``hash()``); the password enters
        only as its own sha256, so the id reveals nothing about it.
        """
        ident: dict[str, object] = {
            "brokers": sorted(self.brokers),
            "protocol": self.security_protocol,
        }
        if self.auth.enabled:
            secret = self.auth.password.get_secret_value() if self.auth.password else ""
            ident["auth"] = [
                self.auth.mechanism,
                self.auth.username,
                hashlib.sha256(secret.encode()).hexdigest(),
            ]
        if self.tls.enabled:
            ident["tls"] = [
                self.tls.verify_certificate,
                self.tls.ca_file,
                self.tls.cert_file,
                self.tls.key_file,
            ]
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def librdkafka_config(self) -> dict[str, object]:
        """Settings for ``confluent_kafka.Producer`` that implement this section.

        The result holds the SASL password in clear (librdkafka needs it); its
        ``repr`` masks it, but callers must not log a copy of it either.
        """
        acks = {0: "0", 1: "1", -1: "all"}[self.required_acks]
        conf = _RedactedConfig(
            {
                "bootstrap.servers": ",".join(self.brokers),
                "compression.type": self.compression,
                "acks": acks,
                # librdkafka only allows idempotence with acks=all and at least one
                # retry; with acks 0/1 a retry may duplicate anyway, so it stays off.
                "enable.idempotence": self.required_acks == -1 and self.retry_max >= 1,
                "retries": self.retry_max,
                "message.timeout.ms": max(1, round(self.timeout * 1000)),
                # The Batcher has already waited for a full batch or batch_timeout;
                # librdkafka must not add a second wait on top of it.
                "linger.ms": min(self.batch_timeout, _MAX_LINGER) * 1000,
                "batch.num.messages": self.batch_size,
                "message.max.bytes": self.max_message_bytes + MESSAGE_OVERHEAD_BYTES,
                "security.protocol": self.security_protocol,
            }
        )
        if self.auth.enabled:
            conf["sasl.mechanism"] = self.auth.mechanism
            conf["sasl.username"] = self.auth.username
            if self.auth.password is not None:
                conf["sasl.password"] = self.auth.password.get_secret_value()
        if self.tls.enabled:
            for key, value in (
                ("ssl.ca.location", self.tls.ca_file),
                ("ssl.certificate.location", self.tls.cert_file),
                ("ssl.key.location", self.tls.key_file),
            ):
                if value is not None:
                    conf[key] = value
            conf["enable.ssl.certificate.verification"] = self.tls.verify_certificate
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.tls.verify_certificate else "none"
            )
        return conf


class _RedactedConfig(dict[str, object]):
    """A librdkafka settings dict whose repr never shows the SASL password."""

    def __repr__(self) -> str:
        shown = {k: (MASK if k == "sasl.password" else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def _kafka_rules(batch_size: object, queue_size: object) -> list[tuple[str, str]]:
    # A batch is cut from one queue, so it can never hold more than the queue does.
    if (
        isinstance(batch_size, int)
        and isinstance(queue_size, int)
        and queue_size >= 1
        and batch_size > queue_size
    ):
        return [
            (
                "batch_size",
                f"must be at most queue_size ({queue_size}), got {batch_size}",
            )
        ]
    return []


class SinksConfig(BaseModel):
    """Where entries go. Kafka is the only sink."""

    model_config = _MODEL_CONFIG

    kafka: KafkaSinkConfig = Field(description="The Kafka sink.")


class MetricsConfig(BaseModel):
    """The Prometheus scrape endpoint of a deployment."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(default=True, description="Serve metrics.")
    host: NonEmptyStr = Field(
        default="127.0.0.1",
        description="Address to listen on (0.0.0.0 to expose it to the network).",
    )
    port: int = Field(
        default=9464, ge=0, le=65535, description="Port to listen on; 0 picks a free one."
    )


class PipelineConfig(BaseModel):
    """Sizing and timing of the actor pipeline itself (not part of the spec)."""

    model_config = _MODEL_CONFIG

    producer_replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Producer actors per broker set, shared by the Batchers.",
    )
    max_inflight_submissions: int = Field(
        default=8, ge=1, le=10_000, description="Submissions in flight before submit() waits."
    )
    max_inflight_entries: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Entries in flight before submit() waits; unset: the larger of batch_size and "
            "queue_size x queue_warning_threshold."
        ),
    )
    drain_timeout: Duration = Field(
        default=30.0,
        description="Longest close() waits for queued entries to be delivered or parked.",
    )
    submit_timeout: PositiveDuration = Field(
        default=30.0, description="Longest submit() waits for room before it raises."
    )


class ShipperConfig(BaseModel):
    """A whole configuration file."""

    model_config = _MODEL_CONFIG

    sinks: SinksConfig = Field(description="Output sinks.")
    metrics: MetricsConfig = Field(
        default_factory=lambda: MetricsConfig(), description="Prometheus endpoint."
    )
    pipeline: PipelineConfig = Field(
        default_factory=lambda: PipelineConfig(), description="Actor pipeline sizing."
    )


# --------------------------------------------------------------------------- presets

#: The spec's tuning table as partial ``sinks.kafka`` sections. A preset only supplies
#: values the config leaves out; it never overrides what the file says.
PRESETS: dict[str, dict[str, Any]] = {
    "high-throughput": {
        "batch_size": 5000,
        "batch_timeout": "10s",
        "queue_size": 100000,
        "compression": "lz4",
        "required_acks": 1,
        "partitioning": {"strategy": "round-robin"},
    },
    "low-latency": {
        "batch_size": 100,
        "batch_timeout": "100ms",
        "queue_size": 10000,
        "compression": "none",
        "required_acks": 1,
    },
    "high-durability": {
        "batch_size": 1000,
        "batch_timeout": "5s",
        "compression": "snappy",
        "required_acks": -1,
        "retry_max": 5,
    },
    "balanced": {
        "batch_size": 1000,
        "batch_timeout": "5s",
        "compression": "snappy",
        "required_acks": 1,
    },
}


def _deep_merge(base: Mapping[str, Any], over: Mapping[Any, Any]) -> dict[Any, Any]:
    merged: dict[Any, Any] = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- loading

Loc = tuple[str | int, ...]

# ${NAME}, ${NAME:-default}, and $${ as the escape for a literal "${".
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Prepared:
    """The raw mapping after substitution, plus what the loader learnt on the way."""

    def __init__(self) -> None:
        self.problems: list[tuple[Loc, str]] = []
        # Paths whose value came (partly) from the environment: never quoted in errors.
        self.from_env: dict[Loc, list[str]] = {}
        # Paths whose substitution failed: pydantic's complaint about the leftover
        # "${VAR}" text would only repeat the real problem.
        self.failed: set[Loc] = set()


def _substitute(node: object, loc: Loc, env: Mapping[str, str], prep: _Prepared) -> object:
    if isinstance(node, str):
        if "$" not in node:
            return node
        names: list[str] = []
        missing: list[str] = []

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            names.append(name)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                missing.append(name)
                return m.group(0)
            return value

        result = _VAR.sub(repl, node)
        if names:
            prep.from_env[loc] = names
        for name in dict.fromkeys(missing):
            prep.problems.append((loc, f"environment variable {name} is not set"))
        # "${" left over after the escapes were handled is a malformed reference.
        leftover = _VAR.sub("", node).count("${")
        if leftover:
            prep.problems.append(
                (
                    loc,
                    "malformed ${...} reference (write ${NAME} or ${NAME:-default}; "
                    "$${ for a literal ${)",
                )
            )
        if missing or leftover:
            prep.failed.add(loc)
            return node
        return result
    if isinstance(node, Mapping):
        return {k: _substitute(v, (*loc, _loc_key(k)), env, prep) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_substitute(v, (*loc, i), env, prep) for i, v in enumerate(node)]
    return node


def _loc_key(key: object) -> str | int:
    return key if isinstance(key, str) else str(key)


def _prepare(raw: object, env: Mapping[str, str]) -> tuple[object, _Prepared]:
    prep = _Prepared()
    data = _substitute(raw, (), env, prep)
    if not isinstance(data, dict):
        return data, prep
    sinks = data.get("sinks")
    kafka = sinks.get("kafka") if isinstance(sinks, dict) else None
    if isinstance(sinks, dict) and isinstance(kafka, dict):
        preset = kafka.get("preset")
        if isinstance(preset, str) and preset in PRESETS:
            kafka = _deep_merge(PRESETS[preset], kafka)
        brokers = env.get("KAFKA_BROKERS", "")
        override = [b.strip() for b in brokers.split(",") if b.strip()]
        if override:
            # The spec's compose example configures brokers this way only.
            kafka = {**kafka, "brokers": override}
            for i in range(len(override)):
                prep.from_env[("sinks", "kafka", "brokers", i)] = ["KAFKA_BROKERS"]
        data = {**data, "sinks": {**sinks, "kafka": kafka}}
    return data, prep


def _build(raw: object, env: Mapping[str, str] | None, source: str) -> ShipperConfig:
    env = os.environ if env is None else env
    if raw is None:
        raise ConfigError(["config: the configuration is empty; it needs sinks.kafka"], source)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [f"config: expected a mapping with the key sinks, got {_kind(raw)}"], source
        )
    data, prep = _prepare(raw, env)
    problems = [f"{_path(loc)}: {msg}" for loc, msg in prep.problems]
    try:
        config = ShipperConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_translate(exc, prep))
        problems.extend(_fallback_rules(data, prep))
    else:
        if not problems:
            return config
    # Several routes (a model rule and its fallback) can find the same problem.
    raise ConfigError(list(dict.fromkeys(problems)), source) from None


def _fallback_rules(data: object, prep: _Prepared) -> list[str]:
    """Cross-field rules that pydantic skipped because a field next to them failed.

    pydantic runs a model's own validator only when all of its fields are valid, so a
    bad ``compression`` would hide ``batch_size > queue_size``. Checking the raw values
    here keeps the promise that every problem of a file is reported at once.
    """
    kafka = _get(data, "sinks", "kafka")
    if not isinstance(kafka, Mapping):
        return []
    found: list[tuple[Loc, str]] = []
    base: Loc = ("sinks", "kafka")
    fields = KafkaSinkConfig.model_fields
    size = _as_int(kafka.get("batch_size", fields["batch_size"].default))
    queue = _as_int(kafka.get("queue_size", fields["queue_size"].default))
    found += [((*base, rel), msg) for rel, msg in _kafka_rules(size, queue)]
    bp = kafka.get("backpressure_config", {})
    if isinstance(bp, Mapping):
        names = ("queue_warning_threshold", "queue_critical_threshold", "queue_emergency_threshold")
        bp_fields = BackpressureConfig.model_fields
        levels = [_as_fraction(bp.get(n, bp_fields[n].default)) for n in names]
        found += [
            ((*base, "backpressure_config", rel), msg) for rel, msg in _threshold_rules(*levels)
        ]
    return [f"{_path(loc)}: {msg}" for loc, msg in found if loc not in prep.from_env]


def _get(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value):
        return int(value)
    return None


def _as_fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if 0 < number <= 1 else None


def parse_config_text(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> ShipperConfig:
    """Build a config from YAML text; ``source`` names it in errors."""
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{where}: YAML syntax error: {what}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"YAML syntax error: {type(exc).__name__}"], source) from None
    return _build(raw, env, source)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | ShipperConfig,
    env: Mapping[str, str] | None = None,
) -> ShipperConfig:
    """The validated config from a file, YAML text, a parsed mapping or a config.

    A ``str`` is a file name when such a file exists, YAML text when it looks like YAML
    (it has a newline or a ``key: value``), and otherwise a missing file. ``env``
    replaces ``os.environ`` for ``${VAR}`` and ``KAFKA_BROKERS``. A ``ShipperConfig`` is
    returned as it is. Raises :class:`ConfigError` listing every problem.
    """
    if isinstance(source, ShipperConfig):
        return source
    if isinstance(source, Mapping):
        return _build(source, env, "<dict>")
    if isinstance(source, str) and not os.path.exists(source):
        if "\n" in source or ": " in source or source.lstrip().startswith("{"):
            return parse_config_text(source, "<string>", env)
        raise ConfigError([f"config: file {source} does not exist"], source)
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(
            [f"config: expected a file name, YAML text or a mapping, got {_kind(source)}"]
        )
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config: file {path} does not exist"], str(path)) from None
    except IsADirectoryError:
        raise ConfigError([f"config: {path} is a directory, not a file"], str(path)) from None
    except PermissionError:
        raise ConfigError([f"config: file {path} is not readable"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config: file {path} is not UTF-8 text (byte {exc.start})"], str(path)
        ) from None
    except OSError as exc:
        raise ConfigError([f"config: cannot read {path}: {exc.strerror}"], str(path)) from None
    return parse_config_text(text, str(path), env)


def check_files(cfg: ShipperConfig) -> list[str]:
    """Problems with the files the config names (TLS CA, certificate, key), if any.

    Not part of parsing: the files must exist where the shipper runs, which may not be
    where the config is written. ``shipper check-config`` and start-up call this.
    """
    tls = cfg.sinks.kafka.tls
    if not tls.enabled:
        return []
    problems: list[str] = []
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, name)
        if value is None:
            continue
        path = Path(value)
        where = f"sinks.kafka.tls.{name}"
        if not path.exists():
            problems.append(f"{where}: file {value} does not exist")
        elif not path.is_file():
            problems.append(f"{where}: {value} is not a regular file")
        else:
            try:
                with path.open("rb") as fh:
                    fh.read(1)
            except OSError as exc:
                problems.append(f"{where}: file {value} is not readable ({exc.strerror})")
    return problems


def to_yaml(cfg: ShipperConfig, *, reveal_secrets: bool = False) -> str:
    """The effective config as YAML: every option, durations as "5s", secrets masked.

    A literal ``${`` in a value is written as ``$${`` so that loading the output gives
    back the same config instead of looking the name up in the environment.
    """
    data = cfg.model_dump(mode="json", context={"reveal_secrets": reveal_secrets})
    return yaml.safe_dump(_escape_vars(data), sort_keys=False, default_flow_style=False)


def _escape_vars(node: object) -> object:
    if isinstance(node, str):
        return node.replace("${", "$${")
    if isinstance(node, dict):
        return {k: _escape_vars(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape_vars(v) for v in node]
    return node


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


# --------------------------------------------------------------------------- errors


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "config"


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _is_secret(loc: Loc) -> bool:
    return "password" in loc


def _shown(loc: Loc, value: object, prep: _Prepared) -> str:
    """How an offending value may appear in a message: ``", got 'brotli'"`` or less."""
    names = prep.from_env.get(loc)
    if names:
        return f" (the value of {', '.join('${' + n + '}' for n in names)})"
    if _is_secret(loc):
        return ""
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value) if value is not None else "null"
        if len(text) > 80:
            text = text[:77] + "..."
        return f", got {text}"
    # Never the contents of a mapping or list: a password could be inside.
    return f", got {_kind(value)}"


def _field_at(loc: Loc) -> tuple[type[BaseModel] | None, Any]:
    """The model owning the last key of ``loc`` and that field's annotation."""
    model: type[BaseModel] | None = ShipperConfig
    owner: type[BaseModel] | None = None
    annotation: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return model, None
        owner = model
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)
    return owner, annotation


def _model_at(loc: Loc) -> type[BaseModel] | None:
    return _model_in(_field_at(loc)[1]) if loc else ShipperConfig


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _literal_choices(annotation: Any) -> list[object]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (Union, types.UnionType) or origin is Annotated:
        return [c for arg in typing.get_args(annotation) for c in _literal_choices(arg)]
    return []


def _keys_of(model: type[BaseModel] | None) -> str:
    return ", ".join(model.model_fields) if model is not None else ""


_TYPE_WORDS: dict[str, str] = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "string_unicode": "expected text",
    "list_type": "expected a list",
    "acks_type": "expected one of 0, 1, -1",
}

_BOUND_WORDS: dict[str, tuple[str, str]] = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _translate(exc: ValidationError, prep: _Prepared) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        if loc in prep.failed:
            continue
        problems.extend(_describe(err, loc, prep))
    return problems


def _describe(err: Any, loc: Loc, prep: _Prepared) -> list[str]:
    kind: str = err["type"]
    value = err.get("input")
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    where = _path(loc)
    if kind == "shipper_rules":
        return [f"{_path((*loc, rel))}: {msg}" for rel, msg in ctx.get("problems", [])]
    if kind == "missing":
        return [f"{where}: is required"]
    if kind == "extra_forbidden":
        return [f"{where}: unknown key (allowed: {_keys_of(_model_at(loc[:-1]))})"]
    if kind == "literal_error":
        choices = _literal_choices(_field_at(loc)[1])
        allowed = ", ".join(str(c) for c in choices) if choices else str(ctx.get("expected"))
        if _is_secret(loc) or loc in prep.from_env:
            return [f"{where}: is not one of {allowed}{_shown(loc, value, prep)}"]
        shown = repr(value) if isinstance(value, str | int | float) else _kind(value)
        return [f"{where}: {shown[:80]} is not one of {allowed}"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _keys_of(_model_at(loc))
        return [f"{where}: expected a mapping with keys {keys}{_shown(loc, value, prep)}"]
    if kind in _TYPE_WORDS:
        hint = ""
        if kind == "string_type" and isinstance(value, int | float | bool):
            hint = " (quote it in YAML)"
        return [f"{where}: {_TYPE_WORDS[kind]}{_shown(loc, value, prep)}{hint}"]
    if kind in _BOUND_WORDS:
        key, words = _BOUND_WORDS[kind]
        return [f"{where}: {words} {ctx.get(key)}{_shown(loc, value, prep)}"]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return [f"{where}: needs at least {n} item{'s' if n != 1 else ''}"]
    if kind == "string_too_short":
        return [f"{where}: must not be empty"]
    if kind in ("duration", "duration_range", "broker", "topic"):
        return [f"{where}: {err['msg']}{_shown(loc, value, prep)}"]
    # Anything else: pydantic's own words (they never contain the input).
    return [f"{where}: {err['msg']}{_shown(loc, value, prep)}"]
