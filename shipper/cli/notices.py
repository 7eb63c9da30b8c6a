"""What ``shipper run`` tells its user on stderr while Kafka is away, without Ray.

The command looks at the shipper every second or two (breaker states, the DLQ's
depth, what it has in flight) and hands each look to :class:`RunNotices`, which
decides what is worth a line:

- a breaker that opens or closes: one line each way, with what opened it;
- a submission that waits for room: why, every ``every`` seconds (not on each look),
  with the DLQ's growth since the previous line;
- the wait's end: how long it took.

Nothing here talks to Ray or Kafka: the command gathers the figures, tests drive
the clock (``tests/unit/test_run_notices.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RunNotices"]

_CLOSED, _OPEN, _HALF_OPEN = 0, 1, 2


class RunNotices:
    """Turns looks at a running shipper into the few lines a user needs."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._states: dict[str, int] = {}
        self._waiting_since: float | None = None
        self._said_at = 0.0
        self._dlq_at: tuple[float, int] | None = None

    def breakers(self, states: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Lines for the breakers that opened or closed since the last look."""
        out = []
        for bs, st in sorted(states.items()):
            new = int(st.get("state", _CLOSED))
            old = self._states.get(bs, _CLOSED)
            self._states[bs] = new
            if new == _OPEN and old != _OPEN:
                why = st.get("why") or "failures"
                out.append(
                    f"Kafka is not taking entries (broker set {bs}: {why}); circuit breaker "
                    f"open: new entries go to the DLQ, next probe in "
                    f"{float(st.get('retry_in', 0.0)):.0f} s"
                )
            elif new == _CLOSED and old != _CLOSED:
                out.append(
                    f"Kafka takes entries again (broker set {bs}): circuit breaker closed; "
                    "the DLQ replays what it holds"
                )
        return out

    def waiting(
        self,
        states: Mapping[str, Mapping[str, Any]],
        dlq_count: int | None,
        in_flight_entries: int,
    ) -> str | None:
        """A line on why a submission waits for room, every ``every`` seconds of the
        wait (None between them)."""
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
            self._said_at = now
            self._dlq_at = (now, dlq_count) if dlq_count is not None else None
            return None
        if now - self._said_at < self.every:
            return None
        parts = [f"waiting {now - self._waiting_since:.0f} s for room in the pipeline"]
        for bs, st in sorted(states.items()):
            state = int(st.get("state", _CLOSED))
            if state == _OPEN:
                parts.append(
                    f"circuit breaker open for broker set {bs} ({st.get('why') or 'failures'}), "
                    f"next probe in {float(st.get('retry_in', 0.0)):.0f} s"
                )
            elif state == _HALF_OPEN:
                parts.append(f"circuit breaker half-open for broker set {bs}: probing Kafka")
        if not any(int(st.get("state", _CLOSED)) != _CLOSED for st in states.values()):
            parts.append("Kafka is slow to acknowledge (circuit breaker closed)")
        if dlq_count is not None:
            rate = ""
            if self._dlq_at is not None and now > self._dlq_at[0]:
                rate = f", {(dlq_count - self._dlq_at[1]) / (now - self._dlq_at[0]):+,.0f}/s"
            parts.append(f"DLQ holds {dlq_count:,} entries{rate}")
            self._dlq_at = (now, dlq_count)
        parts.append(f"{in_flight_entries:,} entries in flight")
        self._said_at = now
        return "; ".join(parts)

    def took(self) -> str | None:
        """The wait is over: a line when it was long enough to have been reported."""
        since, self._waiting_since = self._waiting_since, None
        if since is None:
            return None
        waited = self._clock() - since
        return (
            f"the pipeline takes entries again after {waited:.0f} s"
            if waited >= self.every
            else None
        )
