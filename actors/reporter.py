"""What every actor uses to send its metrics: :class:`Reporter`.

A plain object inside an actor: it owns the actor's
:class:`~shipper.telemetry.MetricsRecorder` and sends ``recorder.snapshot()`` to the
telemetry actor (:mod:`actors.telemetry`) at most every ``interval`` seconds
(:meth:`Reporter.maybe_push`), at once (:meth:`Reporter.push_now`), or from a
background task on the actor's event loop (:meth:`Reporter.start_periodic`). With
``telemetry=None`` (metrics disabled) it records locally and sends nothing, so actor
code needs no ``if``. A ``refresh`` callback runs just before every snapshot: the
place to set gauges (queue size, DLQ depth).

Each actor creates the series the alerts read at zero when it starts, so ``rate()``
has data before the first event; ``tests/unit/test_alert_rules.py`` checks that the
alert rules read only series the catalog declares.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

from shipper.telemetry import MetricsRecorder

__all__ = ["Reporter"]

log = logging.getLogger("shipper.telemetry")


class Reporter:
    """Owns an actor's :class:`MetricsRecorder` and pushes its snapshots to telemetry.

    ``telemetry`` is the telemetry actor handle or ``None`` (nothing is sent).
    ``recorder`` is a recorder or the source name for a new one; source names must be
    unique per actor (``batcher:<topic>``, ``producer:<set>:<replica>`` ...).
    Thread-safe: ``maybe_push`` may be called from the event loop and from client
    threads alike. Sending never raises and never waits: a telemetry actor that is
    down loses nothing, since the next snapshot carries the cumulative figures.
    """

    def __init__(
        self,
        telemetry: Any,
        recorder: MetricsRecorder | str,
        *,
        interval: float = 1.0,
        refresh: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        node: str = "",
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self.telemetry = telemetry
        self.node = node
        self.recorder = (
            recorder if isinstance(recorder, MetricsRecorder) else MetricsRecorder(recorder)
        )
        self.interval = float(interval)
        self.refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._last = -math.inf
        self.pushes = 0
        self._task: asyncio.Task[None] | None = None
        self._future: Future[None] | None = None

    @property
    def source(self) -> str:
        return self.recorder.source

    def maybe_push(self) -> bool:
        """Push if ``interval`` has passed since the last push; ``True`` if it did."""
        with self._lock:
            now = self._clock()
            if now - self._last < self.interval:
                return False
            self._last = now
        return self._send()

    def push_now(self) -> bool:
        """Push at once (after a flush, on a breaker change, before closing)."""
        with self._lock:
            self._last = self._clock()
        return self._send()

    def _send(self) -> bool:
        if self.refresh is not None:
            try:
                self.refresh()
            except Exception:
                log.warning("metrics refresh of %s failed", self.source, exc_info=True)
        if self.telemetry is None:
            return False
        snapshot = self.recorder.snapshot()
        if self.node:
            snapshot["node"] = self.node  # the endpoint labels this actor's series with it
        try:
            self.telemetry.push.remote(snapshot)
        except Exception as exc:  # e.g. Ray shutting down; the next push resends all
            log.debug("metrics push from %s failed: %s", self.source, exc)
            return False
        self.pushes += 1
        return True

    # ------------------------------------------------------------------ background

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.maybe_push()

    def start_periodic(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Push every ``interval`` from a task on ``loop`` (default: the running loop).

        Idempotent. Call it from an async method of the actor (the running loop is the
        actor's), or pass the actor's loop from another thread.
        """
        if self._task is not None or self._future is not None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        target = loop or running
        if target is None:
            raise RuntimeError(
                "Reporter.start_periodic needs an event loop: call it from an async "
                "method or pass the loop"
            )
        coro: Coroutine[Any, Any, None] = self._periodic()
        if target is running:
            self._task = target.create_task(coro, name=f"metrics:{self.source}")
        else:
            self._future = asyncio.run_coroutine_threadsafe(coro, target)

    def close(self) -> None:
        """Stop the background pusher (if any) and push the final figures."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._future is not None:
            self._future.cancel()
            self._future = None
        self.push_now()
