"""The driver-side ``Shipper``: starts the actors, takes submissions, tracks acks.

::

    with Shipper("config.yaml") as s:          # joins Ray (RAY_ADDRESS) or starts it
        ack = s.submit([{"message": "hi", "level": "info"}])
        print(ack.result().summary())          # blocks until every entry has an outcome
    print(s.stats().table())

``submit`` returns at once with an :class:`Ack` unless the in-flight budget is used
up (:class:`shipper.submissions.SubmissionTracker`), in which case it waits for the
oldest: that is the backpressure a caller feels. ``close`` stops intake, flushes
every Batcher and Producer, waits for outstanding acks up to the drain timeout and
reports what was still in flight.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ray

from shipper.config import ShipperConfig, check_files, load_config
from shipper.dlq import DlqStats
from shipper.entries import LogEntry
from shipper.errors import BackpressureError, ConfigError, ShutdownError, brief
from shipper.outcomes import SubmissionResult
from shipper.submissions import CloseReport, RunStats, SubmissionTracker, lost_submission

from .dlq import start_dlq
from .handles import Order, Ref
from .payload import STORE_MIN_BYTES, Stored
from .producer import start_producer
from .router import start_router
from .sources import start_file_source, start_http_source
from .supervisor import start_supervisor
from .telemetry import start_telemetry
from .wiring import Wiring

__all__ = ["Ack", "CloseReport", "RunStats", "Shipper"]

log = logging.getLogger("shipper")


class Ack:
    """The acknowledgement of one submission: resolves when every entry has an outcome."""

    def __init__(self, shipper: Shipper, ref: Ref[SubmissionResult], size: int) -> None:
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


def _ensure_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    ray.init(
        # "local" starts a Ray of our own; a bare ray.init() would try to join
        # whatever cluster an earlier session recorded, even a dead one.
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )


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
        _ensure_ray(ray_address)
        self.namespace = namespace or f"shipper-{uuid.uuid4().hex[:8]}"
        self.wiring = Wiring(self.namespace, self.config)
        node_id = ray.get_runtime_context().get_node_id()
        m = self.config.metrics
        self._telemetry = (
            start_telemetry(self.namespace, m.host, m.port, node_id=node_id) if m.enabled else None
        )
        #: The Prometheus scrape URL (``None`` when metrics are disabled).
        self.metrics_url: str | None = None
        if self._telemetry is not None:
            self.metrics_url = str(ray.get(self._telemetry.url.remote())) + "/metrics"
        self._supervisor = start_supervisor(self.wiring)
        # Up before the others: it tells a restart from a first start by the names it
        # has seen, so it must see every first start (see actors.supervisor).
        ray.get(self._supervisor.states.remote())
        self._producers = [
            start_producer(self.wiring, i) for i in range(self.config.pipeline.producer_replicas)
        ]
        self._dlq = start_dlq(self.wiring, node_id) if sink.dlq_config.enabled else None
        self._router = start_router(self.wiring)
        # The default topic's Batcher starts with the pipeline (so the driver owns it,
        # and the first submission or DLQ replay does not wait for a process to
        # start); Batchers of other topics start when an entry first goes there.
        self._default_batcher = self.wiring.batcher(sink.topic)
        pipe = self.config.pipeline
        # Entries in flight from this driver stay below the queue's warning band (see
        # SubmissionTracker); never below batch_size, or no batch could fill and every
        # flush would wait out batch_timeout.
        bp = sink.backpressure_config
        budget = pipe.max_inflight_entries or max(
            sink.batch_size, int(sink.queue_size * bp.queue_warning_threshold)
        )
        self._tracker: SubmissionTracker[Any] = SubmissionTracker(
            pipe.max_inflight_submissions, budget
        )
        self._acks: dict[Any, Ack] = {}
        self._sources: dict[str, Any] = {}
        #: What the sources did, once stopped (lines, blocks, resends).
        self.source_counts: dict[str, int] = {}
        #: The HTTP intake's URL once started (``start_sources``), else None.
        self.http_url: str | None = None
        self._closed = False
        # Make sure the actors are up (and the config usable) before the first submit.
        ray.get(self._router.stats.remote())
        ray.get([p.health.remote() for p in self._producers])
        ray.get(self._default_batcher.stats.remote())
        if self._dlq is not None:
            # Whatever an earlier run left in the DLQ is replayed from the start.
            ray.get(self._dlq.kick.remote())

    # ------------------------------------------------------------------ submit

    def submit(self, entries: Iterable[LogEntry | Mapping[str, Any] | str]) -> Ack:
        """Submit Python objects (dicts, ``LogEntry`` or plain strings) as one submission."""
        batch = list(entries)
        return self._submit(
            len(batch), lambda t, order: self._router.submit_objects.remote(batch, t, order)
        )

    def submit_lines(
        self,
        lines: bytes | list[bytes],
        first_line: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> Ack:
        """Submit raw input: JSON lines or text lines, as one newline-separated blob or a
        list of lines. ``first_line`` numbers the lines in error messages; ``labels`` are
        added to every entry (an entry's own label of the same name wins)."""
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
            size,
            lambda t, order: self._router.submit_lines.remote(
                payload, t, first_line, order, dict(labels) if labels else None
            ),
        )

    def _submit(self, size: int, call: Callable[[float, Order], Ref[SubmissionResult]]) -> Ack:
        if self._closed:
            raise ShutdownError("the shipper is closed; create a new Shipper to submit more")
        timeout = self.config.pipeline.submit_timeout
        deadline = time.monotonic() + timeout
        tracker = self._tracker
        while not tracker.has_room(size):
            left = deadline - time.monotonic()
            ready, _ = ray.wait(tracker.keys(), num_returns=1, timeout=max(0.0, left))
            if not ready:
                raise BackpressureError(
                    f"the pipeline took no new submission for {timeout:.0f}s "
                    f"({tracker.in_flight} in flight); Kafka is slow or down. The entries "
                    "were not accepted: submit them again later"
                )
            self._settle(self._acks[ready[0]], None)
        if tracker.dlq_full and self._dlq is not None:
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
            tracker.dlq_full = False
        ack = Ack(self, call(time.time(), tracker.next_order()), size)
        tracker.add(ack.ref, size)
        self._acks[ack.ref] = ack
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
            # The Router died with the submission: report every entry, drop none, and
            # number the next calls afresh (the restarted Router never saw ours).
            result = lost_submission(ack.size, f"router failed: {brief(exc)}")
            self._tracker.new_sender()
        ack._result = result
        self._acks.pop(ack.ref, None)
        self._tracker.settle(ack.ref, result)

    # ------------------------------------------------------------------ control

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for every outstanding ack."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Numbered like a submission, so the Router flushes after every earlier one.
        ray.get(self._router.flush.remote(self._tracker.next_order()), timeout=timeout)
        for ack in list(self._acks.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._settle(ack, left)

    def stats(self) -> RunStats:
        # Pick up acks that finished meanwhile, without blocking.
        keys = self._tracker.keys()
        if keys:
            ready, _ = ray.wait(keys, num_returns=len(keys), timeout=0)
            for ref in ready:
                self._settle(self._acks[ref], None)
        return self._tracker.stats

    def queue_stats(self) -> list[dict[str, Any]]:
        """Per-topic Batcher figures (queued entries, utilization, partitions)."""
        stats: list[dict[str, Any]] = ray.get(self._router.batcher_stats.remote())
        return stats

    def close(self, timeout: float | None = None) -> CloseReport:
        """Stop intake and drain: flush, wait for acks up to ``timeout`` (default: the
        drain timeout). What is still queued then is parked in the DLQ (reason
        ``shutdown``), so a stop leaves every entry in Kafka or the DLQ; then the actors
        stop. The report says whether everything settled and what was parked."""
        if self._closed:
            return self._tracker.report()
        self._closed = True
        timeout = self.config.pipeline.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stop_reading()
        try:
            ray.get(self._router.flush.remote(self._tracker.next_order()), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            pass
        self._settle_until(deadline)
        while self._sources_in_flight() and time.monotonic() < deadline:
            time.sleep(0.2)
        parked = 0
        if self._tracker.in_flight or self._sources_in_flight():
            parked = self._park()
        self.source_counts.update(self.stop_sources())
        self._tracker.finish()
        report = self._tracker.report(parked)
        try:
            ray.get([p.close.remote(5.0) for p in self._producers], timeout=15)
        except ray.exceptions.RayError:
            pass
        self._kill_actors()
        if not report.drained:
            log.warning("%s", report)
        return report

    def _settle_until(self, deadline: float) -> None:
        for ack in list(self._acks.values()):
            try:
                self._settle(ack, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break

    def _park(self) -> int:
        """Past the drain timeout: queued entries go to the DLQ (``shutdown``), and the
        Producers drop what they still hold into it the same way (librdkafka purges
        on close). Returns the entries parked from the queues."""
        log.warning(
            "drain timeout: %d submissions (%d entries) still in flight; parking what is "
            "queued in the DLQ",
            self._tracker.in_flight,
            self._tracker.in_flight_entries,
        )
        parked = 0
        try:
            batchers = [self.wiring.batcher(t) for t in self.wiring.topics()]
            parked = sum(ray.get([b.park.remote() for b in batchers], timeout=30))
            ray.get([p.close.remote(1.0) for p in self._producers], timeout=30)
        except ray.exceptions.RayError as exc:
            log.warning("parking at shutdown failed: %s", brief(exc))
        self._settle_until(time.monotonic() + 30)
        return int(parked)

    # ------------------------------------------------------------------ sources

    def start_sources(self) -> list[str]:
        """Start the config's sources on this node (files, HTTP); what was started."""
        src = self.config.sources
        node_id = ray.get_runtime_context().get_node_id()
        started: list[str] = []
        # Both actors start at once (a worker process each); then both are waited for.
        if src.files:
            self._sources["files"] = start_file_source(self.wiring, node_id)
        if src.http.enabled:
            env_name = src.http.auth_token_env
            env = {env_name: os.environ[env_name]} if env_name and env_name in os.environ else None
            self._sources["http"] = start_http_source(self.wiring, node_id, env)
        answers = ray.get([h.start.remote() for h in self._sources.values()])
        for kind, answer in zip(self._sources, answers, strict=True):
            if kind == "files":
                patterns = ", ".join(p for g in src.files for p in g.paths)
                started.append(f"following {patterns}")
            else:
                self.http_url = f"{answer}/v1/logs"
                started.append(f"HTTP intake at {self.http_url}")
        return started

    def _stop_reading(self) -> None:
        for name, handle in self._sources.items():
            try:
                ray.get(handle.stop_reading.remote(), timeout=10)
            except ray.exceptions.RayError as exc:
                log.warning("stopping the %s source failed: %s", name, brief(exc))

    def _sources_in_flight(self) -> int:
        files = self._sources.get("files")
        if files is None:
            return 0
        try:
            return int(ray.get(files.stop_reading.remote(), timeout=10))
        except ray.exceptions.RayError:
            return 0

    def stop_sources(self) -> dict[str, int]:
        """Stop the sources: no more input; the file source waits for what it handed
        over and writes its positions. Returns what the sources did (also kept in
        :attr:`source_counts`)."""
        out: dict[str, int] = {}
        self._stop_reading()
        files = self._sources.pop("files", None)
        self._sources.pop("http", None)
        if files is not None:
            try:
                done = ray.get(files.finish.remote(30.0), timeout=60)
                out.update({f"file_{k}": v for k, v in done.items() if isinstance(v, int)})
                ray.get(files.close.remote(), timeout=10)
            except ray.exceptions.RayError as exc:
                log.warning("stopping the file source failed: %s", brief(exc))
        self.source_counts.update(out)
        return out

    def dlq_count(self) -> int:
        """Records in this node's DLQ (0 when the DLQ is disabled)."""
        return 0 if self._dlq is None else int(ray.get(self._dlq.count.remote()))

    def reprocess_dlq(self, **kw: Any) -> dict[str, int]:
        """Run one DLQ reprocessing pass now and return its counts."""
        if self._dlq is None:
            return {}
        return ray.get(self._dlq.reprocess.remote(**kw)).as_dict()

    def breaker_states(self) -> dict[str, dict[str, Any]]:
        """Per broker set: state (0 closed, 1 open, 2 half-open), opens, retry time."""
        states: dict[str, dict[str, Any]] = ray.get(self._supervisor.states.remote())
        return states

    def breaker_history(self) -> list[tuple[float, str, int, int]]:
        """Every breaker transition so far: (wall time, broker set, old, new)."""
        history: list[tuple[float, str, int, int]] = ray.get(self._supervisor.history.remote())
        return history

    def restarts(self) -> dict[str, int]:
        """Actor restarts the supervisor has seen, by component."""
        counts: dict[str, int] = ray.get(self._supervisor.restart_counts.remote())
        return counts

    def dlq_stats(self) -> DlqStats | None:
        """This node's DLQ figures, or None without a DLQ."""
        return None if self._dlq is None else ray.get(self._dlq.stats.remote())

    def _kill_actors(self) -> None:
        if self._dlq is not None:
            try:
                ray.get(self._dlq.close.remote(), timeout=10)
            except ray.exceptions.RayError:
                pass
        # The telemetry actor last: it serves the final figures.
        names = sorted(self.wiring.named(), key=lambda n: n == "telemetry")
        for name in names:
            try:
                ray.kill(ray.get_actor(name, namespace=self.namespace), no_restart=True)
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
