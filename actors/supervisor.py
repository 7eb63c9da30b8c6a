"""The supervisor actor: circuit breakers per broker set, actor restarts, and the fleet.

The decisions are Ray-free cores: :class:`shipper.breakers.BreakerBoard` (breakers,
subscribers, the half-open alarm) and :class:`shipper.fleet.FleetReconciler` (which
nodes get a pipeline); every push to another actor goes through one
:class:`actors.channel.Channel`. What is left here is the glue.

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
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from shipper.breaker import BreakerState
from shipper.breakers import BreakerBoard
from shipper.errors import brief
from shipper.fleet import NODE_LABEL, FleetPlan, FleetReconciler, NodeInfo

from . import names
from ._options import actor_logs, named_actor
from .channel import Channel
from .handles import SupervisorHandle
from .names import KEEPER, SUPERVISOR, node_key
from .reporter import Reporter
from .wiring import Wiring

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
        self.fleet_book = FleetReconciler(FleetPlan(wiring.config.fleet.nodes, driver_node_id))
        self._fleet_task: asyncio.Task[None] | None = None
        self._reconciling: asyncio.Lock | None = None
        self.channel = Channel(wiring)
        self.telemetry = wiring.telemetry()
        self.metrics = Reporter(
            self.telemetry,
            SUPERVISOR,
            refresh=self._refresh,
            node=node_key(driver_node_id) if driver_node_id else "",
        )
        cb = wiring.sink.circuit_breaker
        self.board = BreakerBoard(
            cb.failure_threshold,
            cb.success_threshold,
            cb.timeout,
            self.metrics.recorder,
            push=self._push,
            kick_dlqs=lambda: self.channel.to_role("dlq", "kick"),
            health=self._health,
            clock=clock,
        )
        self._alarm: asyncio.Event | None = None
        self._alarm_task: asyncio.Task[None] | None = None
        self.restarts: Counter[str] = Counter()
        for c in COMPONENTS:
            self.metrics.recorder.add("log_capturer_actor_restarts_total", 0, {"component": c})
        self._last_ok_report = 0.0
        # The pipeline's own broker set has a breaker (and its state series) from the
        # start, before any Batcher reports.
        self.board.breaker(wiring.broker_set)
        # Actors that started before this supervisor: the telemetry actor (started
        # first), or all of them when this supervisor is itself a restart.
        self.seen: dict[str, str] = {n: "" for n in wiring.named()}
        if any(names.role_of(n) in ("router", "producer", "batcher", "dlq") for n in self.seen):
            log.warning("the supervisor was restarted by Ray; subscribing the Batchers again")
            self._count_restart("supervisor")
            for name in wiring.named("batcher"):  # every Batcher shares the sink's set
                self.board.register(wiring.broker_set, name)
            # The pipelines run on (the keeper holds them): learn them and watch the
            # fleet again, once this constructor is done.
            self._resume_soon()

    def _refresh(self) -> None:
        self.board.refresh()
        up, lost = self.fleet_book.counts()
        self.metrics.recorder.set("log_capturer_fleet_nodes", up, {"state": "up"})
        self.metrics.recorder.set("log_capturer_fleet_nodes", lost, {"state": "lost"})

    # ------------------------------------------------------------------ the channel

    def _push(self, subscribers: list[str], state: BreakerState) -> None:
        for name in subscribers:
            if not self.channel.send(name, "set_breaker_state", int(state)):
                log.info("Batcher %s is gone; unsubscribed", name)
                self.board.unsubscribe(name)
        self.metrics.push_now()

    def _health(self, broker_set: str, state: int | None, at: float | None = None) -> None:
        if self.telemetry is not None:
            self.channel.send(names.TELEMETRY, "report_health", broker_set, state, at)

    def _report_node(self, key: str, up: bool) -> None:
        if self.telemetry is not None:
            self.channel.send(names.TELEMETRY, "report_node", key, up)

    def _on_board(self, change: Callable[[], Any]) -> Any:
        """``change()`` on the board; the alarm loop looks again only when the next
        alarm moved (a chunk's report that changed nothing wakes nothing)."""
        before = self.board.next_alarm()
        out = change()
        if self._alarm is None or self.board.next_alarm() != before:
            self._woken()
        return out

    def _woken(self) -> None:
        if self._alarm is None:
            self._alarm = asyncio.Event()
            self._alarm_task = asyncio.get_running_loop().create_task(self._alarms())
        self._alarm.set()

    async def _alarms(self) -> None:
        assert self._alarm is not None
        while True:
            at = self.board.next_alarm()
            wait = None if at is None else max(0.0, at - self.board.clock())
            try:
                await asyncio.wait_for(self._alarm.wait(), wait)
            except TimeoutError:
                pass
            self._alarm.clear()
            self.board.tick()

    # ------------------------------------------------------------------ restarts

    def _count_restart(self, component: str) -> None:
        self.restarts[component] += 1
        self.metrics.recorder.add("log_capturer_actor_restarts_total", 1, {"component": component})
        self.metrics.push_now()

    async def started(self, component: str, name: str, instance: str) -> None:
        """An actor started; a name seen before is a restart: count it and rewire what
        depended on its predecessor."""
        restarted = name in self.seen and self.seen[name] != instance
        self.seen[name] = instance
        # A handle looked up before may name an actor that is gone for good.
        self.wiring.forget(name)
        if not restarted:
            return
        log.warning("%s %s was restarted by Ray", component, name)
        self._count_restart(component)
        if component == "batcher":
            state = int(self.board.breaker(self.wiring.broker_set).state)
            self.channel.send(name, "set_breaker_state", state, until_taken=True)
        elif component == "dlq":
            self.channel.send(name, "kick", until_taken=True)
        elif component == "telemetry":
            for bs, b in self.board.breakers.items():
                self._health(bs, int(b.state))
            for key in self.fleet_book.pipelines:
                self._report_node(key, True)
            for key in self.fleet_book.plan.lost:
                self._report_node(key, False)

    def _resume_soon(self) -> None:
        """Call :meth:`resume` on this actor once it takes calls. A call sent from the
        constructor of a restarting actor can be lost (seen under load), so a thread
        sends it until one is answered; resume is idempotent."""
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
            held = await self.wiring._get(KEEPER).nodes.remote()
            self.fleet_book.held_by_keeper(held)
            for key in held:
                self._report_node(key, True)
            # The Batchers may still hold the state the old supervisor last pushed
            # (open): they take this one's, or nothing would ever close it for them.
            for bs, b in self.board.breakers.items():
                self._push(list(self.board.subscribers.get(bs, [])), b.state)
            await self.start_fleet()
        except Exception:  # nobody reads this call's result: say it here
            log.exception("taking the node pipelines over failed")
            raise

    # ------------------------------------------------------------------ fleet

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

    def _lock(self) -> asyncio.Lock:
        if self._reconciling is None:
            self._reconciling = asyncio.Lock()
        return self._reconciling

    async def reconcile(self) -> None:
        """Compare the pipelines with Ray's nodes: start the missing, report the lost."""
        import ray

        async with self._lock():
            nodes = [NodeInfo.from_ray(n) for n in ray.nodes()]  # type: ignore[no-untyped-call]
            todo = self.fleet_book.round(nodes)
            for node in todo.held:
                log.warning(
                    "node %s (%s) has the name of a node whose pipeline runs; it gets "
                    "none until that node leaves (give each node its own %s label)",
                    node.key, node.node_id[:12], NODE_LABEL,
                )  # fmt: skip
            for key in todo.lost:
                self._lost(key)
            # Side by side: on a loaded machine each start waits mostly for processes.
            await asyncio.gather(*(self._start_node(n, n.key in todo.back) for n in todo.start))
            self.metrics.push_now()

    async def _start_node(self, node: NodeInfo, back: bool) -> None:
        try:
            info = await asyncio.wait_for(
                self.wiring._get(KEEPER).start_node.remote(node.key, node.node_id),
                self.wiring.config.fleet.start_timeout + 30,
            )
        except Exception as exc:
            self.fleet_book.failed(node.key, brief(exc))
            log.warning("could not start the pipeline on node %s: %s", node.key, exc)
            return
        self.fleet_book.started(node, info)
        log.info("node %s %s: its pipeline runs", node.key, "is back" if back else "joined")
        self._report_node(node.key, True)

    def start_progress(self) -> dict[str, Any]:
        """How the pipelines' start goes: the nodes whose pipeline runs, those still
        starting, and why a start failed (node -> error), for the driver's progress."""
        return self.fleet_book.progress()

    def _lost(self, key: str) -> None:
        """Node ``key`` left: its actors cannot be reached or restarted (they are pinned
        to it), so they are let go for good; they start afresh if it comes back."""
        import ray

        log.warning("node %s is lost; its pipeline stopped (restarted if it comes back)", key)
        self.channel.send(KEEPER, "drop", key)  # its handles go: nothing holds the actors
        alive = set(self.wiring.named())
        # Also the names of actors already dead (Ray lists only live ones): they must
        # leave the subscribers and the seen set, or a pipeline that comes back on
        # this node would count its actors as restarts.
        subscribed = {n for subs in self.board.subscribers.values() for n in subs}
        for name in names.of_node(sorted(alive | set(self.seen) | subscribed), key):
            if name in alive:
                try:
                    ray.kill(self.wiring._get(name), no_restart=True)
                except Exception:
                    pass
            self.wiring.forget(name)
            self.seen.pop(name, None)
            self.board.unsubscribe(name)
        self._report_node(key, False)

    def fleet(self) -> dict[str, dict[str, Any]]:
        """The running node pipelines: key -> node id, Router name, its sources."""
        return dict(sorted(self.fleet_book.pipelines.items()))

    def lost_nodes(self) -> list[str]:
        return sorted(self.fleet_book.plan.lost)

    async def start_sources(self, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        """Start the sources on every node pipeline (and on those that join later)."""
        async with self._lock():  # not while a pipeline is being started
            by_node: dict[str, dict[str, str]] = await self.wiring._get(
                KEEPER
            ).start_sources.remote(env)
            self.fleet_book.set_sources(by_node)
        return by_node

    async def stop_sources(self) -> None:
        """New pipelines start without sources from now on (the driver stops the running
        ones)."""
        await self.wiring._get(KEEPER).stop_sources.remote()

    # ------------------------------------------------------------------ breakers

    async def register(self, broker_set: str, name: str) -> int:
        """Subscribe a Batcher (by name) to ``broker_set``'s state; returns the state."""
        self.metrics.start_periodic()
        return self.board.register(broker_set, name)

    async def report(self, broker_set: str, ok: bool) -> None:
        if ok:
            now = time.time()
            if now - self._last_ok_report >= 1.0:
                self._last_ok_report = now
                self._health(broker_set, None, now)
        self._on_board(lambda: self.board.report(broker_set, ok))

    async def reachable(self, broker_set: str) -> None:
        """A Producer sees a broker of ``broker_set`` answer again after it reported the
        set unreachable: an open breaker turns half-open now (the probe decides)."""
        self._on_board(lambda: self.board.reachable(broker_set))

    async def trip(self, broker_set: str, why: str) -> None:
        """A Producer found ``broker_set`` unreachable: open its breaker now (new entries
        go straight to the DLQ until the half-open probe finds Kafka back)."""
        self._on_board(lambda: self.board.trip(broker_set, why))

    async def acquire_probe(self, broker_set: str) -> bool:
        """True for exactly one caller while the breaker admits a probe."""
        return bool(self._on_board(lambda: self.board.acquire_probe(broker_set)))

    def states(self) -> dict[str, dict[str, Any]]:
        return self.board.states()

    def history(self) -> list[tuple[float, str, int, int]]:
        return list(self.board.transitions)

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
