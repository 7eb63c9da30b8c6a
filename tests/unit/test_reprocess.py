"""The one reprocessor: paced steps, retries and parking, when a pass stops.

The re-send is a fake that plays Kafka (it fails what the test says, records the size
of each call), the store is the in-memory one; the LMDB store follows the same
contract (tests/unit/test_dlq_store.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.dlq import DlqFilter, DlqRecord, MemoryDlqStore
from shipper.dlq.reprocess import NO_TOPIC, ReplaySummary, Reprocessor, next_retry
from shipper.kafka.client import Failure
from shipper.outcomes import Reason
from shipper.telemetry import MetricsRecorder


def rec(value: bytes, topic: str = "t", key: bytes | None = None) -> DlqRecord:
    return DlqRecord(value=value, topic=topic, key=key, reason=Reason.TIMEOUT, error="outage")


class Kafka:
    """A re-send that fails the values in ``refuse`` (with ``reason``) and keeps the
    rest; ``calls`` are the sizes it was asked for; ``in_flight`` the most at once."""

    def __init__(self, refuse: set[bytes] | None = None, reason: Reason = Reason.ERROR) -> None:
        self.refuse = refuse or set()
        self.reason = reason
        self.calls: list[int] = []
        self.got: list[bytes] = []
        self._now = 0
        self.in_flight = 0
        self.headers: list[list[list[tuple[str, bytes]]] | None] = []

    async def __call__(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: list[list[tuple[str, bytes]]] | None = None,
    ) -> Sequence[Failure]:
        self.calls.append(len(values))
        self.headers.append(headers)
        self._now += 1
        self.in_flight = max(self.in_flight, self._now)
        await asyncio.sleep(0)
        self._now -= 1
        out = []
        for v, k in zip(values, keys, strict=True):
            if v in self.refuse:
                out.append(Failure(v, k, self.reason, f"refused {v!r}"))
            else:
                self.got.append(v)
        return out


def run(store: MemoryDlqStore, kafka: Kafka, **kw: object) -> ReplaySummary:
    opts: dict[str, object] = {
        "batch_size": 2,
        "max_retries": 3,
        "max_step": 16,
        "window": 3,
        "spend_every": 0.0,
        "wall": None,
    }
    opts.update({k: kw.pop(k) for k in list(kw) if k in opts})
    if opts["wall"] is None:
        del opts["wall"]
    r = Reprocessor(store, kafka, **opts)  # type: ignore[arg-type]
    return asyncio.run(r.run(**kw))  # type: ignore[arg-type]


def test_steps_ramp_up_from_batch_size_then_run_several_at_once() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(str(i).encode()) for i in range(200)])
    kafka = Kafka()
    s = run(store, kafka)
    assert (s.selected, s.delivered, s.failed, s.ok) == (200, 200, 0, True)
    assert kafka.calls[:4] == [2, 4, 8, 16]  # the paced ramp: a trickle first
    assert max(kafka.calls) == 16
    assert kafka.in_flight > 1  # a window once at full size
    assert store.count() == 0
    assert kafka.got == sorted(kafka.got, key=int)  # oldest first


def test_a_replay_sends_each_records_headers_and_none_when_no_record_has_any() -> None:
    store = MemoryDlqStore()
    with_h = DlqRecord(
        value=b"a", topic="t", headers=[("env", b"prod")], reason=Reason.TIMEOUT, error="x"
    )
    store.put_batch([with_h, rec(b"b")])
    kafka = Kafka()
    assert run(store, kafka, batch_size=10).delivered == 2
    assert kafka.headers == [[[("env", b"prod")], []]]
    store.put_batch([rec(b"c")])
    run(store, kafka, batch_size=10)
    assert kafka.headers[-1] is None  # no record with headers: the batch path


def test_a_failed_record_spends_a_retry_and_is_parked_at_max_retries() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"bad"), rec(b"ok")])
    recorder = MetricsRecorder("t")
    for attempt in (1, 2, 3):
        r = Reprocessor(store, Kafka({b"bad"}), batch_size=5, max_retries=3, recorder=recorder)
        s = asyncio.run(r.run())
        assert s.failed == (1 if attempt < 4 else 0)
    [left] = store.select(DlqFilter(), 10)
    assert (left.value, left.attempts, left.parked) == (b"bad", 3, True)
    assert asyncio.run(Reprocessor(store, Kafka(), batch_size=5, max_retries=3).run()).selected == 0
    replays = recorder.snapshot()["counters"]["log_capturer_dlq_replays_total"]
    assert replays[("timeout", "delivered")] == 1
    assert replays[("timeout", "requeued")] == 2
    assert replays[("timeout", "given_up")] == 1


def test_a_pass_stops_when_kafka_refuses_a_whole_step() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(str(i).encode()) for i in range(10)])
    kafka = Kafka({str(i).encode() for i in range(10)})
    s = run(store, kafka)
    assert s.stopped_early and kafka.calls == [2]
    assert (s.failed, s.delivered) == (2, 0)
    attempts = sorted(r.attempts for r in store.select(DlqFilter(), 20))
    assert attempts == [0] * 8 + [1] * 2  # the rest untouched
    s = run(store, Kafka({str(i).encode() for i in range(10)}), keep_going=True)
    assert not s.stopped_early and s.failed == 10


def test_an_open_breaker_spends_no_retry_and_stops_the_pass() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"a"), rec(b"b"), rec(b"c")])
    s = run(store, Kafka({b"a", b"b", b"c"}, Reason.CIRCUIT_OPEN))
    assert (s.untouched, s.failed, s.stopped_early, s.ok) == (2, 0, True, False)
    assert {r.attempts for r in store.select(DlqFilter(), 10)} == {0}


def test_a_resend_that_breaks_is_untouched_and_counted_as_broken() -> None:
    async def broken(
        topic: str, values: list[bytes], keys: list[bytes | None], headers: Any = None
    ) -> list[Failure]:
        raise RuntimeError("actor restarting")

    store = MemoryDlqStore()
    store.put_batch([rec(b"a"), rec(b"b"), rec(b"c")])
    s = run(store, broken)  # type: ignore[arg-type]
    assert (s.untouched, s.broken, s.failed, s.stopped_early) == (2, 2, 0, True)
    assert {r.attempts for r in store.select(DlqFilter(), 10)} == {0}
    # An open breaker is untouched too, but nothing broke: no early retry for it.
    s = run(store, Kafka({b"a", b"b", b"c"}, Reason.CIRCUIT_OPEN))
    assert (s.untouched, s.broken) == (2, 0)


def test_after_a_broken_resend_the_next_pass_comes_sooner_backing_off() -> None:
    waits, wait = [], 0.0
    for soon in (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1):
        wait = next_retry(wait, bool(soon), 300.0)
        waits.append(wait)
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 0, 1]
    assert next_retry(0.0, True, 0.5) == 0.5  # never later than the interval itself


def test_failures_while_kafka_is_tried_ask_for_a_pass_soon_that_spends_no_retry() -> None:
    """The mass-restart case: records fail (the breaker closed, a Producer restarting)
    soon after they went to the DLQ. The pass asks for another one soon, and such quick
    passes spend no retry: a record spends at most one per interval."""
    store = MemoryDlqStore()
    store.put_batch([rec(b"a"), rec(b"b")])
    now = [store.select(DlqFilter(), 10)[0].last_failure + 5.0]  # 5 s after it failed
    kafka = Kafka({b"a", b"b"}, Reason.ERROR)
    s = run(store, kafka, spend_every=300.0, wall=lambda: now[0])
    assert (s.early, s.failed, s.again_soon, s.ok) == (2, 0, True, False)
    assert {r.attempts for r in store.select(DlqFilter(), 10)} == {0}
    # A whole interval after the last failure, a failure spends a retry again.
    now[0] += 300.0
    s = run(store, kafka, spend_every=300.0, wall=lambda: now[0])
    assert (s.early, s.failed, s.again_soon) == (0, 2, False)
    assert {r.attempts for r in store.select(DlqFilter(), 10)} == {1}
    # Kafka back: the next quick pass delivers them.
    kafka.refuse.clear()
    assert run(store, kafka, spend_every=300.0, wall=lambda: now[0]).delivered == 2
    # A broken re-send asks for a pass soon too; an open breaker does not.
    assert ReplaySummary(broken=1).again_soon and not ReplaySummary(untouched=3).again_soon


def test_data_failures_do_not_stop_the_pass() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"big"), rec(b"big2"), rec(b"fine")])
    s = run(store, Kafka({b"big", b"big2"}, Reason.MESSAGE_TOO_LARGE))
    assert (s.delivered, s.failed, s.stopped_early) == (1, 2, False)


def test_records_are_matched_by_value_and_key_and_a_topicless_one_fails() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"same"), rec(b"same"), rec(b"same", key=b"k"), rec(b"x", topic="")])

    async def once(
        topic: str, values: list[bytes], keys: list[bytes | None], headers: Any = None
    ) -> list[Failure]:
        # Fails one of the two equal keyless records (which one is moot).
        return [Failure(b"same", None, Reason.ERROR, "no")]

    s = asyncio.run(Reprocessor(store, once, batch_size=10, max_retries=5).run())
    assert (s.delivered, s.failed) == (2, 2)
    left = store.select(DlqFilter(), 10)
    assert [(r.value, r.key) for r in left] == [(b"same", None), (b"x", None)]
    assert left[1].error == NO_TOPIC


def test_a_fixed_list_of_ids_counts_the_ones_gone_meanwhile() -> None:
    store = MemoryDlqStore()
    ids = store.put_batch([rec(b"a"), rec(b"b"), rec(b"c")])
    store.delete([ids[1]])
    store.put_batch([rec(b"late")])  # arrived after the operator chose: not touched
    s = run(store, Kafka(), ids=ids)
    assert (s.selected, s.delivered, s.gone, s.ok) == (3, 2, 1, True)
    assert [r.value for r in store.select(DlqFilter(), 10)] == [b"late"]


def test_limit_bounds_what_a_pass_reads() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(str(i).encode()) for i in range(30)])
    s = run(store, Kafka(), limit=7)
    assert (s.selected, s.delivered, store.count()) == (7, 7, 23)


@settings(max_examples=60)
@given(
    st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=60),
    st.sets(st.binary(min_size=1, max_size=3), max_size=10),
    st.integers(1, 8),
)
def test_every_record_is_delivered_or_kept_never_both(
    values: list[bytes], refuse: set[bytes], batch: int
) -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(v) for v in values])
    kafka = Kafka(refuse)
    s = run(store, kafka, batch_size=batch, keep_going=True)
    kept = [r.value for r in store.select(DlqFilter(), 1000)]
    assert sorted(kafka.got + kept) == sorted(values)
    assert s.delivered == len(kafka.got) and s.failed == len(kept)
