"""Recording figures inside one process, and merging the snapshots of many.

Nothing here knows about HTTP, OpenTelemetry or Ray; the types are plain data so a
snapshot can be pickled into a Ray call and merged anywhere.

* :class:`MetricsRecorder` is the per-actor store: cumulative counters, gauges and
  histogram buckets keyed by catalog name and label values, validated against
  :mod:`shipper.telemetry.catalog`. An update is a dict lookup plus an addition under a
  lock; :meth:`MetricsRecorder.counter`, ``gauge()`` and ``histogram()`` return handles
  (:class:`BoundCounter`, :class:`BoundGauge`, :class:`BoundHistogram`) that skip the
  lookup on hot paths.
* :class:`Snapshot` / :class:`HistogramPoint` are what ``snapshot()`` returns.
* :func:`merge_snapshots` sums counters and histogram buckets and combines gauges the
  way the catalog's ``aggregate`` says; :class:`Aggregator` keeps the latest snapshot
  of each source and retires the counts of restarted or forgotten sources so merged
  counters never decrease.
"""

from __future__ import annotations

import math
import threading
import uuid
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NotRequired, TypedDict

from shipper.telemetry.catalog import CATALOG, MetricKind, MetricName, MetricSpec

__all__ = [
    "Aggregator",
    "BoundCounter",
    "BoundGauge",
    "BoundHistogram",
    "HistogramPoint",
    "LabelValues",
    "MetricsRecorder",
    "Snapshot",
    "empty_snapshot",
    "merge_snapshots",
]

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
    #: The fleet node of the source; merged series then carry it as label ``node``.
    node: NotRequired[str]
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
                f"unknown metric {name!r}: declare it in shipper/telemetry/catalog.py first"
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
        # A source of a fleet node: its series are kept apart per node (the node's
        # key leads the label values; the exposition shows it as label "node").
        node = snap.get("node")
        tag = (node,) if node else ()
        for name, series in snap["counters"].items():
            into = merged["counters"].setdefault(name, {})
            for values, value in series.items():
                key = (*tag, *values)
                into[key] = into.get(key, 0.0) + value
        for name, hseries in snap["histograms"].items():
            hinto = merged["histograms"].setdefault(name, {})
            for values, point in hseries.items():
                key = (*tag, *values)
                prior = hinto.get(key)
                hinto[key] = point if prior is None else _add_histograms(prior, point)
        for name, series in snap["gauges"].items():
            ginto = gauge_values.setdefault(name, {})
            for values, value in series.items():
                ginto.setdefault((*tag, *values), []).append(value)
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
        if snapshot.get("node"):
            gone["node"] = snapshot["node"]  # its series stay apart per node
        gone["counters"] = snapshot["counters"]
        gone["histograms"] = snapshot["histograms"]
        self._retired = merge_snapshots([self._retired, gone], catalog=self._catalog)
        self._retired["source"] = "retired"
