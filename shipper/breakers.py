"""The breaker board, without Ray: one circuit breaker per broker set, and whom to tell.

The supervisor actor runs one :class:`BreakerBoard`. Batchers report each chunk's
outcome (:meth:`report`); a Producer that finds its broker set unreachable trips it
(:meth:`trip`) and says when a broker answers again (:meth:`reachable`); Batchers with
a chunk to send while the breaker is half-open ask for the probe
(:meth:`acquire_probe`). On every state change the board tells, through the
callbacks its owner gives it (the owner's one channel to the other actors):

- ``push(names, state)``: the set's subscribed Batchers, their new gate;
- ``kick_dlqs()``: when the breaker closes (the backlog goes now) or turns half-open
  (with no new entries, a DLQ's backlog serves as the probe);
- ``health(broker_set, state)``: the telemetry actor, for ``/ready``.

An open breaker turns half-open for the Batchers once its open timeout has passed:
the board keeps that alarm, and its owner calls :meth:`tick` when :meth:`next_alarm`
says (one timer for every set, no task per breaker).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from shipper.breaker import BreakerState, CircuitBreaker
from shipper.telemetry import MetricsRecorder

__all__ = ["BreakerBoard"]

log = logging.getLogger("shipper.supervisor")

Push = Callable[[list[str], BreakerState], None]


def _nothing(*_args: Any) -> None:
    return None


class BreakerBoard:
    """Breakers per broker set, their subscribers and their history."""

    def __init__(
        self,
        failure_threshold: int,
        success_threshold: int,
        open_timeout: float,
        recorder: MetricsRecorder,
        *,
        push: Push = _nothing,
        kick_dlqs: Callable[[], None] = _nothing,
        health: Callable[[str, int], None] = _nothing,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.open_timeout = open_timeout
        self.rec = recorder
        self.push = push
        self.kick_dlqs = kick_dlqs
        self.health = health
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        #: Batcher names by broker set
        self.subscribers: dict[str, list[str]] = {}
        #: every change: (wall time, broker set, old state, new state)
        self.transitions: list[tuple[float, str, int, int]] = []
        #: broker set -> when (clock) its Batchers may ask for a probe
        self.alarms: dict[str, float] = {}
        recorder.add("log_capturer_circuit_breaker_opens_total", 0, {"sink": "kafka"})

    def breaker(self, broker_set: str) -> CircuitBreaker:
        """The set's breaker, made closed on first sight."""
        b = self.breakers.get(broker_set)
        if b is None:
            b = CircuitBreaker(
                self.failure_threshold, self.success_threshold, self.open_timeout, clock=self.clock
            )
            b.on_change(functools.partial(self._changed, broker_set))
            self.breakers[broker_set] = b
            self.refresh()
            self.health(broker_set, 0)
        return b

    def refresh(self) -> None:
        """Set the state gauges (before every metrics snapshot)."""
        for bs, b in self.breakers.items():
            self.rec.set(
                "log_capturer_kafka_circuit_breaker_state", int(b.state), {"broker_set": bs}
            )

    def _changed(self, broker_set: str, old: BreakerState, new: BreakerState) -> None:
        self.transitions.append((time.time(), broker_set, int(old), int(new)))
        why = self.breakers[broker_set].why if new == BreakerState.OPEN else None
        log.warning(
            "circuit breaker for %s: %s -> %s%s",
            broker_set, old.name, new.name, f" ({why})" if why else "",
        )  # fmt: skip
        if new == BreakerState.OPEN:
            self.rec.add("log_capturer_circuit_breaker_opens_total", 1, {"sink": "kafka"})
            self._arm(broker_set)
        else:
            self.alarms.pop(broker_set, None)
        self.refresh()
        self.health(broker_set, int(new))
        self.push(list(self.subscribers.get(broker_set, [])), new)
        if new in (BreakerState.CLOSED, BreakerState.HALF_OPEN):
            self.kick_dlqs()

    def _arm(self, broker_set: str) -> None:
        self.alarms[broker_set] = self.clock() + max(0.0, self.breakers[broker_set].retry_in())

    # ------------------------------------------------------------------ the alarm

    def next_alarm(self) -> float | None:
        """When (clock) :meth:`tick` has something to do; None when nothing waits."""
        return min(self.alarms.values(), default=None)

    def tick(self) -> None:
        """Open breakers whose open timeout has passed turn half-open for the Batchers
        (the breaker itself turns when asked; this tells them to ask)."""
        now = self.clock()
        for bs, at in list(self.alarms.items()):
            if at > now:
                continue
            del self.alarms[bs]
            if self.breakers[bs].state == BreakerState.OPEN:
                self.push(list(self.subscribers.get(bs, [])), BreakerState.HALF_OPEN)
                self.kick_dlqs()  # with no new entries, a DLQ's backlog probes

    # ------------------------------------------------------------------ what comes in

    def register(self, broker_set: str, name: str) -> int:
        """Subscribe Batcher ``name`` to the set's state; returns the state."""
        names = self.subscribers.setdefault(broker_set, [])
        if name not in names:
            names.append(name)
        return int(self.breaker(broker_set).state)

    def unsubscribe(self, name: str) -> None:
        for names in self.subscribers.values():
            if name in names:
                names.remove(name)

    def report(self, broker_set: str, ok: bool) -> None:
        """A chunk's outcome: delivered, or failed for a reason that counts."""
        b = self.breaker(broker_set)
        if ok:
            b.record_success()
        else:
            b.record_failure()
        if b.state == BreakerState.HALF_OPEN and not b.probe_in_flight:
            # The probe succeeded but more are needed: let the Batchers ask again.
            self.push(list(self.subscribers.get(broker_set, [])), BreakerState.HALF_OPEN)

    def trip(self, broker_set: str, why: str) -> None:
        """The set is unreachable: open now."""
        self.breaker(broker_set).trip(why)

    def reachable(self, broker_set: str) -> None:
        """A broker of the set answers again: an open breaker turns half-open now."""
        self.breaker(broker_set).probe_now()

    def acquire_probe(self, broker_set: str) -> bool:
        """True for exactly one caller while the breaker admits a probe."""
        b = self.breaker(broker_set)
        allowed = b.allow()
        if b.state == BreakerState.OPEN and not allowed:
            self._arm(broker_set)
        return allowed

    # ------------------------------------------------------------------ reading

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
