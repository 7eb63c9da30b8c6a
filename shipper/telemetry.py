"""Metrics recording, cross-actor aggregation and the one telemetry HTTP endpoint.

The shape, without Ray (the actors in ``actors/`` wire these pieces together)::

    actor A: MetricsRecorder --snapshot()--+
    actor B: MetricsRecorder --snapshot()--+--> Aggregator.update() --merged()--+
    actor C: MetricsRecorder --snapshot()--+                                    |
                                                                                v
    Prometheus --GET /metrics--> MetricsServer --collect()--> OpenTelemetry SDK
                                                              + Prometheus exporter

* :class:`MetricsRecorder` lives in every actor. It is a plain in-process store of
  cumulative counters, gauges and histogram buckets, keyed by catalog name and label
  values, validated against :mod:`shipper.metrics_catalog`. Recording is a dict
  lookup and an addition under a lock; ``counter()``/``gauge()``/``histogram()`` hand out
  pre-validated handles for the hottest paths. ``snapshot()`` returns plain picklable data.
* :class:`Aggregator` keeps the latest snapshot of each source and merges them:
  counters and histogram buckets are summed, gauges combined per the catalog's
  ``aggregate`` (sum, max, min or mean). When a source restarts (new recorder
  ``instance``) or is forgotten, what it had counted is kept, so the merged counters
  never go backwards; stale, out-of-order snapshots are ignored.
* :class:`MetricsServer` serves ``/metrics``, ``/healthz`` and ``/ready`` from a daemon
  thread. Each scrape takes one merged snapshot and renders it through an OpenTelemetry
  ``MeterProvider`` with the ``PrometheusMetricReader``: counters and gauges are
  observable instruments whose callbacks read the snapshot. The OpenTelemetry API has no
  asynchronous histogram, so merged histograms enter as SDK ``HistogramDataPoint`` s,
  added to the collected ``MetricsData`` in the reader's ``_receive_metrics`` hook; the
  exporter then translates everything the same way.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType, TracebackType
from typing import Any, TypedDict

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from shipper.metrics_catalog import CATALOG, MetricKind, MetricName, MetricSpec

__all__ = [
    "Aggregator",
    "BoundCounter",
    "BoundGauge",
    "BoundHistogram",
    "HistogramPoint",
    "LabelValues",
    "MetricsRecorder",
    "MetricsServer",
    "Snapshot",
    "empty_snapshot",
    "merge_snapshots",
]

_log = logging.getLogger(__name__)
_NO_LABELS: Mapping[str, str] = MappingProxyType({})

LabelValues = tuple[str, ...]
"""Label values of one series, in the order of the spec's ``labels``."""


@dataclass(frozen=True, slots=True)
class HistogramPoint:
    """One histogram series: per-bucket counts (not cumulative; last is +Inf), sum, count."""

    bucket_counts: tuple[int, ...]
    sum: float
    count: int


class Snapshot(TypedDict):
    """Cumulative figures of one recorder (or a merge of many), plain picklable data.

    ``instance`` identifies the recorder object (a restarted actor gets a new one) and
    ``seq`` grows with every snapshot it takes, so receivers can order them.
    """

    source: str
    instance: str
    seq: int
    counters: dict[str, dict[LabelValues, float]]
    gauges: dict[str, dict[LabelValues, float]]
    histograms: dict[str, dict[LabelValues, HistogramPoint]]


def empty_snapshot(source: str = "", instance: str = "", seq: int = 0) -> Snapshot:
    """A snapshot with no series."""
    return Snapshot(
        source=source, instance=instance, seq=seq, counters={}, gauges={}, histograms={}
    )


# --------------------------------------------------------------------------- recorder


class _Cell:
    """A counter or gauge value; handles keep a reference so updates skip lookups."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class _HistogramCell:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, count: int) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (le semantics).
        self.counts[bisect_left(self.bounds, value)] += count
        self.sum += value * count
        self.count += count


class BoundCounter:
    """A counter series resolved once; ``add`` is the cheapest way to count."""

    __slots__ = ("_cell", "_lock")

    def __init__(self, cell: _Cell, lock: threading.Lock) -> None:
        self._cell = cell
        self._lock = lock

    def add(self, amount: float = 1.0) -> None:
        """Increase the counter by ``amount`` (>= 0)."""
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"a counter only goes up; got {amount!r}")
        with self._lock:
            self._cell.value += amount


class BoundGauge:
    """A gauge series resolved once."""

    __slots__ = ("_cell", "_lock")

    def __init__(self, cell: _Cell, lock: threading.Lock) -> None:
        self._cell = cell
        self._lock = lock

    def set(self, value: float) -> None:
        """Replace the gauge's value."""
        with self._lock:
            self._cell.value = float(value)


class BoundHistogram:
    """A histogram series resolved once."""

    __slots__ = ("_cell", "_lock")

    def __init__(self, cell: _HistogramCell, lock: threading.Lock) -> None:
        self._cell = cell
        self._lock = lock

    def observe(self, value: float, count: int = 1) -> None:
        """Record ``count`` observations of ``value`` (one call for a batch of equal values)."""
        _check_observation(value, count)
        with self._lock:
            self._cell.observe(value, count)

    def observe_many(self, values: Iterable[float]) -> None:
        """Record each of ``values`` once, under one lock acquisition."""
        checked = list(values)
        for value in checked:
            _check_observation(value, 1)
        with self._lock:
            for value in checked:
                self._cell.observe(value, 1)


def _check_observation(value: float, count: int) -> None:
    if math.isnan(value):
        raise ValueError("cannot observe NaN")
    if count < 0:
        raise ValueError(f"observation count must be >= 0; got {count}")


class MetricsRecorder:
    """The in-process metric store of one actor (or any component).

    Every call names a catalog metric and gives exactly its label keys; a wrong name,
    kind, label key or closed-set label value raises ``ValueError`` at the call site,
    so mistakes show up in the first test that runs the code. A series exists from its
    first update, so ``add(name, 0, labels)`` publishes a zero.

    Thread-safe. Figures are cumulative for the recorder's lifetime.
    """

    def __init__(self, source: str, *, catalog: Mapping[str, MetricSpec] = CATALOG) -> None:
        self.source = source
        self.instance = uuid.uuid4().hex
        self._catalog = dict(catalog)  # a plain dict: the lookup is on the hot path
        self._lock = threading.Lock()
        self._seq = 0
        self._cells: dict[str, dict[LabelValues, _Cell]] = {}
        self._histograms: dict[str, dict[LabelValues, _HistogramCell]] = {}

    # -- resolution -------------------------------------------------------------

    def _resolve(
        self, name: str, labels: Mapping[str, str] | None, kind: MetricKind
    ) -> tuple[MetricSpec, LabelValues]:
        spec = self._catalog.get(name)
        if spec is None:
            raise ValueError(
                f"unknown metric {name!r}: declare it in shipper/metrics_catalog.py first"
            )
        if spec.kind != kind:
            raise ValueError(f"{name} is a {spec.kind}, not a {kind}")
        if labels is None:
            labels = _NO_LABELS
        # Same size and every declared key present means exactly the declared keys.
        try:
            values = tuple(map(labels.__getitem__, spec.labels))
        except KeyError:
            values = None
        if values is None or len(labels) != len(values):
            raise ValueError(
                f"{name} takes labels {sorted(spec.labels)}, got {sorted(labels.keys())}"
            )
        return spec, values

    def _new_series_check(self, spec: MetricSpec, values: LabelValues) -> None:
        # Only on a series' first appearance: closed label sets are checked once.
        for key, value in zip(spec.labels, values, strict=True):
            allowed = spec.label_values.get(key)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{spec.name}: label {key}={value!r} is not one of {allowed}")
            if not isinstance(value, str):
                raise ValueError(f"{spec.name}: label {key} must be a str, got {value!r}")

    def _cell(self, name: str, labels: Mapping[str, str] | None, kind: MetricKind) -> _Cell:
        spec, values = self._resolve(name, labels, kind)
        series = self._cells.get(name)
        cell = None if series is None else series.get(values)
        if cell is None:
            self._new_series_check(spec, values)
            # Created under the lock: snapshot() may be iterating these dicts.
            with self._lock:
                cell = self._cells.setdefault(name, {}).setdefault(values, _Cell())
        return cell

    def _histogram_cell(self, name: str, labels: Mapping[str, str] | None) -> _HistogramCell:
        spec, values = self._resolve(name, labels, "histogram")
        series = self._histograms.get(name)
        cell = None if series is None else series.get(values)
        if cell is None:
            self._new_series_check(spec, values)
            with self._lock:
                cell = self._histograms.setdefault(name, {}).setdefault(
                    values, _HistogramCell(spec.buckets)
                )
        return cell

    # -- recording ----------------------------------------------------------------

    def add(
        self, name: MetricName, amount: float = 1.0, labels: Mapping[str, str] | None = None
    ) -> None:
        """Increase counter ``name`` for ``labels`` by ``amount`` (>= 0)."""
        cell = self._cell(name, labels, "counter")
        if not amount >= 0:  # also rejects NaN
            raise ValueError(f"a counter only goes up; {name} got {amount!r}")
        with self._lock:
            cell.value += amount

    def set(self, name: MetricName, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Set gauge ``name`` for ``labels`` to ``value``."""
        cell = self._cell(name, labels, "gauge")
        with self._lock:
            cell.value = float(value)

    def observe(
        self,
        name: MetricName,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        count: int = 1,
    ) -> None:
        """Record ``count`` observations of ``value`` in histogram ``name``."""
        cell = self._histogram_cell(name, labels)
        _check_observation(value, count)
        with self._lock:
            cell.observe(value, count)

    def observe_many(
        self, name: MetricName, values: Iterable[float], labels: Mapping[str, str] | None = None
    ) -> None:
        """Record each of ``values`` in histogram ``name``."""
        BoundHistogram(self._histogram_cell(name, labels), self._lock).observe_many(values)

    def counter(self, name: MetricName, labels: Mapping[str, str] | None = None) -> BoundCounter:
        """A handle on one counter series (validated now, not on every ``add``)."""
        return BoundCounter(self._cell(name, labels, "counter"), self._lock)

    def gauge(self, name: MetricName, labels: Mapping[str, str] | None = None) -> BoundGauge:
        """A handle on one gauge series."""
        return BoundGauge(self._cell(name, labels, "gauge"), self._lock)

    def histogram(
        self, name: MetricName, labels: Mapping[str, str] | None = None
    ) -> BoundHistogram:
        """A handle on one histogram series."""
        return BoundHistogram(self._histogram_cell(name, labels), self._lock)

    # -- reading --------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A consistent copy of every series, as plain data (safe to pickle and send)."""
        with self._lock:
            self._seq += 1
            snap = empty_snapshot(self.source, self.instance, self._seq)
            for name, series in self._cells.items():
                kind = self._catalog[name].kind
                target = snap["counters"] if kind == "counter" else snap["gauges"]
                target[name] = {values: cell.value for values, cell in series.items()}
            for name, hseries in self._histograms.items():
                snap["histograms"][name] = {
                    values: HistogramPoint(tuple(cell.counts), cell.sum, cell.count)
                    for values, cell in hseries.items()
                }
        return snap


# --------------------------------------------------------------------------- merging


def _add_histograms(a: HistogramPoint, b: HistogramPoint) -> HistogramPoint:
    return HistogramPoint(
        tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True)),
        a.sum + b.sum,
        a.count + b.count,
    )


def _validate(snapshot: Snapshot, catalog: Mapping[str, MetricSpec]) -> None:
    """Reject a snapshot the catalog cannot render (e.g. from a different code version)."""
    where = f"snapshot from {snapshot['source']!r}"
    sections: tuple[tuple[MetricKind, Mapping[str, Mapping[LabelValues, object]]], ...] = (
        ("counter", snapshot["counters"]),
        ("gauge", snapshot["gauges"]),
        ("histogram", snapshot["histograms"]),
    )
    for kind, metrics in sections:
        for name, series in metrics.items():
            spec = catalog.get(name)
            if spec is None or spec.kind != kind:
                raise ValueError(f"{where}: {name} is not a {kind} in the catalog")
            for values in series:
                if len(values) != len(spec.labels):
                    raise ValueError(f"{where}: {name} needs labels {spec.labels}, got {values}")
    for name, hseries in snapshot["histograms"].items():
        want = len(catalog[name].buckets) + 1
        for point in hseries.values():
            if len(point.bucket_counts) != want:
                raise ValueError(
                    f"{where}: {name} has {len(point.bucket_counts)} buckets, the catalog {want}"
                )


def merge_snapshots(
    snapshots: Iterable[Snapshot], *, catalog: Mapping[str, MetricSpec] = CATALOG
) -> Snapshot:
    """Combine snapshots: counters and histograms summed, gauges per ``aggregate``."""
    merged = empty_snapshot("merged")
    gauge_values: dict[str, dict[LabelValues, list[float]]] = {}
    for snap in snapshots:
        for name, series in snap["counters"].items():
            into = merged["counters"].setdefault(name, {})
            for values, value in series.items():
                into[values] = into.get(values, 0.0) + value
        for name, hseries in snap["histograms"].items():
            hinto = merged["histograms"].setdefault(name, {})
            for values, point in hseries.items():
                prior = hinto.get(values)
                hinto[values] = point if prior is None else _add_histograms(prior, point)
        for name, series in snap["gauges"].items():
            ginto = gauge_values.setdefault(name, {})
            for values, value in series.items():
                ginto.setdefault(values, []).append(value)
    for name, gseries in gauge_values.items():
        how = catalog[name].aggregate
        out = merged["gauges"][name] = {}
        for values, seen in gseries.items():
            if how == "sum":
                out[values] = math.fsum(seen)
            elif how == "max":
                out[values] = max(seen)
            elif how == "min":
                out[values] = min(seen)
            else:
                out[values] = math.fsum(seen) / len(seen)
    return merged


class Aggregator:
    """Latest snapshot per source, merged on demand. Thread-safe.

    Counts of a source that restarted (its recorder ``instance`` changed) or that was
    :meth:`forget`-ten are retired into a running total rather than lost, so the merged
    counters and histograms only grow, as Prometheus expects; its gauges disappear.
    """

    def __init__(self, *, catalog: Mapping[str, MetricSpec] = CATALOG) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._latest: dict[str, Snapshot] = {}
        self._retired = empty_snapshot("retired")

    def update(self, snapshot: Snapshot) -> bool:
        """Take ``snapshot`` as its source's latest; ``False`` if it was older (ignored).

        ``ValueError`` if it names metrics, labels or buckets the catalog does not have.
        """
        _validate(snapshot, self._catalog)
        with self._lock:
            prior = self._latest.get(snapshot["source"])
            if prior is not None:
                if prior["instance"] == snapshot["instance"]:
                    if snapshot["seq"] <= prior["seq"]:
                        return False
                else:
                    self._retire(prior)
            self._latest[snapshot["source"]] = snapshot
            return True

    def forget(self, source: str) -> None:
        """Drop ``source`` (e.g. an actor removed for good), keeping what it counted."""
        with self._lock:
            prior = self._latest.pop(source, None)
            if prior is not None:
                self._retire(prior)

    def sources(self) -> list[str]:
        """The sources that reported, sorted."""
        with self._lock:
            return sorted(self._latest)

    def merged(self) -> Snapshot:
        """Everything summed or combined into one snapshot (source ``"merged"``)."""
        with self._lock:
            snaps = [self._retired, *self._latest.values()]
            return merge_snapshots(snaps, catalog=self._catalog)

    def _retire(self, snapshot: Snapshot) -> None:
        gone = empty_snapshot()
        gone["counters"] = snapshot["counters"]
        gone["histograms"] = snapshot["histograms"]
        self._retired = merge_snapshots([self._retired, gone], catalog=self._catalog)
        self._retired["source"] = "retired"


# --------------------------------------------------------------------------- serving


class _SnapshotReader(PrometheusMetricReader):
    """The exporter's reader, plus merged histograms added to each collection."""

    def __init__(self, server: MetricsServer, registry: CollectorRegistry) -> None:
        super().__init__(disable_target_info=True, scope_info_enabled=False, registry=registry)
        self._server = server
        self._received = False

    # MetricReader marks collect() @final; overriding it is the one place to notice that
    # the SDK skipped _receive_metrics (see below). It only adds to the base behaviour.
    def collect(self, timeout_millis: float = 10_000) -> None:  # type: ignore[misc]
        self._received = False
        super().collect(timeout_millis)
        if not self._received:
            # The SDK skips _receive_metrics when no instrument had a data point, which
            # would hide the histograms of a snapshot that holds nothing else.
            self._receive_metrics(MetricsData(resource_metrics=[]), timeout_millis)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._received = True
        metrics: list[Metric] = []
        resource = Resource.get_empty()
        if metrics_data is not None:
            for rm in metrics_data.resource_metrics:
                resource = rm.resource
                for sm in rm.scope_metrics:
                    metrics.extend(sm.metrics)
        metrics.extend(self._server._histogram_metrics())
        scope = InstrumentationScope("shipper.telemetry")
        data = MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource,
                    scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )
        super()._receive_metrics(data, timeout_millis, **kwargs)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: MetricsServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "kafka-log-shipper-telemetry"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        owner = self.server.owner
        if path == "/metrics":
            try:
                body = owner.render()
            except Exception as exc:
                _log.exception("rendering /metrics failed")
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, f"metrics unavailable: {exc}\n")
                return
            self._reply(HTTPStatus.OK, body, CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/healthz":
            ok, reason = owner.check_health()
            self._reply(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason + "\n")
        elif path == "/ready":
            ok, reason = owner.check_ready()
            self._reply(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, reason + "\n")
        else:
            self._reply(HTTPStatus.NOT_FOUND, "not found: try /metrics, /healthz or /ready\n")

    def _reply(
        self, status: HTTPStatus, body: str | bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every few seconds would flood stderr; keep them at debug level.
        _log.debug("%s " + format, self.address_string(), *args)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/ready`` on one HTTP port, served from a thread.

    ``collect`` returns the merged snapshot to show (typically ``Aggregator.merged``);
    it is called once per scrape. ``health`` says whether the process works and
    ``ready`` whether it can deliver, with a reason shown in the response body. The
    socket is bound in the constructor (``port=0`` picks a free port, see
    :attr:`port`); :meth:`start` begins serving and :meth:`close` stops. Also a
    context manager that starts and closes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        collect: Callable[[], Snapshot],
        health: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
        *,
        catalog: Mapping[str, MetricSpec] = CATALOG,
    ) -> None:
        self._collect = collect
        self._health = health
        self._ready = ready
        self._catalog = catalog
        self._render_lock = threading.Lock()
        self._current: Snapshot | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

        self._registry = CollectorRegistry()
        self._reader = _SnapshotReader(self, self._registry)
        self._provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.get_empty(),
            shutdown_on_exit=False,
        )
        meter = self._provider.get_meter("shipper.telemetry")
        for spec in catalog.values():
            if spec.kind == "counter":
                meter.create_observable_counter(
                    spec.name, [self._callback(spec)], spec.unit, spec.description
                )
            elif spec.kind == "gauge":
                meter.create_observable_gauge(
                    spec.name, [self._callback(spec)], spec.unit, spec.description
                )

        # An IPv6 literal such as "::" or "::1" needs an AF_INET6 socket.
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            self._http = server_class((host, port), _Handler)
        except BaseException:
            self._provider.shutdown()
            raise
        self._http.owner = self

    # -- lifecycle --------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the socket is bound to."""
        return str(self._http.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when constructed with ``port=0``)."""
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        """Serve from a daemon thread; returns ``self``. Non-blocking."""
        if self._closed:
            raise RuntimeError("MetricsServer is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._http.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"metrics-server:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release the port and shut the meter provider down. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._http.shutdown()  # blocks until serve_forever returns
            self._thread.join()
        self._http.server_close()
        self._provider.shutdown()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- content ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of one fresh merged snapshot."""
        with self._render_lock:  # one collection at a time: callbacks share _current
            self._current = self._collect()
            try:
                return generate_latest(self._registry)
            finally:
                self._current = None

    def check_health(self) -> tuple[bool, str]:
        """``(ok, text)`` for ``/healthz``; an exception in ``health`` counts as unhealthy."""
        try:
            ok = bool(self._health())
        except Exception as exc:
            return False, f"unhealthy: {exc}"
        return (True, "ok") if ok else (False, "unhealthy")

    def check_ready(self) -> tuple[bool, str]:
        """``(ok, reason)`` for ``/ready``; an exception in ``ready`` counts as not ready."""
        try:
            ok, reason = self._ready()
        except Exception as exc:
            return False, f"not ready: {exc}"
        return bool(ok), reason or ("ready" if ok else "not ready")

    def _callback(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterator[Observation]:
            snap = self._current
            if snap is None:
                return
            section = snap["counters"] if spec.kind == "counter" else snap["gauges"]
            for values, value in section.get(spec.name, {}).items():
                yield Observation(value, dict(zip(spec.labels, values, strict=True)))

        return observe

    def _histogram_metrics(self) -> list[Metric]:
        snap = self._current
        if snap is None:
            return []
        out: list[Metric] = []
        for name, series in snap["histograms"].items():
            spec = self._catalog[name]
            points = [
                HistogramDataPoint(
                    attributes=dict(zip(spec.labels, values, strict=True)),
                    start_time_unix_nano=0,
                    time_unix_nano=0,
                    count=point.count,
                    sum=point.sum,
                    bucket_counts=list(point.bucket_counts),
                    explicit_bounds=list(spec.buckets),
                    # min and max are not part of the Prometheus exposition
                    min=math.nan,
                    max=math.nan,
                )
                for values, point in series.items()
            ]
            out.append(
                Metric(
                    name=spec.name,
                    description=spec.description,
                    unit=spec.unit,
                    data=Histogram(
                        data_points=points,
                        aggregation_temporality=AggregationTemporality.CUMULATIVE,
                    ),
                )
            )
        return out
