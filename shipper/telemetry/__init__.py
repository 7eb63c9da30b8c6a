"""Metrics for the shipper: what exists, how actors record it, how it is served.

The shape, without Ray (``actors/telemetry.py`` wires these pieces together)::

    actor A: MetricsRecorder --snapshot()--+
    actor B: MetricsRecorder --snapshot()--+--> Aggregator.update() --merged()--+
    actor C: MetricsRecorder --snapshot()--+                                    |
                                                                                v
    Prometheus --GET /metrics--> MetricsServer.render(): one merged Snapshot per scrape
                                   |
                                   | generate_latest() over one CollectorRegistry
                                   +--> OpenTelemetry PrometheusMetricReader
                                   |      counters, gauges: observable instruments
                                   +--> _HistogramCollector (prometheus_client)
                                          histograms: HistogramMetricFamily

Modules:

* :mod:`~shipper.telemetry.catalog` declares every metric (name, kind, unit, labels,
  buckets, how sources combine); everything else validates against it.
* :mod:`~shipper.telemetry.recorder` holds :class:`MetricsRecorder` (one per actor),
  the plain-data :class:`Snapshot` it produces, :func:`merge_snapshots` and the
  :class:`Aggregator` that keeps the latest snapshot of each source.
* :mod:`~shipper.telemetry.exposition` holds :class:`MetricsServer`, which serves
  ``/metrics``, ``/healthz`` and ``/ready`` from a daemon thread. Counters and gauges
  go through OpenTelemetry's public API; histograms, already merged across processes,
  go straight to prometheus_client, because OpenTelemetry has no instrument that
  accepts pre-aggregated buckets (the module docstring explains).

The names below are re-exported so callers can write
``from shipper.telemetry import MetricsRecorder``.
"""

from shipper.telemetry.catalog import (
    BREAKER_STATE_CODES,
    CATALOG,
    END_TO_END_LATENCY_BUCKETS,
    Aggregate,
    MetricKind,
    MetricName,
    MetricSpec,
    exported_series,
    get_spec,
)
from shipper.telemetry.exposition import MetricsServer
from shipper.telemetry.recorder import (
    Aggregator,
    BoundCounter,
    BoundGauge,
    BoundHistogram,
    HistogramPoint,
    LabelValues,
    MetricsRecorder,
    Snapshot,
    empty_snapshot,
    merge_snapshots,
)

__all__ = [
    "BREAKER_STATE_CODES",
    "CATALOG",
    "END_TO_END_LATENCY_BUCKETS",
    "Aggregate",
    "Aggregator",
    "BoundCounter",
    "BoundGauge",
    "BoundHistogram",
    "HistogramPoint",
    "LabelValues",
    "MetricKind",
    "MetricName",
    "MetricSpec",
    "MetricsRecorder",
    "MetricsServer",
    "Snapshot",
    "empty_snapshot",
    "exported_series",
    "get_spec",
    "merge_snapshots",
]
