"""The supervisor's breaker board without Ray: states, subscribers, whom it tells, alarms."""

from __future__ import annotations

from typing import Any

from shipper.breaker import BreakerState
from shipper.breakers import BreakerBoard
from shipper.telemetry import MetricsRecorder


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def board(clock: FakeClock) -> tuple[BreakerBoard, list[tuple[str, Any]]]:
    told: list[tuple[str, Any]] = []
    b = BreakerBoard(
        3,
        1,
        30.0,
        MetricsRecorder("supervisor"),
        push=lambda names, state: told.append(("push", (tuple(names), state))),
        kick_dlqs=lambda: told.append(("kick", None)),
        health=lambda bs, state: told.append(("health", (bs, state))),
        clock=clock,
    )
    return b, told


def test_failures_open_the_breaker_and_every_subscriber_hears_it() -> None:
    clock = FakeClock()
    b, told = board(clock)
    assert b.register("set1", "batcher:n1:logs") == 0
    assert b.register("set1", "batcher:n2:logs") == 0
    assert told == [("health", ("set1", 0))]
    told.clear()
    for _ in range(3):
        b.report("set1", ok=False)
    subs = ("batcher:n1:logs", "batcher:n2:logs")
    assert told == [("health", ("set1", 1)), ("push", (subs, BreakerState.OPEN))]
    assert b.states()["set1"]["state"] == 1
    assert b.states()["set1"]["why"] == "3 failed batches in a row"
    opens = b.rec.snapshot()["counters"]["log_capturer_circuit_breaker_opens_total"]
    assert sum(opens.values()) == 1


def test_the_open_timeout_alarm_lets_the_batchers_probe_and_kicks_the_dlqs() -> None:
    clock = FakeClock()
    b, told = board(clock)
    b.register("set1", "batcher:n1:logs")
    b.trip("set1", "Kafka unreachable: all brokers down")
    assert b.next_alarm() == clock.now + 30.0
    told.clear()
    b.tick()
    assert told == []  # not yet
    clock.now += 30.0
    b.tick()
    assert told == [("push", (("batcher:n1:logs",), BreakerState.HALF_OPEN)), ("kick", None)]
    assert b.next_alarm() is None
    # One probe at a time; its success closes the breaker and the DLQs replay.
    assert b.acquire_probe("set1") and not b.acquire_probe("set1")
    told.clear()
    b.report("set1", ok=True)
    assert ("kick", None) in told
    assert b.states()["set1"]["state"] == 0 and b.states()["set1"]["why"] is None
    assert [(o, n) for _t, _bs, o, n in b.transitions] == [(0, 1), (1, 2), (2, 0)]


def test_a_broker_back_turns_it_half_open_at_once_and_a_gone_batcher_is_dropped() -> None:
    clock = FakeClock()
    b, told = board(clock)
    b.register("set1", "batcher:n1:logs")
    b.register("set1", "batcher:n2:logs")
    b.trip("set1", "Kafka unreachable")
    b.unsubscribe("batcher:n2:logs")
    told.clear()
    b.reachable("set1")
    assert b.states()["set1"]["state"] == 2
    assert ("push", (("batcher:n1:logs",), BreakerState.HALF_OPEN)) in told
    assert b.next_alarm() is None


def test_a_probe_refused_while_open_re_arms_the_alarm() -> None:
    clock = FakeClock()
    b, _ = board(clock)
    b.trip("set1", "Kafka unreachable")
    b.tick()
    clock.now += 10
    assert not b.acquire_probe("set1")
    assert b.next_alarm() == clock.now + 20.0
