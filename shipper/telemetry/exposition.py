"""The telemetry HTTP endpoint: ``/metrics``, ``/healthz`` and ``/ready``.

:class:`MetricsServer` serves from a daemon thread. Each scrape asks for one merged
:class:`~shipper.telemetry.recorder.Snapshot` and renders it through an OpenTelemetry
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

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

from shipper.telemetry.catalog import CATALOG, MetricSpec
from shipper.telemetry.recorder import Snapshot

__all__ = ["MetricsServer"]

_log = logging.getLogger(__name__)


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
