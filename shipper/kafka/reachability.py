"""Whether a broker set answers, judged from what librdkafka tells its application.

librdkafka keeps retrying a broker that is gone and tells the application only when a
message's ``message.timeout.ms`` (the sink's ``timeout``) has passed. A shipper that
waited for those failures would hold every entry for that long while Kafka is down.
Two earlier signals are enough to say "this set is not answering":

- **Gone** (process killed, port closed, host down): the error callback says
  ``_ALL_BROKERS_DOWN`` at once. If no broker has answered ``after`` seconds later, the
  set is unreachable.
- **Hung** (process frozen, network black hole: TCP accepts, nothing answers): no error
  comes until requests time out, but the messages do: a message that timed out while
  no other message was acknowledged during its whole life says the set did not answer
  for a whole ``timeout``.

A broker answering (a delivery report that is a success, or the client's statistics
showing a broker up) clears both. Until then :attr:`Reachability.unreachable` says why, so the
client can fail new sends at once instead of holding them for the message timeout.
:meth:`Reachability.check` reports each outage once, so its caller acts on the edge
(purge what the client holds, open the breaker), not on every poll. Nothing here knows
librdkafka or Ray: the client feeds it, an injected clock drives it, and unit tests
cover it (``tests/unit/test_reachability.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Reachability"]


class Reachability:
    """Tracks one client's view of its broker set. Thread-safe: the error callback, the
    delivery reports and the poll loop run on librdkafka's and the client's threads."""

    def __init__(self, after: float, clock: Callable[[], float] = time.monotonic) -> None:
        if after < 0:
            raise ValueError(f"after must be >= 0 seconds, got {after}")
        #: Seconds all brokers must stay down before the set counts as unreachable
        #: (0: never judged from the error callback; hung brokers are still judged).
        self.after = after
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None  # all brokers down since (monotonic)
        self._last_answer = float("-inf")  # last time a broker answered (never yet)
        self._stalled: float | None = None  # a timed-out message's age, unreported
        self._reported = False  # this outage was reported: wait for an answer
        self._why = ""
        self._detail = ""

    def all_down(self, detail: str = "") -> None:
        """The error callback said every broker of the set is down."""
        with self._lock:
            if self._down_since is None:
                self._down_since = self._clock()
            if detail:
                self._detail = detail

    def error(self, detail: str) -> None:
        """Another connection error (kept as the detail of a report, no decision)."""
        with self._lock:
            self._detail = detail

    def answered(self) -> None:
        """A broker answered: a message was acknowledged, or a broker is up."""
        now = self._clock()
        with self._lock:
            self._last_answer = now
            self._down_since = None
            self._stalled = None
            self._reported = False

    def broker_up(self) -> None:
        """The client's statistics show a broker up. Ends a reported outage; a stall
        not yet reported stays (a frozen broker's connection can still read UP in a
        report taken just before its requests timed out)."""
        with self._lock:
            if self._reported:
                self._stalled = None
                self._reported = False
            self._down_since = None

    def timed_out(self, sent_at: float) -> None:
        """A message produced at ``sent_at`` (this clock) timed out. If no broker has
        answered since then, the set did not answer for that message's whole life."""
        with self._lock:
            if self._last_answer < sent_at:
                age = self._clock() - sent_at
                self._stalled = max(self._stalled or 0.0, age)

    @property
    def unreachable(self) -> str | None:
        """Why the set was reported unreachable, while no broker has answered since
        (None: not reported, or it answered again)."""
        with self._lock:
            return self._why if self._reported else None

    @property
    def down(self) -> bool:
        """Whether the set counts as not answering now (reported or not)."""
        with self._lock:
            return self._down_since is not None or self._stalled is not None or self._reported

    def check(self) -> str | None:
        """Why the set is unreachable, the first time it is judged so in this outage;
        None otherwise (reachable, not yet long enough, or already reported)."""
        now = self._clock()
        with self._lock:
            if self._reported:
                return None
            why: str | None = None
            if self._stalled is not None:
                why = f"no broker answered for {self._stalled:.0f}s (messages timed out)"
            elif (
                self.after > 0
                and self._down_since is not None
                and now - self._down_since >= self.after
            ):
                why = f"no broker reachable for {now - self._down_since:.0f}s"
            if why is None:
                return None
            self._reported = True
            self._why = f"{why}: {self._detail}" if self._detail else why
            return self._why
