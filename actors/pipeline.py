"""The driver-side ``Shipper``: starts the actors, takes submissions, tracks acks.

::

    with Shipper("config.yaml") as s:          # joins Ray (RAY_ADDRESS) or starts it
        ack = s.submit([{"message": "hi", "level": "info"}])
        print(ack.result().summary())          # blocks until every entry has an outcome
    print(s.stats().table())

``submit`` returns at once with an :class:`Ack` unless ``max_inflight_submissions``
are already in flight, in which case it waits for the oldest: that is the
backpressure a caller feels. ``close`` stops intake, flushes every Batcher and
Producer, waits for outstanding acks up to the drain timeout and reports what was
still in flight.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from shipper.config import ShipperConfig, check_files, load_config
from shipper.entries import LogEntry
from shipper.errors import BackpressureError, ConfigError, ShutdownError
from shipper.outcomes import EntryFailure, SubmissionResult

from .dlq import get_dlq
from .payload import STORE_MIN_BYTES, Stored
from .producer import start_producer
from .router import start_router
from .supervisor import start_supervisor
from .telemetry import start_telemetry

__all__ = ["Ack", "CloseReport", "RunStats", "Shipper"]

log = logging.getLogger("shipper")


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float:
    """Weighted percentile of (value, weight) pairs: each value counts ``weight`` times
    (0.0 when there are none)."""
    if not pairs:
        return 0.0
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    target = q * total
    acc = 0
    for v, w in pairs:
        acc += w
        if acc >= target:
            return v
    return pairs[-1][0]


@dataclass
class RunStats:
    """Per-run figures of a Shipper (only settled submissions are counted)."""

    entries_in: int = 0
    delivered_by_topic: Counter[str] = field(default_factory=Counter)
    dlq: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    submissions: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _latencies: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def delivered(self) -> int:
        return sum(self.delivered_by_topic.values())

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Delivered entries per second over the run."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, q: float) -> float:
        """Seconds from submit to the last Kafka ack of a submission, ``q`` in [0, 1]."""
        return weighted_percentile(self._latencies, q)

    def record(self, r: SubmissionResult) -> None:
        self.submissions += 1
        self.entries_in += r.submitted
        self.delivered_by_topic.update(r.delivered_by_topic)
        self.dlq += r.dlq
        self.failed_by_reason.update(f.reason for f in r.failures)
        if r.submitted:
            self._latencies.append((r.latency, r.submitted))

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries_in": self.entries_in,
            "delivered": self.delivered,
            "delivered_by_topic": dict(self.delivered_by_topic),
            "dlq": self.dlq,
            "failed": self.failed,
            "failed_by_reason": dict(self.failed_by_reason),
            "submissions": self.submissions,
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1),
            "latency_p50_ms": round(self.latency(0.50) * 1000, 2),
            "latency_p95_ms": round(self.latency(0.95) * 1000, 2),
            "latency_p99_ms": round(self.latency(0.99) * 1000, 2),
        }

    def table(self) -> str:
        rows = [("entries in", f"{self.entries_in:,}"), ("delivered", f"{self.delivered:,}")]
        for topic, n in sorted(self.delivered_by_topic.items()):
            rows.append((f"  to {topic}", f"{n:,}"))
        rows.append(("to the DLQ", f"{self.dlq:,}"))
        rows.append(("failed", f"{self.failed:,}"))
        for reason, n in sorted(self.failed_by_reason.items()):
            rows.append((f"  {reason}", f"{n:,}"))
        rows += [
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("rate", f"{self.rate:,.0f} entries/s"),
            (
                "ack latency p50/p95/p99",
                f"{self.latency(0.5) * 1000:.1f} / {self.latency(0.95) * 1000:.1f} / "
                f"{self.latency(0.99) * 1000:.1f} ms",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass
class CloseReport:
    drained: bool
    in_flight_submissions: int
    in_flight_entries: int
    stats: RunStats

    def __str__(self) -> str:
        if self.drained:
            return "closed: every submission has an outcome"
        return (
            f"closed with {self.in_flight_submissions} submissions "
            f"({self.in_flight_entries} entries) still in flight after the drain timeout"
        )


class Ack:
    """The acknowledgement of one submission: resolves when every entry has an outcome."""

    def __init__(self, shipper: Shipper, ref: Any, size: int) -> None:
        self._shipper = shipper
        self.ref = ref
        self.size = size
        self._result: SubmissionResult | None = None

    def done(self) -> bool:
        if self._result is not None:
            return True
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self, timeout: float | None = None) -> SubmissionResult:
        """Block until the outcome is known (``TimeoutError`` after ``timeout``)."""
        if self._result is None:
            self._shipper._settle(self, timeout)
        assert self._result is not None
        return self._result

    def __repr__(self) -> str:
        state = self._result.summary() if self._result is not None else "pending"
        return f"Ack({self.size} entries: {state})"


class Shipper:
    """Ships log entries to Kafka through Router, Batcher and Producer actors."""

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | ShipperConfig,
        *,
        ray_address: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.config = load_config(config if not isinstance(config, Mapping) else dict(config))
        sink = self.config.sinks.kafka
        if not sink.enabled:
            raise ConfigError(
                ["sinks.kafka.enabled: the Kafka sink is disabled; set enabled: true"]
            )
        problems = check_files(self.config)
        if problems:
            raise ConfigError(problems)
        if not ray.is_initialized():
            ray.init(
                address=ray_address or os.environ.get("RAY_ADDRESS") or None,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
        self.namespace = namespace or f"shipper-{uuid.uuid4().hex[:8]}"
        pipe = self.config.pipeline
        broker_set = sink.broker_set_id()
        m = self.config.metrics
        self._telemetry = start_telemetry(self.namespace, m.host, m.port) if m.enabled else None
        #: The Prometheus scrape URL (``None`` when metrics are disabled).
        self.metrics_url: str | None = None
        if self._telemetry is not None:
            self.metrics_url = str(ray.get(self._telemetry.url.remote())) + "/metrics"
        self._producers = [
            start_producer(sink, broker_set, i, self.namespace, self._telemetry)
            for i in range(pipe.producer_replicas)
        ]
        cb = sink.circuit_breaker
        self._supervisor = start_supervisor(
            self.namespace,
            cb.failure_threshold,
            cb.success_threshold,
            cb.timeout,
            self._telemetry,
        )
        self._dlq = None
        if sink.dlq_config.enabled:
            d = sink.dlq_config
            r = d.reprocessing_config
            self._dlq = get_dlq(
                self.namespace,
                {
                    "path": str(Path(d.path).resolve()),
                    "map_size": d.map_size_bytes,
                    "max_disk_bytes": d.max_disk_bytes,
                    "reprocess_enabled": r.enabled,
                    "interval": r.interval,
                    "max_retries": r.max_retries,
                    "batch_size": r.batch_size,
                    "telemetry": self._telemetry,
                },
            )
        self._router = start_router(
            sink, self._producers, self.namespace, self._supervisor, self._dlq, self._telemetry
        )
        if self._dlq is not None:
            ray.get(self._dlq.attach.remote(self._router))
            ray.get(self._supervisor.register_dlq.remote(self._dlq))
            # Whatever an earlier run left in the DLQ is replayed from the start.
            ray.get(self._dlq.kick.remote())
        self._max_inflight = pipe.max_inflight_submissions
        # Entries in flight from this driver stay below the queue's warning band, so a
        # small queue_size slows submit() down instead of filling the queue to the
        # shedding threshold with this driver's own entries (one submission always goes).
        # Never below batch_size, or no batch could fill and every flush would wait
        # out batch_timeout.
        bp = sink.backpressure_config
        self._entry_budget = pipe.max_inflight_entries or max(
            sink.batch_size, int(sink.queue_size * bp.queue_warning_threshold)
        )
        self._inflight_entries = 0
        self._inflight: dict[Any, Ack] = {}
        self._closed = False
        self._stats = RunStats()
        self._source = uuid.uuid4().hex[:12]
        self._dlq_full = False
        self._seq = 0
        # Make sure the actors are up (and the config usable) before the first submit.
        ray.get(self._router.stats.remote())
        ray.get([p.health.remote() for p in self._producers])

    # ------------------------------------------------------------------ submit

    def submit(self, entries: Iterable[LogEntry | Mapping[str, Any] | str]) -> Ack:
        """Submit Python objects (dicts, ``LogEntry`` or plain strings) as one submission."""
        batch = list(entries)
        return self._submit(
            len(batch), lambda t, order: self._router.submit_objects.remote(batch, t, order)
        )

    def submit_lines(self, lines: bytes | list[bytes], first_line: int = 1) -> Ack:
        """Submit raw input: JSON lines or text lines, as one newline-separated blob or a
        list of lines. ``first_line`` numbers the lines in error messages."""
        size = (
            lines.count(b"\n") + (0 if lines.endswith(b"\n") else 1)
            if isinstance(lines, bytes)
            else len(lines)
        )
        payload: bytes | list[bytes] | Stored = lines
        if isinstance(lines, bytes) and len(lines) >= STORE_MIN_BYTES:
            # Into the object store once; the Router reads it and, when every line is
            # canonical, the Producer reads the very same object (actors.payload).
            payload = Stored.put(lines)
        return self._submit(
            size, lambda t, order: self._router.submit_lines.remote(payload, t, first_line, order)
        )

    def _submit(self, size: int, call: Any) -> Ack:
        if self._closed:
            raise ShutdownError("the shipper is closed; create a new Shipper to submit more")
        timeout = self.config.pipeline.submit_timeout
        deadline = time.monotonic() + timeout
        while len(self._inflight) >= self._max_inflight or (
            self._inflight and self._inflight_entries + size > self._entry_budget
        ):
            left = deadline - time.monotonic()
            ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=max(0.0, left))
            if not ready:
                raise BackpressureError(
                    f"the pipeline took no new submission for {timeout:.0f}s "
                    f"({len(self._inflight)} in flight); Kafka is slow or down. The entries "
                    "were not accepted: submit them again later"
                )
            self._settle(self._inflight[ready[0]], None)
        if self._dlq_full and self._dlq is not None:
            # Kafka refused entries and the DLQ could not take them: accept nothing
            # more until the DLQ has room again (or the submit timeout passes).
            while not ray.get(self._dlq.has_room.remote()):
                if time.monotonic() >= deadline:
                    raise BackpressureError(
                        "the DLQ's disk budget is used up and Kafka is not taking entries; "
                        "nothing more is accepted. Free space with `shipper dlq replay` or "
                        "`shipper dlq purge`, or raise dlq_config.max_disk_bytes"
                    )
                time.sleep(0.2)
            self._dlq_full = False
        order = (self._source, self._seq)
        self._seq += 1
        ack = Ack(self, call(time.time(), order), size)
        self._inflight[ack.ref] = ack
        self._inflight_entries += size
        return ack

    def _settle(self, ack: Ack, timeout: float | None) -> None:
        if ack._result is not None:
            return
        try:
            result: SubmissionResult = ray.get(ack.ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as exc:
            raise TimeoutError(
                f"submission of {ack.size} entries not settled in {timeout}s"
            ) from exc
        except ray.exceptions.RayError as exc:
            # The Router died with the submission: report every entry, drop none.
            result = SubmissionResult(
                submitted=ack.size,
                failures=[EntryFailure("error", f"router failed: {exc}")] * ack.size,
            )
        ack._result = result
        if self._inflight.pop(ack.ref, None) is not None:
            self._inflight_entries -= ack.size
        self._stats.record(result)
        if any("not dead-lettered" in f.error for f in result.failures):
            self._dlq_full = True

    # ------------------------------------------------------------------ control

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for every outstanding ack."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Numbered like a submission, so the Router flushes after every earlier one.
        order = (self._source, self._seq)
        self._seq += 1
        ray.get(self._router.flush.remote(order), timeout=timeout)
        for ack in list(self._inflight.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._settle(ack, left)

    def stats(self) -> RunStats:
        # Pick up acks that finished meanwhile, without blocking.
        if self._inflight:
            ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
            for ref in ready:
                self._settle(self._inflight[ref], None)
        return self._stats

    def queue_stats(self) -> list[dict[str, Any]]:
        """Per-topic Batcher figures (queued entries, utilization, partitions)."""
        return list(ray.get(self._router.batcher_stats.remote()))

    def close(self, timeout: float | None = None) -> CloseReport:
        """Stop intake, flush, wait for acks up to ``timeout`` (default: the drain
        timeout), stop the actors and report what was still in flight."""
        if self._closed:
            return CloseReport(True, 0, 0, self._stats)
        self._closed = True
        timeout = self.config.pipeline.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        order = (self._source, self._seq)
        self._seq += 1
        try:
            ray.get(self._router.flush.remote(order), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            pass
        for ack in list(self._inflight.values()):
            try:
                self._settle(ack, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        left = list(self._inflight.values())
        report = CloseReport(
            drained=not left,
            in_flight_submissions=len(left),
            in_flight_entries=sum(a.size for a in left),
            stats=self._stats,
        )
        self._stats.finished = time.monotonic()
        try:
            ray.get([p.close.remote(5.0) for p in self._producers], timeout=15)
        except ray.exceptions.RayError:
            pass
        self._kill_actors()
        if left:
            log.warning("%s", report)
        return report

    def dlq_count(self) -> int:
        """Records in this node's DLQ (0 when the DLQ is disabled)."""
        return 0 if self._dlq is None else int(ray.get(self._dlq.count.remote()))

    def reprocess_dlq(self, **kw: Any) -> dict[str, int]:
        """Run one DLQ reprocessing pass now and return its counts."""
        if self._dlq is None:
            return {}
        return dict(ray.get(self._dlq.reprocess.remote(**kw)))

    def breaker_states(self) -> dict[str, dict[str, Any]]:
        """Per broker set: state (0 closed, 1 open, 2 half-open), opens, retry time."""
        return dict(ray.get(self._supervisor.states.remote()))

    def breaker_history(self) -> list[tuple[float, str, int, int]]:
        """Every breaker transition so far: (wall time, broker set, old, new)."""
        return list(ray.get(self._supervisor.history.remote()))

    def dlq_stats(self) -> Any:
        """This node's DLQ figures (``shipper.dlq.DlqStats``), or None without a DLQ."""
        return None if self._dlq is None else ray.get(self._dlq.stats.remote())

    def _kill_actors(self) -> None:
        if self._dlq is not None:
            try:
                ray.get(self._dlq.close.remote(), timeout=10)
            except ray.exceptions.RayError:
                pass
        handles = [self._router, *self._producers, self._supervisor]
        if self._dlq is not None:
            handles.append(self._dlq)
        try:
            stats = ray.get(self._router.batcher_stats.remote(), timeout=5)
            for s in stats:
                handles.append(ray.get_actor(f"batcher:{s['topic']}", namespace=self.namespace))
        except (ray.exceptions.RayError, ValueError):
            pass
        if self._telemetry is not None:
            handles.append(self._telemetry)  # last: it serves the final figures
        for h in handles:
            try:
                ray.kill(h, no_restart=True)
            except (ray.exceptions.RayError, ValueError):
                pass

    def __enter__(self) -> Shipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        sink = self.config.sinks.kafka
        return (
            f"Shipper(topic={sink.topic!r}, brokers={len(sink.brokers)}, "
            f"namespace={self.namespace!r})"
        )
