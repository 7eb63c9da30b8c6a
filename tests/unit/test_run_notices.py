"""What `shipper run` says on stderr while Kafka is away (shipper.cli.notices)."""

from __future__ import annotations

from shipper.cli.notices import RunNotices


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


OPEN = {
    "bs1": {"state": 1, "why": "Kafka unreachable: no broker reachable for 5s", "retry_in": 55.0}
}
CLOSED = {"bs1": {"state": 0, "why": None, "retry_in": 0.0}}
HALF = {"bs1": {"state": 2, "why": "x", "retry_in": 0.0}}


def test_a_breaker_that_opens_and_closes_gets_one_line_each_way() -> None:
    n = RunNotices()
    assert n.breakers(CLOSED) == []
    opened = n.breakers(OPEN)
    assert len(opened) == 1
    assert "no broker reachable for 5s" in opened[0] and "go to the DLQ" in opened[0]
    assert "next probe in 55 s" in opened[0]
    assert n.breakers(OPEN) == []  # still open: nothing new
    assert n.breakers(HALF) == []  # probing: nothing yet
    closed = n.breakers(CLOSED)
    assert len(closed) == 1 and "takes entries again" in closed[0]
    assert n.breakers(CLOSED) == []


def test_a_wait_is_explained_every_interval_with_the_dlq_growth() -> None:
    clock = Clock()
    n = RunNotices(every=10.0, clock=clock)
    assert n.waiting(OPEN, 1000, 37_500) is None  # the wait starts: nothing yet
    clock.now = 5
    assert n.waiting(OPEN, 3000, 37_500) is None
    clock.now = 10
    line = n.waiting(OPEN, 6000, 37_500)
    assert line is not None
    assert line.startswith("waiting 10 s for room in the pipeline")
    assert "circuit breaker open for broker set bs1" in line
    assert "DLQ holds 6,000 entries, +500/s" in line and "37,500 entries in flight" in line
    clock.now = 15
    assert n.waiting(OPEN, 7000, 37_500) is None
    clock.now = 20
    line = n.waiting(CLOSED, 6000, 10)
    assert line is not None and "Kafka is slow to acknowledge" in line and "-0/s" not in line
    assert "DLQ holds 6,000 entries, +0/s" in line
    clock.now = 21
    assert n.took() == "the pipeline takes entries again after 21 s"
    assert n.took() is None


def test_a_short_wait_ends_without_a_word_and_no_dlq_is_left_out() -> None:
    clock = Clock()
    n = RunNotices(every=10.0, clock=clock)
    n.waiting(HALF, None, 5)
    clock.now = 3
    assert n.took() is None
    n.waiting(HALF, None, 5)
    clock.now = 13
    line = n.waiting(HALF, None, 5)
    assert line is not None and "half-open" in line and "DLQ" not in line
