"""The typed model of a config file: one pydantic class per section.

``ShipperConfig`` is the whole file; ``sinks.kafka`` (:class:`KafkaSinkConfig`) holds the
spec's Kafka sink options with the spec's defaults, ``metrics`` and ``pipeline`` are
our own. Every model is frozen, refuses unknown keys and describes every field (the
descriptions feed ``docs/configuration.md``). Cross-field rules raise through
:func:`shipper.config.types.rules` so that each broken rule is reported under its own
path. Loading (YAML, ``${ENV}``, presets, error translation) is in
:mod:`shipper.config.loading`; the librdkafka settings are built in
:mod:`shipper.kafka.settings`.

This module is longer than most because the sections are one cohesive thing: the
schema of a config file, read top to bottom like the file itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Annotated, TypeAlias

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from shipper.config.fleet import FleetConfig
from shipper.config.sources import SourcesConfig
from shipper.config.types import (
    LIBRDKAFKA_MAX_MESSAGE_BYTES,
    MASK,
    MESSAGE_OVERHEAD_BYTES,
    MODEL_CONFIG,
    Broker,
    Compression,
    Duration,
    HeaderName,
    Mechanism,
    NonEmptyStr,
    PositiveDuration,
    PresetName,
    RequiredAcks,
    Strategy,
    Topic,
    TopicOrTemplate,
    at_least,
    rules,
)

# --------------------------------------------------------------------------- models


class PartitioningConfig(BaseModel):
    """How entries are spread over a topic's partitions."""

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG

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
        rules(problems)
        return self


class TlsConfig(BaseModel):
    """TLS towards the brokers: server verification and, with a client pair, mTLS."""

    model_config = MODEL_CONFIG

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
        rules(problems)
        return self


class ReprocessingConfig(BaseModel):
    """Periodic replay of dead-lettered entries once Kafka is back."""

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG

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
            rules(
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

    model_config = MODEL_CONFIG

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
        rules(
            threshold_rules(
                self.queue_warning_threshold,
                self.queue_critical_threshold,
                self.queue_emergency_threshold,
            )
        )
        return self


def threshold_rules(w: float | None, c: float | None, e: float | None) -> list[tuple[str, str]]:
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

    model_config = MODEL_CONFIG

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
            rules([("low_priority_levels", f"also listed as high priority: {', '.join(both)}")])
        return self


class CircuitBreakerConfig(BaseModel):
    """When to stop calling a failing broker set, and when to try it again."""

    model_config = MODEL_CONFIG

    failure_threshold: int = Field(
        default=10, ge=1, le=1_000_000, description="Consecutive failures that open the breaker."
    )
    success_threshold: int = Field(
        default=2, ge=1, le=1_000_000, description="Consecutive half-open successes that close it."
    )
    timeout: PositiveDuration = Field(
        default=60.0, description="How long the breaker stays open before a half-open trial."
    )
    unreachable_after: Duration = Field(
        default=3.0,
        description="Open the breaker when no broker of the set has been reachable for this "
        "long (librdkafka reports every broker down), without waiting for failures; a set "
        "that accepts connections but answers nothing opens it after `timeout`. 0: only "
        "failures open it.",
    )


class KafkaSinkConfig(BaseModel):
    """The ``sinks.kafka`` section: one Kafka cluster, its topic and the delivery policy."""

    model_config = MODEL_CONFIG

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
    topic: TopicOrTemplate = Field(
        description="Topic for entries that no label or level routes elsewhere; or a "
        "template such as logs-{labels.service} ({level}, {labels.NAME}, {fields.NAME}) "
        "rendered per entry."
    )
    topic_default: Topic | None = Field(
        default=None,
        description="With a topic template: the topic of an entry that lacks a "
        "placeholder's value, whose rendered name is not a legal topic, or that would "
        "make more than max_topics topics (each counted).",
    )
    max_topics: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="With a topic template: most distinct rendered topics per entrance "
        "(each has a Batcher); entries past it go to topic_default.",
    )
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
        le=LIBRDKAFKA_MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES,
        description="Largest encoded entry; bigger ones are refused and go to the DLQ.",
    )
    required_acks: RequiredAcks = Field(
        default=1,
        description="Acknowledgements per message: 0 none, 1 leader, -1 all in-sync replicas.",
    )
    timeout: Annotated[PositiveDuration, at_least(0.01)] = Field(
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
    headers: dict[HeaderName, str] = Field(
        default_factory=dict,
        description="Kafka headers put on every message, as name: value.",
    )
    headers_from_labels: list[HeaderName] = Field(
        default_factory=list,
        description="Labels whose values go on each message as headers of the same name "
        "(an entry without the label gets no such header).",
    )
    entry_id_header: HeaderName | None = Field(
        default=None,
        description="Name of a header that holds a stable id of the entry, the same "
        "each time the same entry is sent again, so consumers can drop the duplicates "
        "that at-least-once delivery makes: for a file line its file, position and "
        "bytes; else the entry's label of this name, or a hash of the entry.",
    )

    @model_validator(mode="after")
    def _cross_fields(self) -> KafkaSinkConfig:
        rules(kafka_rules(self.batch_size, self.queue_size))
        from shipper.routing import is_template

        if is_template(self.topic) and self.topic_default is None:
            raise ValueError(
                "topic is a template: set topic_default, the topic of entries it cannot "
                "name (a placeholder without a value, an illegal name, past max_topics)"
            )
        names = [*self.headers, *self.headers_from_labels]
        if self.entry_id_header is not None:
            names.append(self.entry_id_header)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            where = "entry_id_header" if self.entry_id_header in twice else "headers_from_labels"
            rules(
                [
                    (
                        where,
                        f"header {', '.join(twice)} is named more than once among headers, "
                        "headers_from_labels and entry_id_header; a message would carry "
                        "it twice",
                    )
                ]
            )
        return self

    @property
    def wants_headers(self) -> bool:
        """Whether messages carry headers (each is then produced on its own)."""
        return bool(self.headers or self.headers_from_labels or self.entry_id_header)

    @property
    def first_topic(self) -> str:
        """The topic every pipeline has a Batcher for from the start: ``topic``, or
        ``topic_default`` when ``topic`` is a template."""
        return (
            self.topic_default
            if self.topic_default is not None and "{" in self.topic
            else self.topic
        )

    @property
    def security_protocol(self) -> str:
        """librdkafka's security.protocol for these auth and tls settings."""
        if self.auth.enabled:
            return "SASL_SSL" if self.tls.enabled else "SASL_PLAINTEXT"
        return "SSL" if self.tls.enabled else "PLAINTEXT"

    @property
    def inflight_entries(self) -> int:
        """Entries one sender (the driver, a file source, the HTTP intake) keeps in
        flight at most: below the queues' warning band, so senders slow down before the
        Batchers must; never below ``batch_size``, or no batch could fill and every
        flush would wait out ``batch_timeout``. No single submission should hold more
        (it could fill a topic's queue into its emergency band by itself)."""
        bp = self.backpressure_config
        return max(self.batch_size, int(self.queue_size * bp.queue_warning_threshold))

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


def kafka_rules(batch_size: object, queue_size: object) -> list[tuple[str, str]]:
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

    model_config = MODEL_CONFIG

    kafka: KafkaSinkConfig = Field(description="The Kafka sink.")


class MetricsConfig(BaseModel):
    """The Prometheus scrape endpoint of a deployment."""

    model_config = MODEL_CONFIG

    enabled: bool = Field(default=True, description="Serve metrics.")
    host: NonEmptyStr = Field(
        default="127.0.0.1",
        description="Address to listen on (0.0.0.0 to expose it to the network).",
    )
    port: int = Field(
        default=9464, ge=0, le=65535, description="Port to listen on; 0 picks a free one."
    )


class LoggingConfig(BaseModel):
    """Where the notices of the libraries underneath go (not part of the spec)."""

    model_config = MODEL_CONFIG

    file: NonEmptyStr = Field(
        default="./data/logs/shipper.log",
        description=(
            "File that receives librdkafka's own log lines (connection notices, retries) "
            "from every actor of a node; failures that matter also reach the "
            "acknowledgements, the DLQ and the metrics."
        ),
    )


class PipelineConfig(BaseModel):
    """Sizing and timing of the actor pipeline itself (not part of the spec)."""

    model_config = MODEL_CONFIG

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

    model_config = MODEL_CONFIG

    sinks: SinksConfig = Field(description="Output sinks.")
    metrics: MetricsConfig = Field(
        default_factory=lambda: MetricsConfig(), description="Prometheus endpoint."
    )
    pipeline: PipelineConfig = Field(
        default_factory=lambda: PipelineConfig(), description="Actor pipeline sizing."
    )
    logging: LoggingConfig = Field(
        default_factory=lambda: LoggingConfig(), description="Log file of the libraries."
    )
    sources: SourcesConfig = Field(
        default_factory=lambda: SourcesConfig(), description="Files and HTTP intake."
    )
    fleet: FleetConfig = Field(
        default_factory=lambda: FleetConfig(), description="Nodes that run a pipeline."
    )

    def checkpoint_path(self) -> str:
        """Directory of the source checkpoints: the configured one, else ``checkpoints``
        beside the DLQ's directory."""
        configured = self.sources.checkpoints.path
        if configured:
            return configured
        dlq = os.path.normpath(self.sinks.kafka.dlq_config.path)
        return os.path.join(os.path.dirname(dlq) or ".", "checkpoints")
