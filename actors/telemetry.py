"""The telemetry actor: one scrape endpoint per deployment.

::

    Batcher / Router / Producer / Supervisor / DLQ           TelemetryActor ("telemetry")
      Reporter(telemetry, name)                                Aggregator
        .recorder: MetricsRecorder  --push(snapshot)----->       .update(snapshot)
        (at most every `interval` s, fire and forget)          MetricsServer (own thread)
      supervisor / producer  --report_health(bs, state, t)-->    GET /metrics  merged
                                                                 GET /healthz  200 while up
                                                                 GET /ready    200 / 503

* :class:`TelemetryActor` keeps the latest cumulative snapshot of every source and serves
  their merge (counters and histograms summed, gauges per the catalog) through
  :class:`shipper.telemetry.MetricsServer`. Snapshots are cumulative, so a restarted
  telemetry actor is whole again after one push round; a restarted *source* (new
  recorder instance under the same source name) has its old counts retired, not lost.
* ``/ready`` is 200 only when at least one broker set has reported, no broker set's
  circuit breaker is open (state 1), and for every broker set a broker answered within
  ``stale_after`` seconds (wall time). Half-open (2) does not by itself make the
  endpoint unready. ``/healthz`` is 200 while the actor's process serves.
* Actors send their figures with :class:`actors.reporter.Reporter`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipper.telemetry import Aggregator, MetricsRecorder, MetricsServer, Snapshot
from shipper.telemetry.catalog import BREAKER_STATE_CODES

from .names import TELEMETRY

__all__ = [
    "DEFAULT_STALE_AFTER",
    "TELEMETRY_NAME",
    "TelemetryActor",
    "start_telemetry",
]

log = logging.getLogger("shipper.telemetry")

TELEMETRY_NAME = TELEMETRY
DEFAULT_STALE_AFTER = 30.0
"""Seconds without a broker answer after which ``/ready`` fails. Producers report every
``statistics.interval.ms`` (5 s suggested) while a broker connection is up."""

_OPEN = BREAKER_STATE_CODES["open"]


@dataclass
class _BrokerSetHealth:
    breaker_state: int = 0
    last_success: float = -math.inf


class TelemetryActor:
    """Aggregates every actor's metrics and serves ``/metrics``, ``/healthz``, ``/ready``.

    The HTTP server binds in the constructor (``port=0`` picks a free port) and serves
    from its own thread, so scrapes never wait for the actor's method queue.
    ``source_ttl`` (seconds, ``None`` = never) forgets sources that stopped pushing,
    e.g. actors killed for good: their counters stay in the totals, their gauges go.
    ``clock`` gives wall time (``time.time``) and exists for tests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9464,
        stale_after: float = DEFAULT_STALE_AFTER,
        source_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        announce: bool = False,
        node: str = "",
    ) -> None:
        if not stale_after > 0:
            raise ValueError(f"stale_after must be > 0, got {stale_after!r}")
        self.stale_after = float(stale_after)
        self.source_ttl = source_ttl
        self._clock = clock
        self._lock = threading.Lock()  # health and last-seen maps: HTTP thread reads them
        self._aggregator = Aggregator()
        self._health: dict[str, _BrokerSetHealth] = {}
        self._last_seen: dict[str, float] = {}
        self._own = MetricsRecorder(TELEMETRY_NAME)
        self._own.add("log_capturer_errors_total", 0, {"component": "telemetry"})
        self._node = node
        self._aggregator.update(self._own_snapshot())
        self._nodes: dict[str, bool] = {}
        self._server = MetricsServer(
            host, port, self._collect, self._healthy, self._ready, self._node_ready
        )
        self._server.start()
        log.info("telemetry endpoint at %s/metrics", self._server.url)
        if announce:
            import ray

            from ._options import announce_start

            announce_start(ray.get_runtime_context().namespace, "telemetry", TELEMETRY_NAME)

    def _own_snapshot(self) -> Snapshot:
        snap = self._own.snapshot()
        if self._node:
            snap["node"] = self._node
        return snap

    # ------------------------------------------------------------------ intake

    def push(self, snapshot: Snapshot) -> bool:
        """Take a source's latest cumulative snapshot; ``False`` if ignored (older, or
        rejected as not matching the catalog, which is counted and logged)."""
        try:
            taken = self._aggregator.update(snapshot)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            source = snapshot.get("source") if isinstance(snapshot, dict) else None
            log.warning("telemetry: rejected a snapshot from %r: %s", source, exc)
            self._own.add("log_capturer_errors_total", 1, {"component": "telemetry"})
            self._aggregator.update(self._own_snapshot())
            return False
        if taken:
            with self._lock:
                self._last_seen[snapshot["source"]] = self._clock()
        return taken

    def forget(self, source: str) -> None:
        """Drop ``source`` for good: its counters stay in the totals, its gauges go."""
        self._aggregator.forget(source)
        with self._lock:
            self._last_seen.pop(source, None)

    def report_health(
        self,
        broker_set: str,
        breaker_state: int | None = None,
        last_success_wall_time: float | None = None,
    ) -> None:
        """What ``/ready`` decides on, per broker set. ``None`` leaves a field as it was.

        ``breaker_state`` is the breaker's code (0 closed, 1 open, 2 half-open);
        ``last_success_wall_time`` is ``time.time()`` when a broker of the set last
        answered (an older time than the one known is ignored).
        """
        if breaker_state is not None and breaker_state not in BREAKER_STATE_CODES.values():
            raise ValueError(f"unknown breaker state {breaker_state!r}")
        with self._lock:
            h = self._health.setdefault(broker_set, _BrokerSetHealth())
            if breaker_state is not None:
                h.breaker_state = int(breaker_state)
            if last_success_wall_time is not None:
                h.last_success = max(h.last_success, float(last_success_wall_time))

    def address(self) -> tuple[str, int]:
        """``(host, port)`` the endpoint is bound to (the real port when 0 was asked)."""
        return self._server.host, self._server.port

    def url(self) -> str:
        """Base URL a client on another machine can use (``/metrics`` etc. appended).

        A wildcard bind (``0.0.0.0``/``::``) is shown with this node's IP address.
        """
        host = self._server.host
        if host in ("0.0.0.0", "::", ""):
            import ray

            host = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self._server.port}"

    def report_node(self, node: str, up: bool) -> None:
        """A fleet node's pipeline runs (``up``) or its node was lost."""
        with self._lock:
            self._nodes[node] = up

    def _node_ready(self, node: str) -> tuple[bool, str]:
        with self._lock:
            up = self._nodes.get(node)
        if up is None:
            return False, f"not ready: node {node} runs no pipeline of this shipper"
        if not up:
            return False, f"not ready: node {node} is lost"
        return True, f"ready: node {node} runs its pipeline"

    def ready(self) -> tuple[bool, str]:
        """What ``/ready`` answers: ``(ok, reason)``."""
        return self._ready()

    def health(self) -> dict[str, dict[str, float]]:
        """Per broker set: breaker state and seconds since a broker last answered."""
        now = self._clock()
        with self._lock:
            return {
                bs: {"breaker_state": h.breaker_state, "since_success": now - h.last_success}
                for bs, h in self._health.items()
            }

    def sources(self) -> list[str]:
        """Sources whose latest snapshot is held, sorted (includes ``telemetry``)."""
        return self._aggregator.sources()

    def merged(self) -> Snapshot:
        """The merged snapshot a scrape renders (for tests and the CLI)."""
        return self._collect()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.close()

    # ------------------------------------------------------------------ server hooks

    def _collect(self) -> Snapshot:
        if self.source_ttl is not None:
            cutoff = self._clock() - self.source_ttl
            with self._lock:
                silent = [s for s, t in self._last_seen.items() if t < cutoff]
            for source in silent:
                log.info(
                    "telemetry: %s sent nothing for %.0fs; forgetting it", source, self.source_ttl
                )
                self.forget(source)
        return self._aggregator.merged()

    def _healthy(self) -> bool:
        return True

    def _ready(self) -> tuple[bool, str]:
        now = self._clock()
        with self._lock:
            health = dict(self._health)
        if not health:
            return False, "not ready: no broker set has reported yet"
        problems: list[str] = []
        for bs in sorted(health):
            h = health[bs]
            if h.breaker_state == _OPEN:
                problems.append(f"circuit breaker open for broker set {bs}")
            elif now - h.last_success > self.stale_after:
                if math.isinf(h.last_success):
                    problems.append(f"no broker of set {bs} has answered yet")
                else:
                    problems.append(
                        f"no broker of set {bs} answered in the last {self.stale_after:g}s "
                        f"(last {now - h.last_success:.0f}s ago)"
                    )
        if problems:
            return False, "not ready: " + "; ".join(problems)
        return True, f"ready: {len(health)} broker set(s) reachable, breakers not open"


def start_telemetry(
    namespace: str,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    source_ttl: float | None = None,
    node_id: str | None = None,
    node: str = "",
) -> Any:
    """Create (or find) the deployment's ``telemetry`` actor in ``namespace``.

    It is pinned to Ray node ``node_id`` (default: the calling node, the driver's), so
    ``host:port`` names a port on that machine. An existing actor keeps its address:
    the arguments only matter for the first caller. Restarted forever if it dies; with
    a fixed port it binds the same port again (with port 0 it gets a new one).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ._options import named_actor

    where = node_id or ray.get_runtime_context().get_node_id()
    return named_actor(
        TelemetryActor,
        TELEMETRY_NAME,
        namespace,
        1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(where, soft=False),
    ).remote(host, port, stale_after, source_ttl, announce=True, node=node)
