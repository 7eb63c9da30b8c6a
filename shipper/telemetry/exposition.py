"""The telemetry HTTP endpoint: ``/metrics``, ``/healthz`` and ``/ready``.

:class:`MetricsServer` serves from a daemon thread. A scrape asks for one merged
:class:`~shipper.telemetry.recorder.Snapshot` and renders it with a single
``prometheus_client.generate_latest`` over one ``CollectorRegistry`` that holds two
collectors, each reading that snapshot:

* OpenTelemetry's ``PrometheusMetricReader``, fed by a ``MeterProvider`` in which every
  catalog counter and gauge is an observable instrument (public API: the callbacks
  yield one ``Observation`` per series).
* :class:`_HistogramCollector`, a prometheus_client custom collector (its public
  ``collect()`` protocol) that yields one ``HistogramMetricFamily`` per histogram.

Why histograms bypass OpenTelemetry: its API has no asynchronous histogram, and the
histograms here are already aggregated (cumulative bucket counts summed over many
processes; one observation may stand for ``count`` entries). A synchronous
``Histogram`` could only be fed by replaying every entry that arrived since the last
scrape, one ``record()`` each (about 10 us apiece on the development machine), and
would still lose the exact sum, since ``record()`` takes values, not bucket counts.
The collector prints what the exporter printed for SDK histogram points: the same
family name and unit, label keys sorted, ``le`` written as ``str(bound)`` with
``+Inf`` last, cumulative bucket counts, ``_count`` equal to the ``+Inf`` bucket and
``_sum`` as recorded.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from shipper.telemetry.catalog import CATALOG, MetricSpec
from shipper.telemetry.recorder import Snapshot

__all__ = ["MetricsServer"]

_log = logging.getLogger(__name__)

# The catalog allows only "s", "1" and "{annotation}" units; of those the OpenTelemetry
# exporter turns "s" into "seconds" and drops the rest. Passing the same word keeps
# prometheus_client's view of the family (name suffix rule, OpenMetrics "# UNIT" line)
# the same as the exporter's.
_PROMETHEUS_UNITS: Mapping[str, str] = {"s": "seconds"}


def label_dict(spec: MetricSpec, values: tuple[str, ...]) -> dict[str, str]:
    """Label names and values of one merged series: the catalog's labels, led by
    ``node`` when the series came from a fleet node."""
    if len(values) == len(spec.labels) + 1:
        return {NODE: values[0], **dict(zip(spec.labels, values[1:], strict=True))}
    return dict(zip(spec.labels, values, strict=True))


NODE = "node"


@dataclass(frozen=True, slots=True)
class _HistogramShape:
    """What a histogram family looks like, worked out once per catalog entry."""

    spec: MetricSpec
    label_keys: tuple[str, ...]  # sorted, as the OpenTelemetry exporter orders them
    value_order: tuple[int, ...]  # where each sorted key sits in the snapshot's values
    le: tuple[str, ...]  # bucket upper bounds as printed, "+Inf" last

    @classmethod
    def of(cls, spec: MetricSpec, node: bool = False) -> _HistogramShape:
        names = (NODE, *spec.labels) if node else spec.labels
        keys = tuple(sorted(names))
        return cls(
            spec=spec,
            label_keys=keys,
            value_order=tuple(names.index(key) for key in keys),
            le=(*(f"{bound}" for bound in spec.buckets), "+Inf"),
        )


class _HistogramCollector(Collector):
    """The merged histograms of the snapshot being rendered, as prometheus_client families.

    Registered after the OpenTelemetry reader, so histograms follow the counters and
    gauges in the output, as they did when the exporter rendered them.
    """

    def __init__(
        self, current: Callable[[], Snapshot | None], catalog: Mapping[str, MetricSpec]
    ) -> None:
        self._current = current
        self._shapes = {
            name: _HistogramShape.of(spec)
            for name, spec in catalog.items()
            if spec.kind == "histogram"
        }
        self._node_shapes: dict[str, _HistogramShape] = {}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        snap = self._current()
        if snap is None:
            return
        for name, series in snap["histograms"].items():
            shape = self._shapes[name]
            spec = shape.spec
            if any(len(v) > len(spec.labels) for v in series):
                # Series of fleet nodes: one family with the node label; a series
                # without a node (none in a fleet) gets node="".
                shape = self._node_shapes.setdefault(name, _HistogramShape.of(spec, True))
                series = {
                    (v if len(v) > len(spec.labels) else ("", *v)): p for v, p in series.items()
                }
            family = HistogramMetricFamily(
                spec.name,
                spec.description,
                labels=shape.label_keys,
                unit=_PROMETHEUS_UNITS.get(spec.unit, ""),
            )
            for values, point in series.items():
                family.add_metric(
                    [values[i] for i in shape.value_order],
                    list(zip(shape.le, accumulate(point.bucket_counts), strict=True)),
                    point.sum,
                )
            yield family


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
            query = parse_qs(self.path.partition("?")[2])
            node = query.get("node", [None])[0]
            ok, reason = owner.check_ready() if node is None else owner.check_node_ready(node)
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
        node_ready: Callable[[str], tuple[bool, str]] | None = None,
        *,
        catalog: Mapping[str, MetricSpec] = CATALOG,
    ) -> None:
        self._collect = collect
        self._health = health
        self._ready = ready
        self._node_ready = node_ready
        self._render_lock = threading.Lock()
        self._current: Snapshot | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

        self._registry = CollectorRegistry()
        # The reader registers itself in the registry; the histogram collector goes in
        # second so that one generate_latest() renders both, in that order.
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self._registry
        )
        self._registry.register(_HistogramCollector(lambda: self._current, catalog))
        self._provider = MeterProvider(
            metric_readers=[reader],
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

    def check_node_ready(self, node: str) -> tuple[bool, str]:
        """``(ok, reason)`` for ``/ready?node=KEY``: whether that fleet node's pipeline
        runs (404-like "unknown" answers come back not ready)."""
        if self._node_ready is None:
            return False, "not ready: this endpoint knows no fleet nodes"
        try:
            return self._node_ready(node)
        except Exception as exc:
            return False, f"not ready: {exc}"

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
                yield Observation(value, label_dict(spec, values))

        return observe
