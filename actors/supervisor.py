"""The supervisor actor: a circuit breaker per broker set, pushed to the Batchers.

Batchers report each chunk's outcome (fire and forget: one call per chunk, never a
question per batch). The supervisor feeds :class:`shipper.breaker.CircuitBreaker` and,
on every state change, pushes the new state to every Batcher of that broker set:

- CLOSED: Batchers produce as usual.
- OPEN: Batchers hand chunks straight to the DLQ with reason ``circuit_open`` and make
  no produce attempt.
- HALF_OPEN (pushed once ``open_timeout`` has passed): a Batcher with a chunk to send
  asks :meth:`acquire_probe`; exactly one gets the probe and produces it, the others
  keep diverting to the DLQ until the breaker closes (after ``success_threshold``
  successful probes) or opens again.

When a breaker closes it kicks the DLQ actors so the backlog is replayed at once.
The supervisor also watches the actors it was told about and records restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from shipper.breaker import BreakerState, CircuitBreaker

from ._options import named_actor
from .telemetry import Reporter

__all__ = ["SupervisorActor", "start_supervisor"]

log = logging.getLogger("shipper.supervisor")


class SupervisorActor:
    def __init__(
        self,
        failure_threshold: int = 10,
        success_threshold: int = 2,
        open_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Any = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.open_timeout = open_timeout
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.subscribers: dict[str, list[Any]] = {}
        self.dlqs: list[Any] = []
        self.transitions: list[tuple[float, str, int, int]] = []
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.telemetry = telemetry
        self.metrics = Reporter(telemetry, "supervisor", refresh=self._refresh)
        self.metrics.recorder.add("log_capturer_circuit_breaker_opens_total", 0, {"sink": "kafka"})
        self._last_ok_report = 0.0

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
        log.warning("circuit breaker for %s: %s -> %s", broker_set, old.name, new.name)
        if new == BreakerState.OPEN:
            self.metrics.recorder.add(
                "log_capturer_circuit_breaker_opens_total", 1, {"sink": "kafka"}
            )
        self._refresh()
        if self.telemetry is not None:
            self.telemetry.report_health.remote(broker_set, int(new), None)
        self.metrics.push_now()
        self._push(broker_set, new)
        if new == BreakerState.OPEN:
            self._arm(broker_set)
        elif new == BreakerState.CLOSED:
            for d in self.dlqs:
                d.kick.remote()

    def _push(self, broker_set: str, state: BreakerState) -> None:
        for h in self.subscribers.get(broker_set, []):
            h.set_breaker_state.remote(int(state))

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

        with contextlib.suppress(RuntimeError):  # no running loop: called outside the actor
            self._timers[broker_set] = asyncio.get_running_loop().create_task(wake())

    # ------------------------------------------------------------------ API

    async def register(self, broker_set: str, handle: Any) -> int:
        """Subscribe a Batcher to ``broker_set``'s state; returns the current state."""
        self.metrics.start_periodic()
        self.subscribers.setdefault(broker_set, []).append(handle)
        return int(self._breaker(broker_set).state)

    async def register_dlq(self, handle: Any) -> None:
        ids = {h._actor_id for h in self.dlqs}
        if handle._actor_id not in ids:
            self.dlqs.append(handle)

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

    async def acquire_probe(self, broker_set: str) -> bool:
        """True for exactly one caller while the breaker admits a probe."""
        b = self._breaker(broker_set)
        allowed = b.allow()
        if b.state == BreakerState.OPEN and not allowed:
            self._arm(broker_set)
        return allowed

    def state(self, broker_set: str) -> int:
        return int(self._breaker(broker_set).state)

    def states(self) -> dict[str, dict[str, Any]]:
        return {
            bs: {
                "state": int(b.state),
                "opens_total": b.opens_total,
                "consecutive_failures": b.consecutive_failures,
                "retry_in": b.retry_in(),
            }
            for bs, b in self.breakers.items()
        }

    def history(self) -> list[tuple[float, str, int, int]]:
        return list(self.transitions)


def start_supervisor(
    namespace: str,
    failure_threshold: int,
    success_threshold: int,
    open_timeout: float,
    telemetry: Any = None,
) -> Any:
    return named_actor(SupervisorActor, "supervisor", namespace, 256).remote(
        failure_threshold, success_threshold, open_timeout, time.monotonic, telemetry
    )
