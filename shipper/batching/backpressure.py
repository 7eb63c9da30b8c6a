"""Backpressure policy for a bounded Batcher queue, without Ray.

A Batcher's queue has a fixed capacity; its utilization (queued / capacity) sets the
pressure level, and the level says what the pipeline does::

    utilization 0 ---------- 0.75 ---------- 0.90 ---------- 0.95 ------------------ 1.0
    pressure    |  NORMAL    |   WARNING     |   CRITICAL    |       EMERGENCY       |
    action      |  -         |   warn,       |   + timeouts  |  + shed to the DLQ,   |
                |            |   rate-limited|   escalated   |    lowest levels first|

The emergency band is where entries are shed to the DLQ (reason
``emergency_backpressure``), and it is split by log level so the least important
entries go first. Each severity may fill the queue only up to its own ceiling::

    0.95 ......... 0.9667 ......... 0.9833 ......... 1.0        (default thresholds)
     |  trace/debug |     info       |     warn       |
     |  shed above  |  shed above    |  shed above    |  error/fatal/critical: admitted
     |  0.95        |  0.9667        |  0.9833        |  up to 1.0, then they WAIT

Entries at error, fatal or critical are never shed: when the queue is physically
full, :meth:`BackpressurePolicy.admit` reports them as *waiting* and the caller blocks
(or, past its timeout, raises a ``BackpressureError``). An unknown or missing level
counts as info.

Within one arriving batch, room is handed out by severity, highest first: an error at
the end of a batch gets a slot before a debug line at its start, and a debug line is
admitted only if the queue, *with* the batch's more important entries in it, is still
under the debug ceiling. That ordering is what guarantees a level is refused only when
every lower level is refused too. Admitted indices are returned in batch order, so
what is admitted keeps its relative order.

With ``enabled=False`` nothing is shed and timeouts are not escalated; the queue is
still bounded, so whatever does not fit (lowest levels first) waits.

Timeout escalation (``timeout_escalation``): from the critical threshold on, the
timeouts the caller derives from :meth:`BackpressurePolicy.escalated_timeout` are
doubled, and from the emergency threshold on quadrupled. A slow but working broker
then gets more time per batch instead of producing a burst of timeout failures (each
of which would add to the DLQ) exactly when the pipeline is most loaded.

Warnings under pressure go through :class:`RateLimitedLog`, so a queue that hovers
around a threshold logs once per interval, with a count of what was suppressed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "Admission",
    "BackpressurePolicy",
    "Pressure",
    "RateLimitedLog",
    "Severity",
    "severity",
]


class Pressure(IntEnum):
    """Pressure level of a queue; ordered, so ``level >= Pressure.CRITICAL`` reads well."""

    NORMAL = 0
    WARNING = 1
    CRITICAL = 2
    EMERGENCY = 3


class Severity(IntEnum):
    """Shedding classes of log levels, lowest shed first."""

    LOW = 0  # trace, debug
    INFO = 1  # info, notice, and anything unknown
    WARN = 2  # warn, warning
    HIGH = 3  # error, fatal, critical and friends: never shed, they wait


_SEVERITY_OF_LEVEL: dict[str, Severity] = {
    "trace": Severity.LOW,
    "debug": Severity.LOW,
    "info": Severity.INFO,
    "notice": Severity.INFO,
    "warn": Severity.WARN,
    "warning": Severity.WARN,
    "error": Severity.HIGH,
    "err": Severity.HIGH,
    "fatal": Severity.HIGH,
    "critical": Severity.HIGH,
    "crit": Severity.HIGH,
    "alert": Severity.HIGH,
    "emerg": Severity.HIGH,
    "emergency": Severity.HIGH,
    "panic": Severity.HIGH,
}


def severity(level: str | None) -> Severity:
    """Shedding class of a log level name (case-insensitive; unknown -> INFO)."""
    if not level:
        return Severity.INFO
    return _SEVERITY_OF_LEVEL.get(level.strip().lower(), Severity.INFO)


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with each entry of an arriving batch (indices into the batch).

    ``admitted``: append to the queue. ``shed``: hand to the DLQ with reason
    ``emergency_backpressure``. ``waiting``: no room at all and too important to shed;
    the caller waits for room and offers them again. Together they are every index
    exactly once.
    """

    admitted: list[int]
    shed: list[int]
    waiting: list[int]
    pressure: Pressure  # the queue's level when the batch arrived

    @property
    def wait(self) -> int:
        """How many entries must wait for room."""
        return len(self.waiting)


@dataclass(frozen=True, slots=True)
class BackpressurePolicy:
    """The thresholds of ``backpressure_config`` and the decisions that follow from them.

    Thresholds are fractions of the queue capacity with
    ``0 < warning <= critical <= emergency <= 1``; a level starts *at* its threshold.
    """

    warning: float = 0.75
    critical: float = 0.90
    emergency: float = 0.95
    enabled: bool = True
    timeout_escalation: bool = True

    CRITICAL_TIMEOUT_FACTOR = 2.0
    EMERGENCY_TIMEOUT_FACTOR = 4.0

    def __post_init__(self) -> None:
        if not 0.0 < self.warning <= self.critical <= self.emergency <= 1.0:
            raise ValueError(
                "backpressure thresholds must satisfy 0 < warning <= critical <= emergency"
                f" <= 1, got warning={self.warning}, critical={self.critical}, "
                f"emergency={self.emergency}"
            )

    def level(self, utilization: float) -> Pressure:
        """Pressure level at ``utilization`` (queued / capacity). NORMAL when disabled."""
        if not self.enabled:
            return Pressure.NORMAL
        if utilization >= self.emergency:
            return Pressure.EMERGENCY
        if utilization >= self.critical:
            return Pressure.CRITICAL
        if utilization >= self.warning:
            return Pressure.WARNING
        return Pressure.NORMAL

    def ceiling(self, sev: Severity) -> float:
        """Utilization up to which entries of ``sev`` are admitted (see module doc)."""
        if not self.enabled or sev is Severity.HIGH:
            return 1.0
        # LOW, INFO, WARN take the emergency threshold and the next two thirds of the
        # band above it, so each step up in severity keeps some room for itself.
        return self.emergency + (1.0 - self.emergency) * int(sev) / 3.0

    def limit(self, sev: Severity, capacity: int) -> int:
        """Queue length up to which entries of ``sev`` are admitted."""
        if not self.enabled or sev is Severity.HIGH:
            return capacity
        # The epsilon keeps 0.95 * 100 == 94.99999... from losing a slot.
        return min(capacity, math.floor(self.ceiling(sev) * capacity + 1e-9))

    def admit(self, levels: Sequence[str | None], queued: int, capacity: int) -> Admission:
        """Decide, for a batch with these log ``levels``, what enters a queue.

        ``queued`` entries are already in a queue of ``capacity``. Entries below the
        emergency band are all admitted; in it, lower levels are shed first; entries
        that are never shed wait when there is no room at all.
        """
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        queued = max(queued, 0)
        by_sev: list[list[int]] = [[], [], [], []]
        for i, lvl in enumerate(levels):
            by_sev[severity(lvl)].append(i)
        used = queued
        admitted: list[int] = []
        shed: list[int] = []
        waiting: list[int] = []
        for sev in (Severity.HIGH, Severity.WARN, Severity.INFO, Severity.LOW):
            members = by_sev[sev]
            room = max(0, self.limit(sev, capacity) - used)
            admitted += members[:room]
            used += min(room, len(members))
            rest = members[room:]
            if sev is Severity.HIGH or not self.enabled:
                waiting += rest
            else:
                shed += rest
        admitted.sort()
        shed.sort()
        waiting.sort()
        return Admission(admitted, shed, waiting, self.level(queued / capacity))

    def escalated_timeout(self, base: float, utilization: float) -> float:
        """``base`` scaled for pressure: x2 at critical, x4 at emergency (if enabled)."""
        if not (self.enabled and self.timeout_escalation):
            return base
        lvl = self.level(utilization)
        if lvl is Pressure.EMERGENCY:
            return base * self.EMERGENCY_TIMEOUT_FACTOR
        if lvl is Pressure.CRITICAL:
            return base * self.CRITICAL_TIMEOUT_FACTOR
        return base


class RateLimitedLog:
    """Log at most once per ``interval`` seconds per key, counting what was suppressed.

    Keys separate independent streams (one per topic, say). ``clock`` is monotonic
    seconds. Not thread-safe: one owner.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.interval = interval
        self._clock = clock
        self._logger = logger or logging.getLogger("shipper.batching.backpressure")
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def ready(self, key: str = "") -> int | None:
        """``None`` if a message for ``key`` must be suppressed now; otherwise the
        number suppressed since the last one that went out (and the window restarts).
        """
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)

    def log(self, level: int, msg: str, *args: object, key: str = "") -> bool:
        """``logger.log(level, msg, *args)`` unless rate-limited; True if it logged."""
        suppressed = self.ready(key)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object, key: str = "") -> bool:
        return self.log(logging.WARNING, msg, *args, key=key)
