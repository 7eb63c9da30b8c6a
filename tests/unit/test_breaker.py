"""The circuit breaker: every transition with a fake clock, then a state-machine test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shipper.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    failures: int = 3, successes: int = 2, timeout: float = 60.0
) -> tuple[CircuitBreaker, FakeClock, list[tuple[BreakerState, BreakerState]]]:
    clock = FakeClock()
    breaker = CircuitBreaker(failures, successes, timeout, clock=clock)
    events: list[tuple[BreakerState, BreakerState]] = []
    breaker.on_change(lambda old, new: events.append((old, new)))
    return breaker, clock, events


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def test_state_values_are_the_metric_values() -> None:
    assert [int(s) for s in BreakerState] == [0, 1, 2]
    assert BreakerState.HALF_OPEN == 2


def test_defaults_are_the_specs() -> None:
    b = CircuitBreaker()
    assert (b.failure_threshold, b.success_threshold, b.open_timeout) == (10, 2, 60.0)
    assert b.state is BreakerState.CLOSED and b.allow()


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"success_threshold": 0}, {"open_timeout": -1.0}],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_closed_opens_after_consecutive_failures_only() -> None:
    b, _, events = make(failures=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # breaks the run
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 2
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.opens_total == 1
    assert events == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_open_refuses_until_timeout_then_lets_one_probe_through() -> None:
    b, clock, events = make(timeout=60.0)
    trip(b)
    assert not b.allow()
    assert b.retry_in() == pytest.approx(60.0)
    clock.advance(59.9)
    assert not b.allow()
    assert b.state is BreakerState.OPEN
    clock.advance(0.1)
    assert b.retry_in() == 0.0
    assert b.allow()  # the probe
    assert b.state is BreakerState.HALF_OPEN and b.probe_in_flight
    assert not b.allow()  # only one probe in flight
    assert events[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_half_open_closes_after_consecutive_successes() -> None:
    b, clock, events = make(successes=2)
    trip(b)
    clock.advance(60)
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN and not b.probe_in_flight
    assert b.allow()  # second probe
    assert not b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow() and b.allow()
    assert events == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    # Closed again with a clean slate: it takes the full threshold to reopen.
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_and_restarts_the_timer() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(60)
    assert b.allow()
    b.record_success()
    assert b.allow()
    clock.advance(5)
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.opens_total == 2
    assert b.retry_in() == pytest.approx(60.0)
    clock.advance(59)
    assert not b.allow()
    clock.advance(1)
    assert b.allow()
    assert events[-2:] == [
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
    ]


def test_successes_in_half_open_must_be_consecutive_across_reopen() -> None:
    b, clock, _ = make(successes=2)
    trip(b)
    clock.advance(60)
    b.allow()
    b.record_success()  # 1 of 2
    b.allow()
    b.record_failure()  # reopen: the count starts again
    clock.advance(60)
    b.allow()
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN and b.consecutive_successes == 1


def test_late_outcomes_while_open_are_ignored() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(30)
    b.record_failure()  # would otherwise push the retry out
    b.record_success()  # would otherwise count towards closing
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(30.0)
    assert len(events) == 1


def test_a_silent_probe_is_replaced_after_another_timeout() -> None:
    b, clock, _ = make(timeout=10)
    trip(b)
    clock.advance(10)
    assert b.allow()
    clock.advance(9)
    assert not b.allow()
    clock.advance(1)
    assert b.allow()  # the first probe's actor presumably died
    assert b.state is BreakerState.HALF_OPEN


def test_zero_timeout_probes_immediately() -> None:
    b, _, _ = make(timeout=0)
    trip(b)
    assert b.allow()
    assert b.state is BreakerState.HALF_OPEN


def test_listeners_see_the_new_state_and_can_unsubscribe() -> None:
    b, clock, _ = make(failures=1)
    seen: list[BreakerState] = []
    unsubscribe = b.on_change(lambda old, new: seen.append(b.state))
    b.record_failure()
    assert seen == [BreakerState.OPEN]
    unsubscribe()
    unsubscribe()  # idempotent
    clock.advance(60)
    b.allow()
    assert seen == [BreakerState.OPEN]


def test_trip_opens_at_once_from_closed_or_half_open_and_says_why() -> None:
    b, clock, events = make(failures=10, timeout=60.0)
    b.record_failure()
    assert b.trip("Kafka unreachable: no broker reachable for 5s")
    assert b.state is BreakerState.OPEN and b.opens_total == 1
    assert b.why == "Kafka unreachable: no broker reachable for 5s"
    assert events == [(BreakerState.CLOSED, BreakerState.OPEN)]
    # Open already: nothing moves, not even the retry time.
    clock.advance(30)
    assert not b.trip("again") and b.retry_in() == pytest.approx(30.0)
    assert b.why == "Kafka unreachable: no broker reachable for 5s"
    clock.advance(30)
    assert b.allow() and b.state is BreakerState.HALF_OPEN  # the probe
    assert b.trip("still unreachable") and b.state is BreakerState.OPEN
    assert b.retry_in() == pytest.approx(60.0) and b.opens_total == 2


def test_why_names_the_failures_or_the_failed_probe() -> None:
    b, clock, _ = make(failures=3)
    assert b.why is None
    trip(b)
    assert b.why == "3 failed batches in a row"
    clock.advance(60)
    assert b.allow()
    b.record_failure()
    assert b.why == "3 failed batches in a row; the half-open probe failed"
    clock.advance(60)
    assert b.allow()
    b.record_failure()  # again: the cause is kept, the note not repeated
    assert b.why == "3 failed batches in a row; the half-open probe failed"


def test_reading_state_does_not_transition() -> None:
    b, clock, events = make()
    trip(b)
    clock.advance(1000)
    assert b.state is BreakerState.OPEN
    assert len(events) == 1
    assert "OPEN" in repr(b)


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of allow / outcomes / time against a tiny reference model."""

    @initialize(
        failures=st.integers(1, 5),
        successes=st.integers(1, 4),
        timeout=st.sampled_from([0.0, 1.0, 10.0]),
    )
    def setup(self, failures: int, successes: int, timeout: float) -> None:
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(failures, successes, timeout, clock=self.clock)
        self.events: list[tuple[BreakerState, BreakerState]] = []
        self.breaker.on_change(lambda old, new: self.events.append((old, new)))
        self.last_opens = 0
        self.model_failures = 0  # the reference model's run of failures while closed

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 100.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def allow(self) -> None:
        before = self.breaker.state
        allowed = self.breaker.allow()
        after = self.breaker.state
        if before is BreakerState.CLOSED:
            assert allowed and after is BreakerState.CLOSED
        elif before is BreakerState.OPEN:
            # Leaving OPEN always hands out the probe, and only leaving does.
            assert allowed == (after is BreakerState.HALF_OPEN)
        else:
            assert after is BreakerState.HALF_OPEN
            if allowed:
                assert self.breaker.probe_in_flight

    @rule()
    def success(self) -> None:
        before = self.breaker.state
        self.breaker.record_success()
        if before is BreakerState.CLOSED:
            self.model_failures = 0
            assert self.breaker.state is BreakerState.CLOSED

    @rule()
    def failure(self) -> None:
        before = self.breaker.state
        self.breaker.record_failure()
        if before is BreakerState.CLOSED:
            self.model_failures += 1
            if self.model_failures >= self.breaker.failure_threshold:
                assert self.breaker.state is BreakerState.OPEN
                self.model_failures = 0
            else:
                assert self.breaker.state is BreakerState.CLOSED
        elif before is BreakerState.HALF_OPEN:
            assert self.breaker.state is BreakerState.OPEN
        else:
            assert self.breaker.state is BreakerState.OPEN

    @invariant()
    def counters_within_thresholds(self) -> None:
        b = self.breaker
        assert 0 <= b.consecutive_failures < b.failure_threshold
        assert 0 <= b.consecutive_successes < b.success_threshold
        if b.state is not BreakerState.CLOSED:
            assert b.consecutive_failures == 0
        if b.state is not BreakerState.HALF_OPEN:
            assert b.consecutive_successes == 0 and not b.probe_in_flight

    @invariant()
    def events_form_a_chain_that_ends_in_the_state(self) -> None:
        state = BreakerState.CLOSED
        for old, new in self.events:
            assert old is state and new is not old
            assert (old, new) in {
                (BreakerState.CLOSED, BreakerState.OPEN),
                (BreakerState.OPEN, BreakerState.HALF_OPEN),
                (BreakerState.HALF_OPEN, BreakerState.OPEN),
                (BreakerState.HALF_OPEN, BreakerState.CLOSED),
            }
            state = new
        assert state is self.breaker.state

    @invariant()
    def opens_total_counts_entries_into_open_and_never_decreases(self) -> None:
        opens = sum(1 for _, new in self.events if new is BreakerState.OPEN)
        assert self.breaker.opens_total == opens >= self.last_opens
        self.last_opens = opens

    @invariant()
    def open_means_refused_until_the_timeout(self) -> None:
        b = self.breaker
        if b.state is BreakerState.OPEN:
            assert 0.0 <= b.retry_in() <= b.open_timeout


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


def test_probe_now_turns_an_open_breaker_half_open_before_its_timeout() -> None:
    b, clock, events = make(successes=2, timeout=60.0)
    assert not b.probe_now()  # closed: nothing to do
    b.trip("Kafka unreachable")
    clock.advance(5)
    assert b.probe_now() and b.state is BreakerState.HALF_OPEN
    assert not b.probe_now()  # half-open already
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_success()
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert events == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
