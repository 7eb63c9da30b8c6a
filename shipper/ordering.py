"""Keep each sender's calls in order across an async actor.

Ray runs the calls of an async actor concurrently and does not promise to start them
in the order they were sent. Entries with the same key must still reach Kafka in
the order they were submitted, so every hop numbers its calls per sender
(``source``, ``seq``) and the receiver lets each call through its ordered section
only when it is that sender's turn.

Every sender's sequence starts at 0. A lost call (its sender died, or the receiver
restarted and the calls its predecessor took are gone) must not wedge the pipeline,
so a call that has waited ``max_wait`` seconds for a gap goes ahead anyway, and the
gap is logged and counted; calls numbered below the current turn pass at once. A
receiver that was just restarted meets its senders in the middle of their sequences;
a sender it has never seen waits only ``first_wait`` for the numbers below its first
call (calls sent together arrive within milliseconds of each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

__all__ = ["OrderCounter", "SequenceGate"]

log = logging.getLogger("shipper.ordering")


class OrderCounter:
    """A sender's call numbers: ``next(receiver)`` is ``(sender, n)`` with ``n`` counting
    0, 1, 2... per receiver, so each receiver sees a gapless sequence of its own. The
    one counter every sender uses (the driver, a Router's or a source's feeder, an HTTP
    intake)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.sender = ""
        self._seq: dict[str, int] = {}
        self.renew()

    def renew(self) -> None:
        """Number the next calls as a new sender (a receiver lost the old sequence)."""
        self.sender = f"{self.prefix}{uuid.uuid4().hex[:12]}"
        self._seq.clear()

    def next(self, receiver: str, *, per_receiver_id: bool = False) -> tuple[str, int]:
        """The number of the next call to ``receiver``. With ``per_receiver_id`` the
        sender id names the receiver too (a driver that talks to several Routers)."""
        seq = self._seq.get(receiver, 0)
        self._seq[receiver] = seq + 1
        return (f"{self.sender}:{receiver}" if per_receiver_id else self.sender, seq)

    def receivers(self) -> list[str]:
        """The receivers numbered so far, in the order they were first met."""
        return list(self._seq)


class SequenceGate:
    """Lets ``(source, seq)`` calls through one at a time per source, in ``seq`` order."""

    def __init__(self, max_wait: float = 30.0, first_wait: float = 2.0) -> None:
        self.max_wait = max_wait
        self.first_wait = min(first_wait, max_wait)
        self._next: dict[str, int] = {}
        self._waiting: dict[str, set[int]] = {}
        self._cond: asyncio.Condition | None = None
        self.gaps_skipped = 0

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    @contextlib.asynccontextmanager
    async def turn(self, source: str, seq: int) -> AsyncIterator[None]:
        """``async with gate.turn(src, n):`` runs its body when ``n`` is ``src``'s turn."""
        cond = self._condition()
        # Calls of this source that have not finished (waiting or running), so that a
        # timed-out waiter can tell a real gap from a turn that is merely slow.
        unfinished = self._waiting.setdefault(source, set())
        async with cond:
            limit = self.max_wait if source in self._next else self.first_wait
            self._next.setdefault(source, 0)
            unfinished.add(seq)
            while seq > self._next[source]:
                try:
                    await asyncio.wait_for(cond.wait_for(lambda: self._next[source] >= seq), limit)
                except TimeoutError:
                    # Only the earliest unfinished call skips the gap; the others then
                    # follow it in order instead of all rushing ahead at once.
                    if seq == min(unfinished):
                        self.gaps_skipped += 1
                        log.warning(
                            "call %d from %s waited %.0fs for call %d; going ahead",
                            seq,
                            source,
                            limit,
                            self._next[source],
                        )
                        self._next[source] = seq
        try:
            yield
        finally:
            async with cond:
                unfinished.discard(seq)
                if seq >= self._next[source]:
                    self._next[source] = seq + 1
                cond.notify_all()
