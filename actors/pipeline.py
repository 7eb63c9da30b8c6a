"""The driver-side ``Shipper``: starts the fleet, spreads submissions, tracks acks.

::

    with Shipper("config.yaml") as s:          # joins Ray (RAY_ADDRESS) or starts it
        ack = s.submit([{"message": "hi", "level": "info"}])
        print(ack.result().summary())          # blocks until every entry has an outcome
    print(s.stats().table())

The supervisor starts a node pipeline on every node ``fleet.nodes`` selects (one on
the driver's node by default). ``submit`` sends each submission to the pipeline with
the fewest entries in flight (:class:`actors.client.RouterClient`) and returns at once
with an :class:`Ack`, unless the in-flight budget is used up
(:class:`shipper.submissions.SubmissionTracker`): then it waits for the oldest, the
backpressure a caller feels. The driver keeps each payload until its
acknowledgement: a submission whose pipeline died with it (a lost node, a killed
Router) is sent again to another pipeline, counted in ``stats().resent`` (possible
duplicates), never reported twice. ``close`` stops intake, drains for the drain
timeout, parks what is still queued in the DLQ and reports.

The parts live apart: the submission path in :mod:`actors.sender`, the client-side
router in :mod:`actors.client`, the close (the stop protocol) in
:mod:`actors.stopping`, the read-only queries in :mod:`actors.views`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ray

from shipper.config import ShipperConfig, check_files, load_config
from shipper.entries import LogEntry
from shipper.errors import ConfigError, StartError, brief
from shipper.fleet import node_path, start_line
from shipper.sources.http import clear_token_warning
from shipper.submissions import CloseReport, RunStats

from . import names
from .client import RouterClient
from .fleet import start_keeper
from .handles import RouterHandle
from .local_ray import join_ray
from .names import KEEPER, node_key
from .payload import STORE_MIN_BYTES, Stored
from .sender import Ack, Sender
from .stopping import close_fleet
from .supervisor import start_supervisor
from .telemetry import start_telemetry
from .views import ShipperViews
from .wiring import Wiring

__all__ = ["Ack", "CloseReport", "RunStats", "Shipper", "join_ray"]

log = logging.getLogger("shipper")

#: Seconds between two progress reports while the node pipelines start.
START_REPORT_EVERY = 10.0


class Shipper(ShipperViews):
    """Ships log entries to Kafka through node pipelines of Ray actors."""

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | ShipperConfig,
        *,
        ray_address: str | None = None,
        namespace: str | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """``on_progress`` hears about a slow start (every 10 s while the node pipelines
        start); past ``fleet.start_timeout`` the constructor raises
        :class:`~shipper.errors.StartError` naming the nodes still waiting."""
        self.config = load_config(config if not isinstance(config, Mapping) else dict(config))
        sink = self.config.sinks.kafka
        if not sink.enabled:
            raise ConfigError(
                ["sinks.kafka.enabled: the Kafka sink is disabled; set enabled: true"]
            )
        problems = check_files(self.config)
        if problems:
            raise ConfigError(problems)
        join_ray(ray_address)
        self.namespace = namespace or f"shipper-{uuid.uuid4().hex[:8]}"
        self.wiring = Wiring(self.namespace, self.config)
        self.node_id = ray.get_runtime_context().get_node_id()
        m = self.config.metrics
        self._telemetry = (
            start_telemetry(
                self.namespace, m.host, m.port, node_id=self.node_id, node=node_key(self.node_id)
            )
            if m.enabled
            else None
        )
        #: The Prometheus scrape URL (``None`` when metrics are disabled).
        self.metrics_url: str | None = None
        if self._telemetry is not None:
            self.metrics_url = str(ray.get(self._telemetry.url.remote())) + "/metrics"
        # The keeper creates and holds the node pipelines (they outlive a supervisor
        # restart, and end with this driver: see actors.fleet).
        self._keeper = start_keeper(self.wiring, self.node_id)
        self._supervisor = start_supervisor(self.wiring, self.node_id)
        # Up before the pipelines: it tells a restart from a first start by the names
        # it has seen, so it must see every first start (see actors.supervisor).
        ray.get(self._supervisor.states.remote())
        self._client = RouterClient(self.wiring)
        self._sender = Sender(self.config, self._client, self._refresh_fleet, self._dlqs)
        self._sources_started = False
        #: What the sources did, once stopped (lines, blocks, resends).
        self.source_counts: dict[str, int] = {}
        #: In, delivered, to the DLQ, failed per kind of source, once stopped.
        self.source_stats: dict[str, RunStats] = {}
        #: The HTTP intake's URL on the driver's node once started, else None.
        self.http_url: str | None = None
        #: Every node's HTTP intake URL once started (``start_sources``).
        self.http_urls: dict[str, str] = {}
        self._closed = False
        self._close_report: CloseReport | None = None
        try:
            self._start_fleet(on_progress)
        except BaseException:
            self._kill_actors()  # nothing of a half-started shipper lingers
            raise

    def _start_fleet(self, on_progress: Callable[[str], None] | None) -> None:
        """Start the node pipelines, saying how it goes every 10 s, within
        ``fleet.start_timeout``."""
        limit = self.config.fleet.start_timeout
        t0 = time.monotonic()
        ref = self._supervisor.start_fleet.remote()
        while True:
            elapsed = time.monotonic() - t0
            ready, _ = ray.wait([ref], timeout=max(0.0, min(START_REPORT_EVERY, limit - elapsed)))
            if ready:
                break
            elapsed = time.monotonic() - t0
            progress = ray.get(self._supervisor.start_progress.remote(), timeout=30)
            line = start_line(progress, elapsed)
            if elapsed >= limit:
                raise StartError(
                    f"{line}. Each node needs its actors placed and answering within "
                    f"fleet.start_timeout ({limit:g}s): check `ray status` for nodes short "
                    "of resources, or raise fleet.start_timeout on a loaded cluster"
                )
            if on_progress is not None:
                on_progress(line)
        self._fleet(ray.get(ref))
        if not self._client.pipelines:
            errors = ray.get(self._supervisor.start_progress.remote(), timeout=30)["errors"]
            if errors:
                raise StartError(
                    "no node pipeline started: "
                    + "; ".join(f"node {k}: {e}" for k, e in sorted(errors.items()))
                )
            raise ConfigError(
                [
                    f"fleet.nodes: no node runs a pipeline ({self.config.fleet.nodes!r} "
                    "selects none of the cluster's nodes); check the custom resource's "
                    "name, or use driver or all"
                ]
            )

    # ------------------------------------------------------------------ fleet

    def _fleet(self, pipelines: dict[str, dict[str, Any]]) -> None:
        """Take the supervisor's list of running pipelines (the budgets grow with it)."""
        self._client.set_fleet(pipelines)
        self._sender.set_pipelines(len(self._client.pipelines))

    def _refresh_fleet(self) -> None:
        try:
            self._fleet(ray.get(self._supervisor.fleet.remote(), timeout=30))
        except ray.exceptions.RayError as exc:
            log.warning("could not ask the supervisor for the fleet: %s", brief(exc))

    @property
    def _pipelines(self) -> dict[str, dict[str, Any]]:
        return self._client.pipelines

    def _wiring(self, key: str) -> Wiring:
        return self._client.wiring_of(key)

    def _router(self, key: str) -> RouterHandle:
        return self._client.router(key)

    def _each(self, get: Callable[[Wiring], list[Any]]) -> list[Any]:
        """``get(wiring)`` for every node pipeline whose actors can be found (a node
        that just left may still be listed until the supervisor notices)."""
        out: list[Any] = []
        for key in sorted(self._pipelines):
            try:
                out += get(self._wiring(key))
            except ValueError:
                continue
        return out

    def node_wiring(self, key: str | None = None) -> Wiring:
        """The wiring (names, handles) of node ``key``'s pipeline (default: the first)."""
        return self._wiring(key or sorted(self._pipelines)[0])

    def fleet_problem(self) -> str | None:
        """Why the fleet cannot go on, or None: the keeper that holds the node
        pipelines is gone (they ended with it; Ray does not restart it)."""
        try:
            ray.get_actor(KEEPER, namespace=self.wiring.namespace)
        except ValueError:
            return (
                "the keeper actor, which holds the node pipelines, is gone and the "
                "pipelines with it; restart the job (file positions and the DLQs are on "
                "disk, nothing acknowledged is lost)"
            )
        return None

    def nodes(self) -> list[str]:
        """Keys of the nodes that run a pipeline now."""
        self._refresh_fleet()
        return sorted(self._pipelines)

    # ------------------------------------------------------------------ submit

    def submit(
        self,
        entries: Iterable[LogEntry | Mapping[str, Any] | str],
        *,
        timeout: float | None = None,
        overflow: bool = False,
    ) -> Ack:
        """Submit Python objects (dicts, ``LogEntry`` or plain strings) as one submission.

        When the in-flight budget is used up, waits for room up to ``timeout`` seconds
        (default ``pipeline.submit_timeout``), then raises
        :class:`~shipper.errors.BackpressureError`: nothing of it was accepted, submit
        it again. ``overflow`` sends it even so, for a caller that stops and must not
        drop what it already read (the Batchers' own bounds still apply)."""
        batch = list(entries)
        return self._sender.submit(
            len(batch),
            lambda router, t, order: router.submit_objects.remote(batch, t, order),
            timeout,
            overflow,
        )

    def submit_lines(
        self,
        lines: bytes | list[bytes],
        first_line: int = 1,
        labels: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        overflow: bool = False,
    ) -> Ack:
        """Submit raw input: JSON lines or text lines, as one newline-separated blob or a
        list of lines. ``first_line`` numbers the lines in error messages; ``labels`` are
        added to every entry (an entry's own label of the same name wins); ``timeout``
        and ``overflow`` as for :meth:`submit`."""
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
        extra = dict(labels) if labels else None
        return self._sender.submit(
            size,
            lambda router, t, order: router.submit_lines.remote(
                payload, t, first_line, order, extra
            ),
            timeout,
            overflow,
        )

    # ------------------------------------------------------------------ control

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for every outstanding ack."""
        self._sender.flush(timeout)

    @property
    def in_flight_entries(self) -> int:
        """Entries this driver has submitted whose acknowledgement has not come yet."""
        return self._sender.tracker.in_flight_entries

    def log_file(self) -> str:
        """The driver node's ``logging.file`` (``{node}`` filled in)."""
        return node_path(self.config.logging.file, node_key(self.node_id))

    @property
    def max_submission_lines(self) -> int:
        """The most lines one submission should hold: the entries this driver keeps in
        flight per pipeline. A larger one could fill a topic's queue into its emergency
        band by itself (and shed entries to the DLQ); callers split larger inputs."""
        return self._sender.per_pipeline_budget

    def stats(self) -> RunStats:
        self._sender.pick_up()  # acks that finished meanwhile, without blocking
        return self._sender.tracker.stats

    def queue_stats(self) -> list[dict[str, Any]]:
        """Per node and topic: Batcher figures (queued entries, utilization, partitions)."""
        out: list[dict[str, Any]] = []
        for key in self._client.node_keys():
            if not self._client.reachable(key):
                continue
            stats: list[dict[str, Any]] = ray.get(self._router(key).batcher_stats.remote())
            out += [{**s, "node": key} for s in stats]
        return out

    def close(self, timeout: float | None = None) -> CloseReport:
        """Stop intake and drain: flush, wait for acks up to ``timeout`` (default: the
        drain timeout). What is still queued then is parked in the DLQ (reason
        ``shutdown``), so a stop leaves every entry in Kafka or the DLQ; then the actors
        stop. The report says whether everything settled and what was parked."""
        if self._closed:
            return self._close_report or self._sender.tracker.report()
        self._closed = True
        self._sender.close()
        self._refresh_fleet()
        timeout = self.config.pipeline.drain_timeout if timeout is None else timeout
        try:
            closed = close_fleet(
                self.wiring, self._supervisor, self._sender, timeout, self._sources_started
            )
        finally:
            self._kill_actors()
        self._sources_started = False
        report = closed.report
        self.source_stats = closed.sources
        self.source_counts.update(closed.counts)
        self._close_report = report
        if not report.drained:
            log.warning("%s", report)
        return report

    def _dlqs_by_node(self) -> list[tuple[str, Any]]:
        if not self.config.sinks.kafka.dlq_config.enabled:
            return []
        return self._each(lambda w: [(w.node, w.dlq())])

    # ------------------------------------------------------------------ sources

    def start_sources(self) -> list[str]:
        """Start the config's sources (files, HTTP) on every node pipeline (and on those
        that join later); what was started."""
        src = self.config.sources
        env_name = src.http.auth_token_env
        # The token reaches the intake's process only, as its environment.
        env = {env_name: os.environ[env_name]} if env_name and env_name in os.environ else None
        by_node: dict[str, dict[str, str]] = ray.get(self._supervisor.start_sources.remote(env))
        self._sources_started = True
        started: list[str] = []
        for key, srcs in sorted(by_node.items()):
            if "files" in srcs:
                started.append(f"following {srcs['files']} on {key}")
            if "http" in srcs:
                self.http_urls[key] = srcs["http"]
                started.append(f"HTTP intake at {srcs['http']} on {key}")
        driver = node_key(self.node_id)
        self.http_url = self.http_urls.get(driver) or next(iter(self.http_urls.values()), None)
        warning = clear_token_warning(src.http)
        if warning and self.http_urls:
            started.append(warning)
        return started

    def _kill_actors(self) -> None:
        # The supervisor first (it would start pipelines again), the telemetry actor
        # last (it serves the final figures), its port released (a reload rebinds it).
        if self._telemetry is not None:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(self._telemetry.close.remote(), timeout=10)
        order = sorted(
            self.wiring.named(), key=lambda n: (n != names.SUPERVISOR, n == names.TELEMETRY)
        )
        for name in order:
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
            f"nodes={len(self._pipelines)}, namespace={self.namespace!r})"
        )
