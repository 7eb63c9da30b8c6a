"""Per-sender ordering of concurrent async calls."""

from __future__ import annotations

import asyncio
import random

from shipper.ordering import OrderCounter, SequenceGate


def test_calls_run_in_sequence_order_whatever_order_they_arrive_in() -> None:
    async def scenario() -> list[tuple[str, int]]:
        gate = SequenceGate()
        ran: list[tuple[str, int]] = []

        async def call(src: str, seq: int) -> None:
            await asyncio.sleep(random.random() / 100)
            async with gate.turn(src, seq):
                await asyncio.sleep(0)
                ran.append((src, seq))

        calls = [call(s, i) for s in ("a", "b") for i in range(30)]
        random.Random(4).shuffle(calls)
        await asyncio.gather(*calls)
        return ran

    ran = asyncio.run(scenario())
    assert [n for s, n in ran if s == "a"] == list(range(30))
    assert [n for s, n in ran if s == "b"] == list(range(30))


def test_a_missing_call_does_not_wedge_the_gate() -> None:
    async def scenario() -> tuple[list[int], int]:
        gate = SequenceGate(max_wait=0.05)
        ran: list[int] = []

        async def call(seq: int) -> None:
            async with gate.turn("a", seq):
                ran.append(seq)

        await asyncio.gather(call(0), call(2), call(3))  # 1 never comes
        return ran, gate.gaps_skipped

    ran, skipped = asyncio.run(scenario())
    assert ran == [0, 2, 3] and skipped == 1


def test_one_counter_numbers_each_receiver_from_zero_and_a_renewal_starts_over() -> None:
    c = OrderCounter()
    first = c.next("n1")
    assert first == (c.sender, 0)
    assert c.next("n1") == (c.sender, 1) and c.next("n2") == (c.sender, 0)
    assert c.receivers() == ["n1", "n2"]
    # A driver names the receiver in its sender id (one sequence per Router).
    assert c.next("n1", per_receiver_id=True) == (f"{c.sender}:n1", 2)
    old = c.sender
    c.renew()
    assert c.sender != old and c.next("n1") == (c.sender, 0) and c.receivers() == ["n1"]
