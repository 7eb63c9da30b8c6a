"""The circuit breaker state machine for one broker set, without Ray.

The breaker stops the pipeline from hammering a broker set that keeps failing. While it
is open, callers skip the produce attempt and hand their batches straight to the DLQ
(reason ``circuit_open``). The supervisor actor keeps one breaker per broker set and
pushes state changes to the actors that need them through :meth:`CircuitBreaker.on_change`,
so nobody polls the breaker per batch.

::

                 failure_threshold consecutive failures
     +--------+ ---------------------------------------> +------+
     | CLOSED |   (a success resets the failure count)   | OPEN |
     |   0    |                                          |  1   |
     +--------+                                          +------+
         ^                                                |   ^
         |                         open_timeout elapsed:  |   | the probe
         |                         the next allow() is    |   | fails
         |                         the probe              v   |
         |                                             +-----------+
         |   success_threshold consecutive successes   | HALF_OPEN |
         +-------------------------------------------- |     2     |
                                                       +-----------+

The integer values are the ones the spec's ``circuit_breaker_state`` metric uses.

Rules worth knowing:

- Time comes from the injected ``clock`` (monotonic seconds), so tests drive it.
- Half-open admits exactly one probe at a time. A probe whose outcome never arrives
  (the actor carrying it died) would wedge the breaker, so after another
  ``open_timeout`` without an outcome the next :meth:`allow` hands out a new probe.
- Outcomes reported while the breaker is open belong to batches sent before it
  opened; they are ignored, so a late failure does not push the retry further out
  and a late success does not close a breaker nobody has probed.
- :meth:`trip` opens the breaker at once, whatever the count: for a signal stronger
  than one failed batch (no broker of the set reachable, or none answering for a whole
  ``timeout``). An open breaker ignores it (the retry time stays where it was).
  :meth:`probe_now` is its counterpart: a broker answers again, so an open breaker
  turns half-open without waiting out ``open_timeout``.
- Not thread-safe: one owner (the supervisor actor) calls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

__all__ = ["BreakerListener", "BreakerState", "CircuitBreaker"]


class BreakerState(IntEnum):
    """Breaker states; the values are the ``circuit_breaker_state`` metric values."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


_PROBE_FAILED = "the half-open probe failed"

BreakerListener = Callable[[BreakerState, BreakerState], None]
"""Called as ``listener(old, new)`` after every state change."""


class CircuitBreaker:
    """Closed / open / half-open breaker driven by consecutive outcomes.

    ``failure_threshold`` consecutive failures open it; after ``open_timeout``
    seconds one probe is let through (half-open); ``success_threshold`` consecutive
    successful probes close it, and any failed probe opens it again.
    """

    def __init__(
        self,
        failure_threshold: int = 10,
        success_threshold: int = 2,
        open_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if success_threshold < 1:
            raise ValueError(f"success_threshold must be >= 1, got {success_threshold}")
        if open_timeout < 0:
            raise ValueError(f"open_timeout must be >= 0 seconds, got {open_timeout}")
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.open_timeout = open_timeout
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive failures while closed
        self._successes = 0  # consecutive successful probes while half-open
        self._opened_at = 0.0
        self._probe_since: float | None = None  # when the in-flight probe was handed out
        self._opens_total = 0
        self._why: str | None = None  # what opened it last
        self._listeners: list[BreakerListener] = []

    # -- observation ---------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state. Reading it never changes it (only :meth:`allow` does)."""
        return self._state

    @property
    def opens_total(self) -> int:
        """How many times the breaker has opened (closed->open and half-open->open)."""
        return self._opens_total

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def consecutive_successes(self) -> int:
        return self._successes

    @property
    def probe_in_flight(self) -> bool:
        return self._probe_since is not None

    @property
    def why(self) -> str | None:
        """What opened the breaker the last time (None: it never opened)."""
        return self._why

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0.0 unless open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.open_timeout - self._clock())

    def on_change(self, listener: BreakerListener) -> Callable[[], None]:
        """Register ``listener(old, new)``; returns a function that unregisters it.

        Listeners run synchronously, in registration order, after the state has
        changed, so a listener that reads :attr:`state` sees the new one. They must not
        raise: an exception propagates to whoever triggered the change.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- decisions and outcomes ----------------------------------------------------

    def allow(self) -> bool:
        """May the caller attempt a produce now?

        Closed: always. Open: no, until ``open_timeout`` has passed; then the breaker
        turns half-open and this call is the probe. Half-open: only while no probe is
        in flight (or the in-flight one has gone silent for ``open_timeout``).
        """
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.open_timeout:
                return False
            self._successes = 0
            self._probe_since = now
            self._transition(BreakerState.HALF_OPEN)
            return True
        # HALF_OPEN
        if self._probe_since is None or now - self._probe_since >= self.open_timeout:
            self._probe_since = now
            return True
        return False

    def record_success(self) -> None:
        """Report a batch that Kafka acknowledged."""
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN:
            self._probe_since = None
            self._successes += 1
            if self._successes >= self.success_threshold:
                self._failures = 0
                self._successes = 0
                self._transition(BreakerState.CLOSED)
        # OPEN: a late outcome of a batch sent before the breaker opened; ignore it.

    def record_failure(self) -> None:
        """Report a batch that failed because of the broker (not because of its data)."""
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(f"{self._failures} failed batches in a row")
        elif self._state is BreakerState.HALF_OPEN:
            # Keep what opened it first: the probe failing says the cause holds.
            cause = (self._why or "").split(_PROBE_FAILED)[0].rstrip("; ")
            self._open(f"{cause}; {_PROBE_FAILED}" if cause else _PROBE_FAILED)
        # OPEN: late outcome; ignoring it keeps the retry time where it was.

    def trip(self, why: str) -> bool:
        """Open now, whatever the failure count (``why`` says what was seen). Closed or
        half-open: opens and returns True. Open already: nothing changes, False."""
        if self._state is BreakerState.OPEN:
            return False
        self._open(why)
        return True

    def probe_now(self) -> bool:
        """Open: turn half-open at once, before ``open_timeout`` (a broker of the set
        answers again); the next :meth:`allow` is the probe, and the probe still decides.
        Returns whether anything changed."""
        if self._state is not BreakerState.OPEN:
            return False
        self._successes = 0
        self._probe_since = None
        self._transition(BreakerState.HALF_OPEN)
        return True

    # -- internals -----------------------------------------------------------------

    def _open(self, why: str) -> None:
        self._why = why
        self._opened_at = self._clock()
        self._probe_since = None
        self._successes = 0
        self._failures = 0
        self._opens_total += 1
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        # Copy: a listener may unsubscribe itself while we iterate.
        for listener in list(self._listeners):
            listener(old, new)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state.name}, failures={self._failures}/"
            f"{self.failure_threshold}, successes={self._successes}/"
            f"{self.success_threshold}, opens_total={self._opens_total})"
        )
