"""The supervisor actor: circuit breakers per broker set, and actor restarts.

Breakers. Batchers report each chunk's outcome (fire and forget: one call per chunk,
never a question per batch). The supervisor feeds
:class:`shipper.breaker.CircuitBreaker` and, on every state change, pushes the new
state to every Batcher of that broker set:

- CLOSED: Batchers produce as usual; the DLQs are kicked so their backlog replays.
- OPEN: Batchers hand chunks straight to the DLQ with reason ``circuit_open`` and make
  no produce attempt.
- HALF_OPEN (pushed once ``open_timeout`` has passed, or at once when a Producer sees a
  broker answer again after it tripped the breaker): a Batcher with a chunk to send
  asks :meth:`acquire_probe`; exactly one gets the probe and produces it, the others
  keep diverting to the DLQ until the breaker closes (after ``success_threshold``
  successful probes) or opens again. The DLQs are kicked too, so their backlog probes
  when no new entries come.
- A Producer that finds its broker set unreachable (:meth:`trip`) opens it at once.

Restarts. Every actor announces itself from its constructor
(:func:`actors._options.announce_start`); a name the supervisor has seen before is an
actor Ray restarted after its process died. The supervisor counts it in
``log_capturer_actor_restarts_total{component}`` and rewires what depended on the
old instance:

- a Batcher gets its broker set's current breaker state (it knew nothing);
- a DLQ actor is kicked, so it resumes replaying what its predecessor held;
- the telemetry actor learns every breaker's state again (``/ready`` reads them);
- the supervisor itself, restarted, finds the actors by name (so it knows them) and
  subscribes the Batchers again.

Routers and Producers hold nothing others rely on; their restarts are counted. The
calls in flight when an actor died fail at their caller, which reports the entries
(to the DLQ or as failures), never drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from shipper.breaker import BreakerState, CircuitBreaker
from shipper.errors import brief
from shipper.fleet import NODE_LABEL, FleetPlan, NodeInfo

from ._options import actor_logs, named_actor
from .fleet import KEEPER, node_actor_names
from .handles import BatcherHandle, SupervisorHandle
from .telemetry import Reporter
from .wiring import SUPERVISOR, Wiring, node_key

__all__ = ["SupervisorActor", "start_supervisor"]

log = logging.getLogger("shipper.supervisor")

COMPONENTS = ("router", "batcher", "producer", "dlq", "supervisor", "telemetry", "source")


class SupervisorActor:
    def __init__(
        self,
        wiring: Wiring,
        driver_node_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        actor_logs(wiring)
        self.wiring = wiring
        self.plan = FleetPlan(wiring.config.fleet.nodes, driver_node_id)
        #: key -> what the pipeline of that node answered when it started
        self.pipelines: dict[str, dict[str, Any]] = {}
        self._fleet_task: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Lock | None = None
        self._held_warned: set[str] = set()
        self._rewiring: set[asyncio.Task[None]] = set()
        #: nodes whose pipeline is being started now; why the last start failed, by node
        self.starting: set[str] = set()
        self.start_errors: dict[str, str] = {}
        cb = wiring.sink.circuit_breaker
        self.failure_threshold = cb.failure_threshold
        self.success_threshold = cb.success_threshold
        self.open_timeout = cb.timeout
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        # Subscribers by broker set: Batcher names (handles are looked up by name).
        self.subscribers: dict[str, list[str]] = {}
        self.transitions: list[tuple[float, str, int, int]] = []
        self.restarts: Counter[str] = Counter()
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.telemetry = wiring.telemetry()
        self.metrics = Reporter(
            self.telemetry,
            SUPERVISOR,
            refresh=self._refresh,
            node=node_key(driver_node_id) if driver_node_id else "",
        )
        rec = self.metrics.recorder
        rec.add("log_capturer_circuit_breaker_opens_total", 0, {"sink": "kafka"})
        for c in COMPONENTS:
            rec.add("log_capturer_actor_restarts_total", 0, {"component": c})
        self._last_ok_report = 0.0
        # The pipeline's own broker set has a breaker (and its state series) from the
        # start, before any Batcher reports.
        self._breaker(wiring.broker_set)
        # Actors that started before this supervisor: the telemetry actor (started
        # first), or all of them when this supervisor is itself a restart.
        self.seen: dict[str, str] = {n: "" for n in self._named("")}
        if any(n.startswith(("router:", "producer:", "batcher:", "dlq:")) for n in self.seen):
            log.warning("the supervisor was restarted by Ray; subscribing the Batchers again")
            self._count_restart("supervisor")
            self._resubscribe()
            # The pipelines run on (the keeper holds them): learn them and watch the
            # fleet again, once this constructor is done.
            self._resume_soon()

    def _refresh(self) -> None:
        for bs, b in self.breakers.items():
            self.metrics.recorder.set(
                "log_capturer_kafka_circuit_breaker_state", int(b.state), {"broker_set": bs}
            )

    def _breaker(self, broker_set: str) -> CircuitBreaker:
        b = self.breakers.get(broker_set)
        if b is None:
            b = CircuitBreaker(
                self.failure_threshold, self.success_threshold, self.open_timeout, clock=self.clock
            )
            b.on_change(functools.partial(self._changed, broker_set))
            self.breakers[broker_set] = b
            self._refresh()
            if self.telemetry is not None:
                self.telemetry.report_health.remote(broker_set, 0, None)
            self.metrics.push_now()
        return b

    def _changed(self, broker_set: str, old: BreakerState, new: BreakerState) -> None:
        self.transitions.append((time.time(), broker_set, int(old), int(new)))
        why = self.breakers[broker_set].why if new == BreakerState.OPEN else None
        log.warning(
            "circuit breaker for %s: %s -> %s%s",
            broker_set, old.name, new.name, f" ({why})" if why else "",
        )  # fmt: skip
        if new == BreakerState.OPEN:
            self.metrics.recorder.add(
                "log_capturer_circuit_breaker_opens_total", 1, {"sink": "kafka"}
            )
        self._refresh()
        if self.telemetry is not None:
            self.telemetry.report_health.remote(broker_set, int(new), None)
        self.metrics.push_now()
        if new == BreakerState.OPEN:
            self._arm(broker_set)
        self._push(broker_set, new)
        if new in (BreakerState.CLOSED, BreakerState.HALF_OPEN):
            # Closed: the backlog goes now. Half-open: a backlog serves as the probe
            # when no new entries come (an idle shipper would stay open otherwise).
            self._kick_dlqs()

    def _kick_dlqs(self) -> None:
        for name in self._named("dlq:"):
            try:
                self._handle(name).kick.remote()
            except Exception as exc:  # gone with its node: the reconcile sees to it
                log.info("could not kick %s: %s", name, brief(exc))

    def _handle(self, name: str) -> Any:
        return self.wiring._get(name)

    def _named(self, prefix: str) -> list[str]:
        return self.wiring.named(prefix)

    def _push(self, broker_set: str, state: BreakerState) -> None:
        names = self.subscribers.get(broker_set, [])
        for name in list(names):
            try:
                handle: BatcherHandle = self._handle(name)
            except ValueError:  # no such actor: gone for good (its node left)
                log.info("Batcher %s is gone; unsubscribed", name)
                self.wiring.forget(name)
                names.remove(name)
                continue
            except Exception as exc:  # e.g. the GCS slow to answer: the next push
                log.warning("could not push the breaker state to %s: %s", name, brief(exc))
                continue
            handle.set_breaker_state.remote(int(state))

    def _arm(self, broker_set: str) -> None:
        """After the open timeout, tell the Batchers they may ask for a probe."""
        old = self._timers.pop(broker_set, None)
        if old is not None:
            old.cancel()

        async def wake() -> None:
            b = self.breakers[broker_set]
            await asyncio.sleep(max(0.0, b.retry_in()))
            if b.state == BreakerState.OPEN:
                self._push(broker_set, BreakerState.HALF_OPEN)
                self._kick_dlqs()  # with no new entries, the DLQ's backlog probes

        with contextlib.suppress(RuntimeError):  # no running loop: called outside the actor
            self._timers[broker_set] = asyncio.get_running_loop().create_task(wake())

    # ------------------------------------------------------------------ restarts

    def _count_restart(self, component: str) -> None:
        self.restarts[component] += 1
        self.metrics.recorder.add("log_capturer_actor_restarts_total", 1, {"component": component})
        self.metrics.push_now()

    def _resubscribe(self) -> None:
        """After the supervisor's own restart: every Batcher of this shipper subscribes
        to its broker set again (all Batchers of a shipper share the sink's set)."""
        names = self._named("batcher:")
        if names:
            self.subscribers[self.wiring.broker_set] = names

    async def started(self, component: str, name: str, instance: str) -> None:
        """An actor started; a name seen before is a restart: count it and rewire what
        depended on its predecessor."""
        restarted = name in self.seen and self.seen[name] != instance
        self.seen[name] = instance
        # A handle looked up before may name an actor that is gone for good (a
        # Batcher dies with the Router that created it and is made anew).
        self.wiring.forget(name)
        if not restarted:
            return
        log.warning("%s %s was restarted by Ray", component, name)
        self._count_restart(component)
        if component == "batcher":
            bs = self.wiring.broker_set
            self._rewire(name, "set_breaker_state", int(self._breaker(bs).state))
        elif component == "dlq":
            self._rewire(name, "kick")
        elif component == "telemetry" and self.telemetry is not None:
            for bs, b in self.breakers.items():
                self.telemetry.report_health.remote(bs, int(b.state), None)
            for key in self.pipelines:
                self._report_node(key, True)
            for key in self.plan.lost:
                self._report_node(key, False)

    def _rewire(self, name: str, method: str, *args: Any) -> None:
        """Call ``method`` on the restarted actor ``name`` once it takes calls. It
        announces itself from its constructor, while Ray still reports it restarting
        and refuses calls (seen under load): the call is sent again until one is
        taken."""

        async def call() -> None:
            import ray

            for attempt in range(1, 61):
                try:
                    await getattr(self._handle(name), method).remote(*args)
                    return
                except ray.exceptions.ActorUnavailableError:
                    await asyncio.sleep(min(2.0, 0.2 * attempt))
                except Exception as exc:  # died again, or gone for good
                    log.warning("could not %s %s: %s", method, name, brief(exc))
                    return
            log.warning("%s did not take %s after 60 tries", name, method)

        task = asyncio.get_running_loop().create_task(call())
        self._rewiring.add(task)
        task.add_done_callback(self._rewiring.discard)

    # ------------------------------------------------------------------ fleet

    def _keeper(self) -> Any:
        return self.wiring._get(KEEPER)

    def _resume_soon(self) -> None:
        """Call :meth:`resume` on this actor once it takes calls. A call sent from the
        constructor of a restarting actor can be lost (seen under load), so a thread
        sends it until one is answered; resume is idempotent."""
        import threading

        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError

        me = ray.get_runtime_context().current_actor

        def run() -> None:
            for attempt in range(1, 31):
                try:
                    ray.get(me.resume.remote(), timeout=10)
                    return
                except (ActorUnavailableError, GetTimeoutError) as exc:
                    log.warning("taking the node pipelines over (attempt %d): %s", attempt,
                                brief(exc))  # fmt: skip
                    time.sleep(1.0)
                except Exception:  # resume ran and failed: it logged why
                    break
            log.error("could not take the node pipelines over; restart the job")

        threading.Thread(target=run, name="resume", daemon=True).start()

    async def resume(self) -> None:
        """After this supervisor's restart: take over the pipelines the keeper holds."""
        try:
            await self._resume()
        except Exception:  # nobody reads this call's result: say it here
            log.exception("taking the node pipelines over failed")
            raise

    async def _resume(self) -> None:
        held: dict[str, dict[str, Any]] = await self._keeper().nodes.remote()
        for key, info in held.items():
            self.plan.started(NodeInfo(info["node_id"], key, True))
            self.pipelines[key] = info
            self._report_node(key, True)
        # The Batchers may still hold the state the old supervisor last pushed (open):
        # they take this one's (closed, until their failures open it again), or
        # nothing would ever close it for them.
        for bs, b in self.breakers.items():
            self._push(bs, b.state)
        await self.start_fleet()

    async def start_fleet(self) -> dict[str, dict[str, Any]]:
        """Start the node pipelines now (and keep them matching Ray's nodes from here
        on, every ``fleet.reconcile_interval``); returns the running pipelines."""
        self.metrics.start_periodic()
        await self.reconcile()
        if self._fleet_task is None:
            self._fleet_task = asyncio.get_running_loop().create_task(self._fleet_loop())
        return self.fleet()

    async def _fleet_loop(self) -> None:
        while True:
            await asyncio.sleep(self.wiring.config.fleet.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("fleet reconcile failed; trying again")

    async def reconcile(self) -> None:
        """Compare the pipelines with Ray's nodes: start the missing, report the lost."""
        import ray

        if self._reconciling is None:
            self._reconciling = asyncio.Lock()
        async with self._reconciling:
            nodes = [NodeInfo.from_ray(n) for n in ray.nodes()]  # type: ignore[no-untyped-call]
            todo = self.plan.reconcile(nodes)
            for node in todo.held:
                if node.node_id not in self._held_warned:
                    self._held_warned.add(node.node_id)
                    log.warning(
                        "node %s (%s) has the name of a node whose pipeline runs; it gets "
                        "none until that node leaves (give each node its own %s label)",
                        node.key, node.node_id[:12], NODE_LABEL,
                    )  # fmt: skip
            for key in todo.lost:
                self._lost(key)
            # Side by side: on a loaded machine each start waits mostly for processes.
            self.starting = {n.key for n in todo.start}
            await asyncio.gather(*(self._start_node(n, n.key in todo.back) for n in todo.start))
            self._refresh_fleet()

    async def _start_node(self, node: NodeInfo, back: bool) -> None:
        try:
            info = await asyncio.wait_for(
                self._keeper().start_node.remote(node.key, node.node_id),
                self.wiring.config.fleet.start_timeout + 30,
            )
        except Exception as exc:
            self.start_errors[node.key] = brief(exc)
            log.warning("could not start the pipeline on node %s: %s", node.key, exc)
            return
        finally:
            self.starting.discard(node.key)
        self.start_errors.pop(node.key, None)
        self.plan.started(node)
        self.pipelines[node.key] = info
        log.info("node %s %s: its pipeline runs", node.key, "is back" if back else "joined")
        self._report_node(node.key, True)

    def start_progress(self) -> dict[str, Any]:
        """How the pipelines' start goes: the nodes whose pipeline runs, those still
        starting, and why a start failed (node -> error), for the driver's progress."""
        return {
            "running": sorted(self.pipelines),
            "starting": sorted(self.starting),
            "errors": dict(self.start_errors),
        }

    def _lost(self, key: str) -> None:
        """Node ``key`` left: its actors cannot be reached or restarted (they are pinned
        to it), so they are let go for good; they start afresh if it comes back."""
        import ray

        log.warning("node %s is lost; its pipeline stopped (restarted if it comes back)", key)
        self.pipelines.pop(key, None)
        self._keeper().drop.remote(key)  # its handles go: nothing holds the actors
        alive = set(self._named(""))
        # Also the names of actors already dead (Ray lists only live ones): they must
        # leave the subscribers and the seen set, or a pipeline that comes back on
        # this node would count its actors as restarts.
        known = alive | set(self.seen) | {n for names in self.subscribers.values() for n in names}
        for name in node_actor_names(sorted(known), key):
            if name in alive:
                try:
                    ray.kill(self.wiring._get(name), no_restart=True)
                except Exception:
                    pass
            self.wiring.forget(name)
            self.seen.pop(name, None)
            for names in self.subscribers.values():
                if name in names:
                    names.remove(name)
        self._report_node(key, False)

    def _report_node(self, key: str, up: bool) -> None:
        if self.telemetry is not None:
            self.telemetry.report_node.remote(key, up)

    def _refresh_fleet(self) -> None:
        up = len(self.plan.up())
        self.metrics.recorder.set("log_capturer_fleet_nodes", up, {"state": "up"})
        self.metrics.recorder.set(
            "log_capturer_fleet_nodes", len(self.plan.lost), {"state": "lost"}
        )
        self.metrics.push_now()

    def fleet(self) -> dict[str, dict[str, Any]]:
        """The running node pipelines: key -> node id, Router name, its sources."""
        return dict(sorted(self.pipelines.items()))

    def lost_nodes(self) -> list[str]:
        return sorted(self.plan.lost)

    async def start_sources(self, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        """Start the sources on every node pipeline (and on those that join later)."""
        if self._reconciling is None:
            self._reconciling = asyncio.Lock()
        async with self._reconciling:  # not while a pipeline is being started
            by_node: dict[str, dict[str, str]] = await self._keeper().start_sources.remote(env)
            for key, srcs in by_node.items():
                if key in self.pipelines:
                    self.pipelines[key] = {**self.pipelines[key], "sources": srcs}
        return by_node

    async def stop_sources(self) -> None:
        """New pipelines start without sources from now on (the driver stops the running
        ones)."""
        await self._keeper().stop_sources.remote()

    # ------------------------------------------------------------------ API

    async def register(self, broker_set: str, name: str) -> int:
        """Subscribe a Batcher (by name) to ``broker_set``'s state; returns the state."""
        self.metrics.start_periodic()
        names = self.subscribers.setdefault(broker_set, [])
        if name not in names:
            names.append(name)
        return int(self._breaker(broker_set).state)

    async def report(self, broker_set: str, ok: bool) -> None:
        b = self._breaker(broker_set)
        if ok:
            now = time.time()
            if self.telemetry is not None and now - self._last_ok_report >= 1.0:
                self._last_ok_report = now
                self.telemetry.report_health.remote(broker_set, None, now)
            b.record_success()
        else:
            b.record_failure()
        if b.state == BreakerState.HALF_OPEN and not b.probe_in_flight:
            # The probe succeeded but more are needed: let the Batchers ask again.
            self._push(broker_set, BreakerState.HALF_OPEN)

    async def reachable(self, broker_set: str) -> None:
        """A Producer sees a broker of ``broker_set`` answer again after it reported the
        set unreachable: an open breaker turns half-open now (the probe decides)."""
        self._breaker(broker_set).probe_now()

    async def trip(self, broker_set: str, why: str) -> None:
        """A Producer found ``broker_set`` unreachable: open its breaker now (new entries
        go straight to the DLQ until the half-open probe finds Kafka back)."""
        self._breaker(broker_set).trip(why)

    async def acquire_probe(self, broker_set: str) -> bool:
        """True for exactly one caller while the breaker admits a probe."""
        b = self._breaker(broker_set)
        allowed = b.allow()
        if b.state == BreakerState.OPEN and not allowed:
            self._arm(broker_set)
        return allowed

    def states(self) -> dict[str, dict[str, Any]]:
        return {
            bs: {
                "state": int(b.state),
                "opens_total": b.opens_total,
                "consecutive_failures": b.consecutive_failures,
                "retry_in": b.retry_in(),
                # What opened it, while it is not closed.
                "why": b.why if b.state != BreakerState.CLOSED else None,
            }
            for bs, b in self.breakers.items()
        }

    def history(self) -> list[tuple[float, str, int, int]]:
        return list(self.transitions)

    def restart_counts(self) -> dict[str, int]:
        return dict(self.restarts)


def start_supervisor(wiring: Wiring, driver_node_id: str) -> SupervisorHandle:
    """Create (or find) the fleet's supervisor, on the driver's node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    handle: SupervisorHandle = named_actor(
        SupervisorActor,
        SUPERVISOR,
        wiring.namespace,
        256,
        scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node_id, soft=False),
    ).remote(wiring, driver_node_id)
    return handle
