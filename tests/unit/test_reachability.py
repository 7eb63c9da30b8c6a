"""When a broker set counts as unreachable (shipper.kafka.reachability), on a fake clock."""

from __future__ import annotations

import pytest

from shipper.kafka.reachability import Reachability


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_all_brokers_down_for_the_limit_is_reported_once_with_its_detail() -> None:
    clock = Clock()
    r = Reachability(5.0, clock)
    r.all_down("Connect to 127.0.0.1:19092 failed: Connection refused")
    clock.now += 4.9
    assert r.check() is None and r.down
    clock.now += 0.2
    why = r.check()
    assert (
        why == "no broker reachable for 5s: Connect to 127.0.0.1:19092 failed: Connection refused"
    )
    # Once per outage: the caller acts on the edge.
    clock.now += 30
    assert r.check() is None and r.down


def test_an_answer_before_the_limit_cancels_and_after_a_report_rearms() -> None:
    clock = Clock()
    r = Reachability(5.0, clock)
    r.all_down()
    clock.now += 3
    r.answered()
    clock.now += 10
    assert r.check() is None and not r.down
    r.all_down()
    clock.now += 5
    assert r.check() == "no broker reachable for 5s"
    r.answered()
    r.all_down()
    clock.now += 6
    assert r.check() == "no broker reachable for 6s", "a new outage is reported again"


def test_the_latest_connection_error_is_the_detail() -> None:
    clock = Clock()
    r = Reachability(1.0, clock)
    r.all_down("first")
    r.error("Connect failed: Connection refused")
    clock.now += 1
    assert r.check() == "no broker reachable for 1s: Connect failed: Connection refused"


def test_a_timeout_with_no_answer_during_the_message_life_is_a_hung_set() -> None:
    clock = Clock()
    r = Reachability(5.0, clock)
    sent = clock.now
    clock.now += 30
    r.timed_out(sent)
    assert r.check() == "no broker answered for 30s (messages timed out)"
    assert r.check() is None


def test_a_timeout_while_other_messages_were_acknowledged_is_not_a_hung_set() -> None:
    clock = Clock()
    r = Reachability(5.0, clock)
    sent = clock.now
    clock.now += 10
    r.answered()  # the set answered meanwhile: one slow partition, not a dead set
    clock.now += 20
    r.timed_out(sent)
    assert r.check() is None and not r.down


def test_zero_disables_the_all_down_rule_but_not_the_hung_rule() -> None:
    clock = Clock()
    r = Reachability(0.0, clock)
    r.all_down()
    clock.now += 3600
    assert r.check() is None
    sent = clock.now
    clock.now += 30
    r.timed_out(sent)
    assert r.check() is not None


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        Reachability(-1.0)


def test_a_broker_up_in_the_statistics_ends_a_reported_outage_but_not_an_unreported_stall() -> None:
    clock = Clock()
    r = Reachability(5.0, clock)
    sent = clock.now
    clock.now += 30
    r.timed_out(sent)
    r.broker_up()  # a report taken just before the requests timed out
    assert r.check() is not None, "the stall must still be reported"
    assert r.unreachable is not None
    r.broker_up()  # now a broker is really up again
    assert r.unreachable is None and not r.down
    r.all_down()
    r.broker_up()
    clock.now += 10
    assert r.check() is None
