"""The topic batcher core, driven the way the Batcher actor drives it, without Ray.

The in-memory client stands in for the Producer, a list for the DLQ, a fake clock
for time. The property at the end is the one that matters most: whatever Kafka and
the DLQ do, every entry of every call ends with exactly one outcome.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.batching.backpressure import Pressure
from shipper.batching.topic import Chunk, DeadLetters, Gate, TopicBatcher, failed_result
from shipper.breaker import BreakerState
from shipper.config import load_config
from shipper.kafka.client import MemoryProducerClient, SendResult
from shipper.outcomes import DropReason, Reason, SegmentOutcome
from shipper.telemetry import MetricsRecorder


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sink(**kafka: Any) -> Any:
    base: dict[str, Any] = {
        "enabled": True,
        "brokers": ["127.0.0.1:1"],
        "topic": "t",
        "batch_size": 10,
        "batch_timeout": "1s",
        "queue_size": 100,
    }
    base.update(kafka)
    return load_config({"sinks": {"kafka": base}}).sinks.kafka


def core(clock: Clock | None = None, **kafka: Any) -> TopicBatcher:
    return TopicBatcher("t", sink(**kafka), MetricsRecorder("test"), clock=clock or Clock())


def values(n: int, tag: str = "v") -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(n)]


class Harness:
    """What the actor does around the core: produce, dead-letter, collect outcomes."""

    def __init__(self, c: TopicBatcher, client: MemoryProducerClient | None = None) -> None:
        self.c = c
        self.client = client or MemoryProducerClient(partitions=3)
        self.dlq: list[Any] = []
        self.dlq_refuses: str | None = None
        self.outcomes: dict[int, SegmentOutcome] = {}

    def enqueue(
        self, vals: list[bytes], levels: list[str] | None = None, replay: bool = False
    ) -> int:
        t = self.c.open(len(vals), submitted_at=self.c.wall(), replay=replay)
        if not replay and self.c.must_shed(len(vals)):
            kept, _keys, lv, _headers, shed = self.c.shed(t, vals, None, levels)
            self.dead_letter(shed)
            vals, levels = list(kept), lv
        self.c.offer(t, vals, None, levels)
        self.collect()
        return t

    def dead_letter(self, letters: DeadLetters) -> None:
        if not letters:
            return
        if self.dlq_refuses is None:
            self.dlq.extend(letters.failures)
        self.c.dead_lettered(letters, self.dlq_refuses)

    def send(self, chunk: Chunk) -> list[SendResult]:
        results: list[SendResult] = []
        for vals, keys, parts, headers in chunk.parts:
            self.client.send("t", list(vals), keys, parts, results.append, headers=headers)
        return results

    def flush(self) -> None:
        for chunk in self.c.take():
            if self.c.gate() == Gate.DIVERT:
                results = [
                    failed_result("t", list(v), k, Reason.CIRCUIT_OPEN, "open", h)
                    for v, k, _, h in chunk.parts
                ]
            else:
                results = self.send(chunk)
            self.dead_letter(self.c.settle(chunk, results))
        self.collect()

    def collect(self) -> None:
        for ident, out in self.c.finished():
            assert ident not in self.outcomes, "a ticket finished twice"
            self.outcomes[ident] = out


def accounted(out: SegmentOutcome) -> int:
    return out.delivered + out.dlq + len(out.failures)


def test_a_full_batch_is_due_at_once_a_partial_one_after_batch_timeout() -> None:
    clock = Clock()
    h = Harness(core(clock))
    h.enqueue(values(4))
    assert not h.c.due()
    assert h.c.seconds_until_due() == pytest.approx(1.0)
    clock.t += 0.5
    h.enqueue(values(4))
    assert not h.c.due()
    clock.t += 0.5
    assert h.c.due()  # the oldest has waited batch_timeout
    h.enqueue(values(2))
    h.flush()
    assert [o.delivered for o in h.outcomes.values()] == [4, 4, 2]
    assert h.c.queued == 0
    t = h.enqueue(values(10))
    assert h.c.due() and h.c.seconds_until_due() == 0.0
    h.flush()
    assert h.outcomes[t].delivered == 10


def test_delivered_entries_are_counted_in_the_metrics() -> None:
    h = Harness(core())
    h.enqueue(values(10))
    h.flush()
    snap = h.c.rec.snapshot()
    assert snap["counters"]["log_capturer_logs_sent_total"][("kafka", "success")] == 10
    assert snap["counters"]["log_capturer_kafka_delivered_total"][("t",)] == 10
    assert h.c.stats()["delivered"] == 10


def test_failures_go_to_the_dlq_and_count_there_only_once_committed() -> None:
    h = Harness(core())
    h.client.fail_next(3, Reason.TIMEOUT)
    t = h.enqueue(values(10))
    h.flush()
    out = h.outcomes[t]
    assert (out.delivered, out.dlq, out.failures) == (7, 3, [])
    assert [f.reason for f in h.dlq] == [Reason.TIMEOUT] * 3
    assert all(f.value for f in h.dlq) and all(f.topic == "t" for f in h.dlq)


def test_a_refusing_dlq_leaves_typed_failures_not_text_to_parse() -> None:
    h = Harness(core())
    h.dlq_refuses = "DLQ at /x is full"
    h.client.fail_next(2)
    t = h.enqueue(values(10))
    h.flush()
    out = h.outcomes[t]
    assert (out.delivered, out.dlq, out.dlq_refused) == (8, 0, 2)
    assert [f.dropped for f in out.failures] == [DropReason.DLQ_FULL] * 2
    assert "is full" in out.failures[0].error
    dropped = h.c.rec.snapshot()["counters"]["log_capturer_kafka_dropped_total"]
    assert dropped[("dlq_full",)] == 2


@pytest.mark.parametrize(
    ("dlq", "reason", "dropped"),
    [
        ({"enabled": False}, Reason.ERROR, DropReason.DLQ_DISABLED),
        ({"send_on_timeout": False}, Reason.TIMEOUT, DropReason.NOT_DEAD_LETTERED),
        ({"send_on_error": False}, Reason.ERROR, DropReason.NOT_DEAD_LETTERED),
    ],
)
def test_failures_that_do_not_qualify_end_as_counted_drops(
    dlq: dict[str, Any], reason: Reason, dropped: DropReason
) -> None:
    h = Harness(core(dlq_config=dlq))
    h.client.fail_next(1, reason)
    t = h.enqueue(values(10))
    h.flush()
    [f] = h.outcomes[t].failures
    assert (f.reason, f.dropped) == (reason, dropped)
    assert h.dlq == []


def test_a_lost_payload_is_a_drop_with_nothing_to_keep() -> None:
    h = Harness(core())
    t = h.c.open(2, 0.0)
    h.c.offer(t, values(2), None, None)
    [chunk] = h.c.take()
    lost = SendResult("t", 2)
    from shipper.kafka.client import Failure

    lost.failures = [Failure(None, None, Reason.PAYLOAD_LOST, "gone")] * 2
    h.dead_letter(h.c.settle(chunk, [lost]))
    h.collect()
    assert [f.dropped for f in h.outcomes[t].failures] == [DropReason.PAYLOAD_LOST] * 2


def test_replayed_entries_report_failures_back_instead_of_dead_lettering_again() -> None:
    h = Harness(core())
    h.client.fail_next(1)
    t = h.enqueue(values(10), replay=True)
    h.flush()
    out = h.outcomes[t]
    assert (out.delivered, out.dlq, len(out.failures)) == (9, 0, 1)
    assert h.dlq == []
    # Replays are the DLQ's to count, not sends of new entries.
    sent = h.c.rec.snapshot()["counters"]["log_capturer_logs_sent_total"]
    assert sent[("kafka", "success")] == 0


def test_an_open_breaker_diverts_and_half_open_asks_for_a_probe() -> None:
    h = Harness(core())
    h.c.breaker = BreakerState.OPEN
    assert h.c.gate() == Gate.DIVERT
    t = h.enqueue(values(10))
    h.flush()
    out = h.outcomes[t]
    assert out.dlq == 10 and {f.reason for f in h.dlq} == {Reason.CIRCUIT_OPEN}
    h.c.breaker = BreakerState.HALF_OPEN
    assert h.c.gate() == Gate.PROBE


def test_a_replay_meeting_an_open_breaker_is_answered_without_queueing() -> None:
    c = core()
    t = c.open(3, 0.0, replay=True)
    c.answer(t, failed_result("t", values(3), None, Reason.CIRCUIT_OPEN, "open"))
    [(ident, out)] = c.finished()
    assert ident == t and [f.reason for f in out.failures] == [Reason.CIRCUIT_OPEN] * 3
    assert c.queued == 0


def test_breaker_reports_failures_always_and_successes_once_a_second() -> None:
    clock = Clock()
    c = core(clock)
    ok = [SendResult("t", 1, delivered=1)]
    bad = SendResult("t", 1)
    from shipper.kafka.client import Failure

    bad.failures = [Failure(b"x", None, Reason.TIMEOUT, "slow")]
    data = SendResult("t", 1)
    data.failures = [Failure(b"x", None, Reason.MESSAGE_TOO_LARGE, "big")]
    assert c.breaker_report(ok) is True
    assert c.breaker_report(ok) is None  # within the second
    assert c.breaker_report([data]) is None  # the data's fault, not the broker's
    assert c.breaker_report([bad]) is False
    assert c.breaker_report(ok) is True  # the first success after a failure
    clock.t += 1.0
    assert c.breaker_report(ok) is True


def test_pressure_levels_warn_then_shed_lowest_levels_first() -> None:
    h = Harness(core())
    h.c.offer(h.c.open(76, 0.0), values(76, "q"), None, None)
    assert h.c.arrival() == Pressure.WARNING
    assert h.c.arrival() == Pressure.WARNING  # counted once per crossing
    crossings = h.c.rec.snapshot()["counters"]["log_capturer_kafka_backpressure_total"]
    assert crossings[("warning",)] == 1
    h.c.offer(h.c.open(18, 0.0), values(18, "r"), None, None)  # 94 queued
    levels = ["debug", "error", "debug", "info", "error"]
    assert h.c.must_shed(len(levels))
    t = h.enqueue(values(5, "s"), levels)
    shed = [f for f in h.dlq if f.reason == Reason.EMERGENCY_BACKPRESSURE]
    assert shed and all(f.value in (b"s0", b"s2", b"s3") for f in shed)
    assert h.outcomes.get(t) is None  # the kept ones are still queued
    assert h.c.stats()["shed"] == len(shed)


def test_keyed_entries_are_placed_by_librdkafka_keyless_ones_rotate() -> None:
    c = core(partitioning={"enabled": True, "strategy": "hash", "key_field": "k"})
    assert c.partitions_stale()
    c.set_partitions(3)
    assert not c.partitions_stale()
    c.offer(c.open(2, 0.0), [b"1", b"2"], [b"a", b"b"], None)
    c.offer(c.open(2, 0.0), [b"3", b"4"], [b"a", None], None)
    [chunk] = c.take()
    assert chunk.parts[0] == ([b"1", b"2"], [b"a", b"b"], None, None)
    assert chunk.parts[1] == ([b"3", b"4"], [b"a", None], [-1, 0], None)


def test_replicas_take_turns_and_number_their_own_calls() -> None:
    c = core()
    assert [c.next_replica(2) for _ in range(4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_a_call_over_the_budget_goes_in_pieces_that_wait_below_the_emergency_band() -> None:
    # queue 100, bands 75/90/95 %: the budget is 75 entries, a piece 20 (95 - 75 %).
    c = core()
    assert not c.oversized(75) and c.oversized(76)
    assert c.piece_size == 20
    assert c.piece_fits(500)  # an empty queue takes any piece
    t = c.open(150, 0.0)
    c.pieced(t)
    for i in range(4):
        assert c.piece_fits(20)
        c.offer(t, values(20, f"p{i}"), None, None)
    assert not c.piece_fits(20)  # 80 + 20 would reach the emergency band
    assert c.piece_fits(14)  # 94 would not
    assert c.stats()["shed"] == 0


def test_the_pieces_of_one_call_go_to_one_producer() -> None:
    c = core(batch_size=10)
    other = c.open(5, 0.0)
    c.offer(other, values(5, "o"), None, None)
    t = c.open(30, 0.0)
    c.pieced(t)
    for i in range(3):
        c.offer(t, values(10, f"p{i}"), None, None)
    chunks = c.take()
    got = [c.next_replica(3, chunk)[0] for chunk in chunks]
    # The first chunk (the other call) takes replica 0; the pieces' first chunk takes
    # the next turn, and every later chunk of the pieced call follows it there.
    pieced = [
        r for chunk, r in zip(chunks, got, strict=True) if any(s.ident == t for s in chunk.segments)
    ]
    assert len(set(pieced)) == 1 and len(pieced) >= 2
    # Once the call is finished, its replica is forgotten.
    c.forget(t)
    assert c.next_replica(3)[0] != c.next_replica(3)[0]


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 25),  # entries in the call
            st.integers(0, 8),  # messages Kafka fails from here on
            st.sampled_from([None, "full"]),  # the DLQ takes them or refuses
            st.booleans(),  # a replay from the DLQ
            st.sampled_from(list(BreakerState)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_entry_ends_with_exactly_one_outcome(calls: list[tuple[Any, ...]]) -> None:
    h = Harness(core(queue_size=60, batch_size=7))
    sizes: dict[int, int] = {}
    for n, fail, refuse, replay, breaker in calls:
        h.c.breaker = breaker
        h.client.fail_next(fail)
        h.dlq_refuses = refuse
        if not h.c.has_room(n):
            h.flush()
        sizes[h.enqueue(values(n), ["debug"] * n, replay=replay)] = n
        if h.c.due():
            h.flush()
    h.flush()
    assert h.c.queued == 0 and h.c.in_flight_tickets == 0
    assert set(h.outcomes) == set(sizes)
    for ident, out in h.outcomes.items():
        assert accounted(out) == sizes[ident], (out, sizes[ident])
        assert out.dlq_refused == sum(1 for f in out.failures if f.dropped == DropReason.DLQ_FULL)


def test_a_replay_goes_out_at_once_not_after_batch_timeout() -> None:
    clock = Clock()
    c = core(clock, batch_timeout="5s")
    c.offer(c.open(3, 0.0), values(3), None, None)
    assert not c.due()
    assert c.offer(c.open(2, 0.0, replay=True), values(2, "r"), None, None)
    assert c.due() and c.seconds_until_due() == 0.0
    assert sum(ch.size for ch in c.take()) == 5  # the waiting entries go along
    assert not c.due() and c.seconds_until_due() is None


def test_a_failed_probe_fails_its_entries_as_circuit_open_and_keeps_data_failures() -> None:
    from shipper.batching.topic import probe_failed
    from shipper.kafka.client import Failure, SendResult

    r = SendResult(
        topic="t",
        sent=3,
        delivered=1,
        failures=[
            Failure(b"a", None, Reason.TIMEOUT, "Local: Message timed out"),
            Failure(b"b", None, Reason.MESSAGE_TOO_LARGE, "too big"),
        ],
    )
    (out,) = probe_failed([r])
    assert [f.reason for f in out.failures] == [Reason.CIRCUIT_OPEN, Reason.MESSAGE_TOO_LARGE]
    assert out.failures[0].error == "the breaker's probe failed: Local: Message timed out"
    assert out.delivered == 1 and out.sent == 3
    ok = SendResult(topic="t", sent=1, delivered=1)
    assert probe_failed([ok]) == [ok]
