"""Backpressure: pressure levels, level-first shedding, timeout escalation, rate limiting."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.batching.backpressure import (
    Admission,
    BackpressurePolicy,
    Pressure,
    RateLimitedLog,
    Severity,
    severity,
)

LEVELS = ["trace", "debug", "info", "notice", "warn", "warning", "error", "fatal", "critical"]


def test_levels_start_at_their_thresholds() -> None:
    p = BackpressurePolicy()
    assert p.level(0.0) is Pressure.NORMAL
    assert p.level(0.7499) is Pressure.NORMAL
    assert p.level(0.75) is Pressure.WARNING
    assert p.level(0.8999) is Pressure.WARNING
    assert p.level(0.90) is Pressure.CRITICAL
    assert p.level(0.95) is Pressure.EMERGENCY
    assert p.level(1.5) is Pressure.EMERGENCY  # an overfull queue is still an emergency


def test_disabled_policy_is_always_normal() -> None:
    assert BackpressurePolicy(enabled=False).level(0.99) is Pressure.NORMAL


@pytest.mark.parametrize(
    "thresholds", [(0.0, 0.9, 0.95), (0.8, 0.7, 0.95), (0.75, 0.9, 0.85), (0.75, 0.9, 1.1)]
)
def test_thresholds_must_be_ordered(thresholds: tuple[float, float, float]) -> None:
    w, c, e = thresholds
    with pytest.raises(ValueError, match="warning <= critical <= emergency"):
        BackpressurePolicy(warning=w, critical=c, emergency=e)


def test_severity_classes() -> None:
    assert [severity(x) for x in ("TRACE", "debug", " Info ", None, "", "verbose")] == [
        Severity.LOW,
        Severity.LOW,
        Severity.INFO,
        Severity.INFO,
        Severity.INFO,
        Severity.INFO,
    ]
    assert severity("warning") is severity("WARN") is Severity.WARN
    assert {severity(x) for x in ("error", "fatal", "critical", "panic")} == {Severity.HIGH}


def test_ceilings_split_the_emergency_band() -> None:
    p = BackpressurePolicy()
    assert p.ceiling(Severity.LOW) == pytest.approx(0.95)
    assert p.ceiling(Severity.INFO) == pytest.approx(0.95 + 0.05 / 3)
    assert p.ceiling(Severity.WARN) == pytest.approx(0.95 + 0.10 / 3)
    assert p.ceiling(Severity.HIGH) == 1.0
    assert [p.limit(s, 100) for s in Severity] == [95, 96, 98, 100]
    assert [p.limit(s, 1000) for s in Severity] == [950, 966, 983, 1000]


def test_everything_is_admitted_below_the_emergency_band() -> None:
    p = BackpressurePolicy()
    a = p.admit(["debug"] * 10, queued=85, capacity=100)
    assert a.admitted == list(range(10)) and a.shed == a.waiting == []
    assert a.pressure is Pressure.WARNING  # the level when the batch arrived


def test_debug_goes_first_then_info_then_warn_and_errors_wait() -> None:
    p = BackpressurePolicy()
    levels = ["debug", "info", "warn", "error"] * 5
    a = p.admit(levels, queued=94, capacity=100)
    # Room: error up to 100, warn up to 98, info up to 96, debug up to 95. Errors go
    # first (5 of them -> 99), leaving nothing below the other ceilings.
    assert [levels[i] for i in a.admitted] == ["error"] * 5
    assert {levels[i] for i in a.shed} == {"debug", "info", "warn"}
    assert a.waiting == [] and a.pressure is Pressure.CRITICAL

    # Room is handed out from the top: the error takes slot 95, the warn slot 96, which
    # is already past the info and debug ceilings.
    a = p.admit(["debug", "info", "warn", "error"], queued=94, capacity=100)
    assert [a.admitted, a.shed, a.waiting] == [[2, 3], [0, 1], []]
    a = p.admit(["debug", "info"], queued=94, capacity=100)
    assert [a.admitted, a.shed] == [[1], [0]]
    a = p.admit(["debug"], queued=94, capacity=100)
    assert [a.admitted, a.shed] == [[0], []]

    a = p.admit(["debug", "info", "warn", "error"], queued=96, capacity=100)
    assert a.admitted == [2, 3] and a.shed == [0, 1]
    assert a.pressure is Pressure.EMERGENCY


def test_a_full_queue_sheds_low_levels_and_makes_errors_wait() -> None:
    p = BackpressurePolicy()
    levels = ["error", "info", "fatal", "debug", "warn", "critical"]
    a = p.admit(levels, queued=100, capacity=100)
    assert a.admitted == []
    assert a.shed == [1, 3, 4]
    assert a.waiting == [0, 2, 5] and a.wait == 3


def test_errors_take_the_room_before_earlier_debug_lines() -> None:
    a = BackpressurePolicy().admit(["debug"] * 3 + ["error"] * 3, queued=97, capacity=100)
    assert a.admitted == [3, 4, 5] and a.shed == [0, 1, 2]


def test_overfull_and_huge_batches() -> None:
    p = BackpressurePolicy()
    a = p.admit(["error"] * 3, queued=150, capacity=100)
    assert a.waiting == [0, 1, 2]
    a = p.admit(["info"] * 300, queued=0, capacity=100)
    assert len(a.admitted) == 96 and len(a.shed) == 204
    with pytest.raises(ValueError):
        p.admit(["info"], queued=0, capacity=0)


def test_disabled_policy_never_sheds_but_still_bounds() -> None:
    policy = BackpressurePolicy(enabled=False)
    a = policy.admit(["debug", "error", "info"], queued=98, capacity=100)
    # Room still goes to the higher levels first; the rest waits instead of being shed.
    assert a.admitted == [1, 2] and a.shed == [] and a.waiting == [0]
    assert a.pressure is Pressure.NORMAL


def test_timeout_escalation() -> None:
    p = BackpressurePolicy()
    assert p.escalated_timeout(10.0, 0.5) == 10.0
    assert p.escalated_timeout(10.0, 0.8) == 10.0
    assert p.escalated_timeout(10.0, 0.9) == 20.0
    assert p.escalated_timeout(10.0, 0.97) == 40.0
    assert BackpressurePolicy(timeout_escalation=False).escalated_timeout(10.0, 0.99) == 10.0
    assert BackpressurePolicy(enabled=False).escalated_timeout(10.0, 0.99) == 10.0


# -- properties ---------------------------------------------------------------------------

thresholds = st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted)


@given(
    levels=st.lists(st.sampled_from([*LEVELS, "other"]), max_size=300),
    queued=st.integers(-5, 1200),
    capacity=st.integers(1, 1000),
    t=thresholds,
    enabled=st.booleans(),
)
def test_admission_invariants(
    levels: list[str], queued: int, capacity: int, t: list[float], enabled: bool
) -> None:
    p = BackpressurePolicy(warning=t[0], critical=t[1], emergency=t[2], enabled=enabled)
    a = p.admit(levels, queued, capacity)
    # Every entry is decided exactly once.
    assert sorted(a.admitted + a.shed + a.waiting) == list(range(len(levels)))
    assert len(a.admitted) + len(a.shed) + a.wait == len(levels)
    # Physical bound: never more than the room left.
    assert len(a.admitted) <= max(0, capacity - max(queued, 0))
    # error/fatal/critical are never shed; only they (or, disabled, anything) wait.
    assert all(severity(levels[i]) is not Severity.HIGH for i in a.shed)
    if enabled:
        assert all(severity(levels[i]) is Severity.HIGH for i in a.waiting)
    else:
        assert a.shed == []
    # A level is only refused once every lower level is refused too.
    refused = [severity(levels[i]) for i in a.shed + a.waiting]
    if refused:
        lowest_refused = min(refused)
        assert all(severity(levels[i]) >= lowest_refused for i in a.admitted)
    # Below the warning threshold, even after the whole batch, nothing is refused.
    if max(queued, 0) + len(levels) < t[0] * capacity:
        assert a.shed == [] and a.waiting == []
    # Up to the emergency threshold nothing is refused either.
    if max(queued, 0) + len(levels) <= p.limit(Severity.LOW, capacity):
        assert a.shed == [] and a.waiting == []


@given(
    levels=st.lists(st.sampled_from(LEVELS), min_size=1, max_size=50), queued=st.integers(0, 120)
)
def test_more_room_never_refuses_more(levels: list[str], queued: int) -> None:
    p = BackpressurePolicy()
    tight = p.admit(levels, queued + 1, 100)
    loose = p.admit(levels, queued, 100)
    assert len(loose.admitted) >= len(tight.admitted)
    assert set(tight.admitted) <= set(loose.admitted)


@given(st.floats(0.0, 2.0), st.floats(0.0, 2.0))
def test_timeouts_only_grow_with_pressure(u1: float, u2: float) -> None:
    p = BackpressurePolicy()
    lo, hi = sorted((u1, u2))
    assert 1.0 <= p.escalated_timeout(1.0, lo) <= p.escalated_timeout(1.0, hi) <= 4.0


def test_admission_is_a_plain_value() -> None:
    a = Admission([0], [1], [], Pressure.NORMAL)
    assert a.wait == 0 and a == Admission([0], [1], [], Pressure.NORMAL)


# -- rate-limited warnings --------------------------------------------------------------


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_suppresses_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = Tick()
    log = RateLimitedLog(30.0, clock=clock, logger=logging.getLogger("test.bp"))
    with caplog.at_level(logging.WARNING, logger="test.bp"):
        assert log.warning("queue %s at %d%%", "app", 80, key="app")
        clock.now = 10
        assert not log.warning("queue %s at %d%%", "app", 81, key="app")
        assert not log.warning("queue %s at %d%%", "app", 82, key="app")
        assert log.warning("queue %s at %d%%", "db", 90, key="db")  # other key, own window
        clock.now = 30
        assert log.warning("queue %s at %d%%", "app", 83, key="app")
    assert [r.getMessage() for r in caplog.records] == [
        "queue app at 80%",
        "queue db at 90%",
        "queue app at 83% (2 similar messages suppressed)",
    ]


def test_rate_limited_ready_and_zero_interval() -> None:
    clock = Tick()
    r = RateLimitedLog(5.0, clock=clock)
    assert r.ready() == 0
    assert r.ready() is None
    clock.now = 5.0
    assert r.ready() == 1
    always = RateLimitedLog(0.0, clock=clock)
    assert always.ready() == 0 and always.ready() == 0
    with pytest.raises(ValueError):
        RateLimitedLog(-1.0)
