"""Flush policy and chunk planning of the per-topic Batcher."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shipper.batching.accumulator import Accumulator, Segment, plan_chunks


def seg(n: int, tag: str = "s") -> Segment:
    return Segment(values=[f"{tag}{i}".encode() for i in range(n)])


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@given(
    st.lists(st.integers(min_value=0, max_value=50), max_size=20),
    st.integers(min_value=1, max_value=17),
)
def test_chunks_keep_every_entry_once_in_order_and_never_cut_a_segment(
    sizes: list[int], batch: int
) -> None:
    segs = [seg(n, f"s{i}-") for i, n in enumerate(sizes)]
    chunks = plan_chunks(segs, batch)
    flat = [v for c in chunks for seg in c for v in seg.values]
    assert flat == [v for s in segs for v in s.values]
    sizes_ = [sum(len(seg) for seg in c) for c in chunks]
    # At most batch_size, unless one segment alone is larger.
    assert all(0 < n <= batch or len(c) == 1 for n, c in zip(sizes_, chunks, strict=True))
    # A chunk is closed only when the next segment would not fit.
    for c, nxt in itertools.pairwise(chunks):
        assert sum(len(seg) for seg in c) + len(nxt[0]) > batch


def test_flushes_when_batch_size_is_reached() -> None:
    clock = Clock()
    acc = Accumulator(batch_size=10, batch_timeout=5.0, capacity=100, clock=clock)
    acc.offer(seg(6))
    assert not acc.due()
    acc.offer(seg(4))
    assert acc.due() and acc.seconds_until_due() == 0.0


def test_flushes_when_the_oldest_entry_times_out() -> None:
    clock = Clock()
    acc = Accumulator(batch_size=10, batch_timeout=5.0, capacity=100, clock=clock)
    assert acc.seconds_until_due() is None
    acc.offer(seg(1))
    clock.t += 3
    acc.offer(seg(1))
    assert not acc.due() and acc.seconds_until_due() == 2.0
    clock.t += 2
    assert acc.due()


def test_capacity_counts_entries_until_settled() -> None:
    acc = Accumulator(batch_size=10, batch_timeout=1.0, capacity=20, clock=Clock())
    acc.offer(seg(15))
    assert acc.has_room(5) and not acc.has_room(6)
    chunks = acc.take()
    assert [sum(len(seg) for seg in c) for c in chunks] == [15]  # one segment, never cut
    assert acc.queued == 15 and acc.pending_entries == 0 and acc.utilization == 0.75
    assert not acc.has_room(6)
    acc.settle(15)
    assert acc.queued == 0 and acc.has_room(20)


def test_an_empty_queue_takes_an_oversized_segment() -> None:
    acc = Accumulator(batch_size=10, batch_timeout=1.0, capacity=20, clock=Clock())
    assert acc.has_room(500)
