"""Every metric the shipper exports, declared in one place.

Actors record figures by catalog name through :class:`shipper.telemetry.MetricsRecorder`;
the telemetry endpoint (:mod:`shipper.telemetry.exposition`) renders counters and gauges
through the OpenTelemetry Prometheus exporter and histograms through a prometheus_client
collector that names them the same way. This module is the single source of truth for
what exists: name, kind, unit, label keys (and their closed value sets where there is
one), histogram buckets, and how figures from many actors combine into the one number
an operator sees (``aggregate``). ``docs/metrics.md`` is generated from it by
``scripts/gen-metrics-doc``.

Naming. The ``name`` here is exactly the name in the Prometheus exposition. The
exporter appends ``_total`` to counters that lack it and appends the unit's Prometheus
word (``s`` -> ``seconds``) unless the name already ends with it; curly-brace units such
as ``{entry}`` and the dimensionless ``1`` add nothing. So every counter name ends with
``_total``, every time metric ends with ``_seconds`` and has unit ``s``, and every other
unit is a ``{annotation}`` or ``1``. ``tests/unit/test_telemetry.py`` scrapes a real
endpoint to prove the mapping; histograms additionally expose ``<name>_bucket``,
``<name>_sum`` and ``<name>_count`` (see :func:`exported_series`). Label keys must
already be valid Prometheus label names: the exporter would rewrite an invalid key for
counters and gauges, the histogram collector would not, and the two would disagree.

Series that alerts depend on (for example ``logs_sent_total{status="error"}``) should be
created at zero by the emitting actor when it starts, so that ``rate()`` has data before
the first error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, get_args

from shipper.outcomes import DropReason

__all__ = [
    "BREAKER_STATE_CODES",
    "CATALOG",
    "END_TO_END_LATENCY_BUCKETS",
    "Aggregate",
    "MetricKind",
    "MetricName",
    "MetricSpec",
    "exported_series",
    "get_spec",
]

MetricKind = Literal["counter", "gauge", "histogram"]

# Prometheus label names; keys starting with "__" are reserved for Prometheus itself.
_LABEL_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# How the figures of many sources (actors, processes, nodes) become one series.
# Counters and histograms are always summed; a gauge chooses.
Aggregate = Literal["sum", "max", "min", "mean"]

MetricName = Literal[
    # delivery
    "log_capturer_logs_sent_total",
    "log_capturer_kafka_delivered_total",
    "log_capturer_errors_total",
    # queues and batches
    "log_capturer_kafka_queue_size",
    "log_capturer_kafka_queue_utilization",
    "log_capturer_kafka_batch_size",
    "log_capturer_kafka_batch_duration_seconds",
    "log_capturer_kafka_end_to_end_latency_seconds",
    # backpressure
    "log_capturer_kafka_backpressure_total",
    "log_capturer_kafka_dropped_total",
    # routing
    "log_capturer_topic_fallbacks_total",
    # circuit breaker
    "log_capturer_kafka_circuit_breaker_state",
    "log_capturer_circuit_breaker_opens_total",
    # dead-letter queue
    "log_capturer_dlq_depth",
    "log_capturer_dlq_writes_total",
    "log_capturer_dlq_replays_total",
    # actors
    "log_capturer_actor_restarts_total",
    "log_capturer_config_reloads_total",
    # sources
    "log_capturer_source_lines_total",
    "log_capturer_source_resent_total",
    "log_capturer_source_problems_total",
    "log_capturer_source_files",
    "log_capturer_http_requests_total",
    # fleet
    "log_capturer_fleet_nodes",
    # librdkafka statistics
    "log_capturer_kafka_compression_ratio",
    "log_capturer_kafka_broker_rtt_seconds",
    "log_capturer_kafka_producer_queue_messages",
    "log_capturer_kafka_retries_total",
]

# The numbers the breaker state gauge takes, fixed by the spec.
BREAKER_STATE_CODES: Final[Mapping[str, int]] = MappingProxyType(
    {"closed": 0, "open": 1, "half_open": 2}
)

# Why a topic template sent an entry to topic_default.
TOPIC_FALLBACKS: Final = ("missing_field", "invalid_name", "max_topics")

# Where lines come from, and what a source may run into.
SOURCES: Final = ("file", "stdin", "http")
PROBLEM_KINDS: Final = (
    "no_match",
    "permission_denied",
    "unreadable",
    "binary",
    "truncated",
    "duplicate",
    "checkpoint_error",
    "line_cut",
    "resend",
    "multiline_cut",
    "watch_unavailable",
    "bad_format",
)

# Entries per produced batch: from single entries up to the largest sensible batch.
BATCH_SIZE_BUCKETS: Final = (
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0, 10000.0, 25000.0, 50000.0, 100000.0,
)  # fmt: skip

# Wall time of one batch in the producer, 1 ms to 2 min (delivery.timeout.ms territory).
BATCH_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip

# Submit-to-ack latency. Neighbouring bounds differ by at most 1.5x between 1 ms and
# 30 s, so histogram_quantile() interpolates P50/P95/P99 within a narrow bucket at any
# latency an operator cares about; beyond 30 s only "slower than 30 s" matters.
END_TO_END_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric.

    ``labels`` is the exact set of label keys every series carries, in exposition
    order. ``label_values`` lists the allowed values of a label whose value set is
    closed (``status``: success or error); other labels take any string. ``buckets``
    are the histogram's upper bounds, strictly increasing, ``+Inf`` implied.
    ``aggregate`` says how per-source values combine; only gauges may choose
    something other than ``sum``.
    """

    name: MetricName
    kind: MetricKind
    unit: str
    description: str
    labels: tuple[str, ...] = ()
    label_values: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    buckets: tuple[float, ...] = ()
    aggregate: Aggregate = "sum"

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.kind == "counter" and not self.name.endswith("_total"):
            problems.append("a counter name must end with _total")
        if self.kind != "counter" and self.name.endswith("_total"):
            problems.append("only counters may end with _total")
        if self.unit == "s" and not self.name.endswith("_seconds"):
            problems.append("a metric in seconds must end with _seconds")
        if self.unit not in ("s", "1") and not (
            self.unit.startswith("{") and self.unit.endswith("}")
        ):
            problems.append(f"unit {self.unit!r} would change the exported name")
        if self.kind == "histogram":
            if not self.buckets:
                problems.append("a histogram needs buckets")
            elif any(b >= c for b, c in zip(self.buckets, self.buckets[1:], strict=False)):
                problems.append("buckets must be strictly increasing")
        elif self.buckets:
            problems.append("only histograms have buckets")
        if self.kind != "gauge" and self.aggregate != "sum":
            problems.append("counters and histograms are always summed")
        if len(set(self.labels)) != len(self.labels):
            problems.append("duplicate label keys")
        for key in self.labels:
            if not _LABEL_KEY.fullmatch(key) or key.startswith("__"):
                problems.append(f"label key {key!r} is not a plain Prometheus label name")
        if self.kind == "histogram" and "le" in self.labels:
            problems.append("le is the bucket label of a histogram")
        for key in self.label_values:
            if key not in self.labels:
                problems.append(f"label_values names unknown label {key!r}")
        if problems:
            raise ValueError(f"metric {self.name}: " + "; ".join(problems))
        # Freeze the caller's dict so the catalog cannot be edited at run time.
        object.__setattr__(self, "label_values", MappingProxyType(dict(self.label_values)))


def exported_series(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names this metric contributes to the exposition (what PromQL sees)."""
    if spec.kind == "histogram":
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


_SPECS: tuple[MetricSpec, ...] = (
    # -- delivery ---------------------------------------------------------------
    MetricSpec(
        name="log_capturer_logs_sent_total",
        kind="counter",
        unit="{entry}",
        description=(
            "Log entries whose delivery to a sink is settled: status=success when the "
            "sink acknowledged them, status=error when delivery failed for good "
            "(they were parked in the DLQ or counted as dropped)."
        ),
        labels=("sink", "status"),
        label_values={"status": ("success", "error")},
    ),
    MetricSpec(
        name="log_capturer_kafka_delivered_total",
        kind="counter",
        unit="{entry}",
        description="Entries acknowledged by Kafka, per destination topic.",
        labels=("topic",),
    ),
    MetricSpec(
        name="log_capturer_errors_total",
        kind="counter",
        unit="{error}",
        description=(
            "Errors seen by a part of the pipeline (component=kafka_sink for the Kafka "
            "producer path, also router, batcher, dlq, telemetry)."
        ),
        labels=("component",),
    ),
    # -- queues and batches -----------------------------------------------------
    MetricSpec(
        name="log_capturer_kafka_queue_size",
        kind="gauge",
        unit="{entry}",
        description="Entries waiting in a topic's batcher queue, not yet handed to Kafka.",
        labels=("topic",),
        aggregate="sum",
    ),
    MetricSpec(
        name="log_capturer_kafka_queue_utilization",
        kind="gauge",
        unit="1",
        description=(
            "Fill level of a topic's batcher queue, 0 to 1 (queue size over queue_size). "
            "Backpressure starts at 0.75, 0.90 and 0.95; the fullest replica is shown."
        ),
        labels=("topic",),
        aggregate="max",
    ),
    MetricSpec(
        name="log_capturer_kafka_batch_size",
        kind="histogram",
        unit="{entry}",
        description="Entries per batch handed to the Kafka producer.",
        labels=("topic",),
        buckets=BATCH_SIZE_BUCKETS,
    ),
    MetricSpec(
        name="log_capturer_kafka_batch_duration_seconds",
        kind="histogram",
        unit="s",
        description=(
            "Time a batch spends in the producer, from hand-off until the last of its "
            "entries is acknowledged by Kafka or parked in the DLQ."
        ),
        labels=("topic",),
        buckets=BATCH_DURATION_BUCKETS,
    ),
    MetricSpec(
        name="log_capturer_kafka_end_to_end_latency_seconds",
        kind="histogram",
        unit="s",
        description=(
            "Per entry, time from submission to the shipper until Kafka acknowledged "
            "it; source of the P50/P95/P99 latency panels."
        ),
        labels=("topic",),
        buckets=END_TO_END_LATENCY_BUCKETS,
    ),
    # -- backpressure -----------------------------------------------------------
    MetricSpec(
        name="log_capturer_kafka_backpressure_total",
        kind="counter",
        unit="{event}",
        description=(
            "Times a queue crossed a backpressure threshold upwards: level=warning "
            "(75 %), critical (90 %, timeouts grow) or emergency (95 %, entries go to "
            "the DLQ)."
        ),
        labels=("level",),
        label_values={"level": ("warning", "critical", "emergency")},
    ),
    MetricSpec(
        name="log_capturer_kafka_dropped_total",
        kind="counter",
        unit="{entry}",
        description=(
            "Entries given up on without delivery or a DLQ copy, by reason (the values of "
            "shipper.outcomes.DropReason: dlq_disabled, not_dead_lettered, dlq_full, "
            "payload_lost). Should stay at zero."
        ),
        labels=("reason",),
        label_values={"reason": tuple(str(r) for r in DropReason)},
    ),
    MetricSpec(
        name="log_capturer_topic_fallbacks_total",
        kind="counter",
        unit="{entry}",
        description=(
            "Entries a topic template sent to topic_default, by reason: missing_field (a "
            "placeholder had no value), invalid_name (the rendered name is not a legal "
            "topic), max_topics (the entrance had max_topics topics already)."
        ),
        labels=("reason",),
        label_values={"reason": TOPIC_FALLBACKS},
    ),
    # -- circuit breaker --------------------------------------------------------
    MetricSpec(
        name="log_capturer_kafka_circuit_breaker_state",
        kind="gauge",
        unit="{state}",
        description=(
            "Circuit breaker of a broker set: 0 closed (normal), 1 open (requests "
            "blocked, entries go to the DLQ), 2 half-open (probing recovery)."
        ),
        labels=("broker_set",),
        aggregate="max",
    ),
    MetricSpec(
        name="log_capturer_circuit_breaker_opens_total",
        kind="counter",
        unit="{event}",
        description="Transitions of a sink's circuit breaker into the open state.",
        labels=("sink",),
    ),
    # -- dead-letter queue ------------------------------------------------------
    MetricSpec(
        name="log_capturer_dlq_depth",
        kind="gauge",
        unit="{entry}",
        description="Entries parked in the dead-letter queue and not yet replayed, all nodes.",
        aggregate="sum",
    ),
    MetricSpec(
        name="log_capturer_dlq_writes_total",
        kind="counter",
        unit="{entry}",
        description=(
            "Entries written to the dead-letter queue, by reason (the values of "
            "shipper.outcomes.Reason: error, timeout, auth_failure, message_too_large, "
            "serialization_error, invalid_topic, circuit_open, emergency_backpressure, "
            "shutdown)."
        ),
        labels=("reason",),
    ),
    MetricSpec(
        name="log_capturer_dlq_replays_total",
        kind="counter",
        unit="{entry}",
        description=(
            "Entries taken out of the dead-letter queue for another delivery attempt, by "
            "the reason they were parked and the outcome (delivered, requeued, given_up)."
        ),
        labels=("reason", "outcome"),
        label_values={"outcome": ("delivered", "requeued", "given_up")},
    ),
    # -- actors -----------------------------------------------------------------
    MetricSpec(
        name="log_capturer_actor_restarts_total",
        kind="counter",
        unit="{restart}",
        description=(
            "Times Ray restarted one of the shipper's actors after its process died, by "
            "component (router, batcher, producer, dlq, supervisor, telemetry, source); the "
            "supervisor rewires what depended on the old instance."
        ),
        labels=("component",),
        label_values={
            "component": (
                "router",
                "batcher",
                "producer",
                "dlq",
                "supervisor",
                "telemetry",
                "source",
            )
        },
    ),
    MetricSpec(
        name="log_capturer_config_reloads_total",
        kind="counter",
        unit="{reload}",
        description=(
            "Times shipper run read its configuration file again (SIGHUP or shipper "
            "reload), by result: applied (the pipelines switched over to it), unchanged, "
            "refused (it did not validate; the running one stayed), failed (it did not "
            "start; the previous one runs again)."
        ),
        labels=("result",),
        label_values={"result": ("applied", "unchanged", "refused", "failed")},
    ),
    # -- sources ----------------------------------------------------------------
    MetricSpec(
        name="log_capturer_source_lines_total",
        kind="counter",
        unit="{line}",
        description="Lines a source handed to the pipeline (file, stdin, http).",
        labels=("source",),
        label_values={"source": SOURCES},
    ),
    MetricSpec(
        name="log_capturer_source_resent_total",
        kind="counter",
        unit="{line}",
        description=(
            "Lines sent again after a restart because they were handed over but not yet "
            "acknowledged when the shipper stopped: possible duplicates in Kafka."
        ),
        labels=("source",),
        label_values={"source": SOURCES},
    ),
    MetricSpec(
        name="log_capturer_source_problems_total",
        kind="counter",
        unit="{event}",
        description=(
            "Trouble a source met and went on after, by kind: no_match (a glob matches "
            "nothing), permission_denied, unreadable, binary, truncated, duplicate (a "
            "copy of a followed file), checkpoint_error, line_cut (lines longer than "
            "max_line_bytes, cut), resend (a block sent again after a refusal), "
            "multiline_cut (an entry cut at multiline.max_lines or max_bytes; the rest "
            "went on as the next entry), watch_unavailable (no inotify: polling only), "
            "bad_format (a container log line not in its format, shipped as a plain line)."
        ),
        labels=("source", "kind"),
        label_values={"source": SOURCES, "kind": PROBLEM_KINDS},
    ),
    MetricSpec(
        name="log_capturer_source_files",
        kind="gauge",
        unit="{file}",
        description="Files a node's file source follows now.",
        labels=("source",),
        label_values={"source": SOURCES},
        aggregate="sum",
    ),
    MetricSpec(
        name="log_capturer_http_requests_total",
        kind="counter",
        unit="{request}",
        description="Requests to the HTTP intake by answer (200, 400, 401, 413, 429, 503...).",
        labels=("code",),
    ),
    # -- fleet ------------------------------------------------------------------
    MetricSpec(
        name="log_capturer_fleet_nodes",
        kind="gauge",
        unit="{node}",
        description=(
            "Nodes of the fleet by state: up (their pipeline runs) or lost (they left; "
            "their pipeline restarts on the same DLQ when they come back)."
        ),
        labels=("state",),
        label_values={"state": ("up", "lost")},
        aggregate="max",
    ),
    # -- librdkafka statistics --------------------------------------------------
    MetricSpec(
        name="log_capturer_kafka_compression_ratio",
        kind="gauge",
        unit="1",
        description=(
            "Compressed over uncompressed size of produced message sets for a broker "
            "set, from librdkafka statistics; lower is better, 1 means no gain."
        ),
        labels=("broker_set",),
        aggregate="mean",
    ),
    MetricSpec(
        name="log_capturer_kafka_broker_rtt_seconds",
        kind="gauge",
        unit="s",
        description=(
            "Average request round-trip time to a broker over the last librdkafka "
            "statistics interval; the slowest producer's view is shown."
        ),
        labels=("broker",),
        aggregate="max",
    ),
    MetricSpec(
        name="log_capturer_kafka_producer_queue_messages",
        kind="gauge",
        unit="{message}",
        description=(
            "Messages inside librdkafka's producer queues awaiting transmission or "
            "acknowledgement, summed over all producers."
        ),
        aggregate="sum",
    ),
    MetricSpec(
        name="log_capturer_kafka_retries_total",
        kind="counter",
        unit="{request}",
        description="Produce requests librdkafka retried, per broker.",
        labels=("broker",),
    ),
)

CATALOG: Final[Mapping[str, MetricSpec]] = MappingProxyType({s.name: s for s in _SPECS})

if len(CATALOG) != len(_SPECS) or set(CATALOG) != set(get_args(MetricName)):
    raise RuntimeError("metrics catalog and MetricName disagree")  # pragma: no cover


def get_spec(name: str) -> MetricSpec:
    """The spec of ``name``; ``ValueError`` if the catalog does not declare it."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(
            f"unknown metric {name!r}: declare it in shipper/telemetry/catalog.py first"
        ) from None
