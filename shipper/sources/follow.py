"""The file source's policy, without Ray: read within a budget, deliver until acknowledged.

:class:`FileFollower` runs one loop over a :class:`~shipper.sources.files.FileTailer`:

- **Budget.** Lines and bytes handed over and not yet acknowledged stay under
  ``tail.max_inflight_bytes`` and ``max_inflight_lines`` (the queues' warning band),
  so reading slows down before the Batchers have to.
- **Deliver until acknowledged.** Each block is one task: ``send(block)`` (the
  caller's hand-over to the pipeline), and again after ``resend_seconds`` while the
  pipeline cannot take it (a hand-over that raised, or entries that neither Kafka nor
  the DLQ took). Only then is the block acknowledged; the tailer checkpoints a file's
  position once every block before it is. After :meth:`stop_intake` a block that
  comes back refused is left unacknowledged: its lines are read again at the next
  start (the file still has them), never lost.
- **Pacing.** Globs and stats once per ``poll_interval`` (or at once when the file
  system reports that files came or went); positions written at most every 0.2 s
  (and before every hand-over, so a crash resends exactly what was in flight); after
  a file event, a short gap lets the writes that follow gather into one block.

The caller (the Ray actor) supplies ``send`` and a metrics recorder; everything else
is here, and tested with a fake ``send`` (``tests/unit/test_follow.py``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shipper.errors import brief
from shipper.outcomes import SubmissionResult
from shipper.submissions import RunStats
from shipper.telemetry import MetricsRecorder

from .files import Block, FileTailer
from .watch import DirWatch, WatchUnavailable, watched_dirs

__all__ = ["FileFollower"]

log = logging.getLogger("shipper.sources")

#: Wait before a block the pipeline could not take goes again.
RESEND_SECONDS = 2.0
#: Least time between two rounds that follow file-system events: a file written to
#: line by line is read in blocks of what came meanwhile, not once per write (every
#: block costs a Ray call per topic). The lines wait that much longer, at most.
EVENT_GAP_SECONDS = 0.05
#: Least time between two position writes, unless a hand-over needs one.
COMMIT_EVERY = 0.2

Send = Callable[[Block], Awaitable[SubmissionResult]]


def _kind(kind: str) -> dict[str, str]:
    return {"source": "file", "kind": kind}


class FileFollower:
    """Follows a tailer's files and delivers their blocks (see the module's docstring)."""

    def __init__(
        self,
        tailer: FileTailer,
        send: Send,
        recorder: MetricsRecorder,
        *,
        max_inflight_lines: int,
        resend_seconds: float = RESEND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tailer = tailer
        self.tail = tailer.tail
        self.send = send
        self.rec = recorder
        self.max_inflight_lines = max_inflight_lines
        self.resend_seconds = resend_seconds
        self.clock = clock
        self.inflight: set[asyncio.Task[None]] = set()
        self.inflight_bytes = 0
        self.inflight_lines = 0
        self.stopping = False
        self.counts = {"blocks": 0, "lines": 0, "resends": 0, "resent": 0}
        #: What became of the lines read, counted like the driver's own submissions.
        self.stats = RunStats()
        self._room = asyncio.Event()
        self._freed = False  # the last wake-up came from an ack (room in the budget)
        self._last_commit = 0.0
        self._last_scan = float("-inf")
        self._last_round = float("-inf")
        self._watch: DirWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: dict[str, Any] | None = None
        for name in ("log_capturer_source_lines_total", "log_capturer_source_resent_total"):
            recorder.add(name, 0, {"source": "file"})

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Follow the files until :meth:`stop_intake`."""
        if self.tail.watch:
            self._start_watch()
        try:
            while not self.stopping:
                await self._step()
        finally:
            self._stop_watch()

    async def _step(self) -> None:
        try:
            busy = self.round()
        except Exception:  # a bug must not end the loop: the files stay followed
            log.exception("file source round failed")
            busy = False
        self.report()
        self.commit(force=False)
        if busy:
            await asyncio.sleep(0)
            return
        self._room.clear()
        self._freed = False
        try:
            await asyncio.wait_for(self._room.wait(), self.tail.poll_interval)
        except TimeoutError:
            pass
        if not self._freed:
            # Woken by a file event (not by room in the budget): let the writes that
            # follow it gather for a moment, to be read as one block.
            gap = self._last_round + min(EVENT_GAP_SECONDS, self.tail.poll_interval)
            if gap > self.clock() and not self.stopping:
                await asyncio.sleep(gap - self.clock())

    def round(self) -> bool:
        """Scan, read what fits in the budget, hand it over. True when it read
        something (there may be more at once), or should scan again at once."""
        now = self._last_round = self.clock()
        again = False
        if now - self._last_scan >= self.tail.poll_interval:
            self._last_scan = now
            self.tailer.scan()
            if self._update_watch():
                # A file created in a newly watched directory between the scan and the
                # watch raised no event: scan once more, now.
                self._last_scan = float("-inf")
                again = True
        budget = self.tail.max_inflight_bytes - self.inflight_bytes
        if budget <= 0 or self.inflight_lines >= self.max_inflight_lines:
            return again
        blocks = self.tailer.read(budget, self.max_inflight_lines - self.inflight_lines)
        if not blocks:
            return again
        # The "sent" marks are durable before the hand-over: after a crash, exactly the
        # lines between them and the acknowledged marks are counted as re-sent.
        self.commit(force=True)
        loop = asyncio.get_running_loop()
        for b in blocks:
            self.inflight_bytes += len(b.data)
            self.inflight_lines += b.lines
            # Tasks start in creation order and the hand-over numbers its calls before
            # it first waits, so a file's entries reach each topic in the order read.
            task = loop.create_task(self.deliver(b))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        return True

    async def deliver(self, b: Block) -> None:
        """Hand ``b`` over until the pipeline has taken all of it (Kafka or the DLQ)."""
        first = b.first_line
        span = f"{b.path} lines {first}-{first + b.lines - 1}"
        acked = False
        try:
            while True:
                self.counts["blocks"] += 1
                try:
                    result = await self.send(b)
                except Exception as exc:  # e.g. a Batcher that cannot be reached now
                    why = f"could not be handed over ({brief(exc)})"
                else:
                    if not result.dlq_refused:
                        self.stats.record(result)
                        acked = True
                        return
                    if self.stopping:
                        # Not acknowledged: the next start reads these lines again.
                        self.stats.record(result)
                        return
                    why = f"{result.dlq_refused} entries neither in Kafka nor in the DLQ (full)"
                if self.stopping:
                    log.warning("%s %s; left for the next start", span, why)
                    return
                self.counts["resends"] += 1
                self.rec.add("log_capturer_source_problems_total", 1, _kind("resend"))
                log.warning("%s: %s; sending them again in %gs", span, why, self.resend_seconds)
                await asyncio.sleep(self.resend_seconds)
        finally:
            self.inflight_bytes -= len(b.data)
            self.inflight_lines -= b.lines
            if acked:
                self.tailer.acked(b)
                self.counts["lines"] += b.lines
                self.rec.add("log_capturer_source_lines_total", b.lines, {"source": "file"})
            self._freed = True
            self._room.set()

    # ------------------------------------------------------------------ bookkeeping

    def commit(self, force: bool) -> None:
        now = self.clock()
        if force or now - self._last_commit >= COMMIT_EVERY:
            self._last_commit = now
            self.tailer.commit()

    def report(self) -> None:
        """Log and count what the tailer noticed since the last call."""
        rec = self.rec
        for n in self.tailer.take_notices():
            level = logging.INFO if n.kind == "no_match" else logging.WARNING
            log.log(level, "%s", n.text)
            rec.add("log_capturer_source_problems_total", 1, _kind(n.kind))
        if self.tailer.resent_lines:
            self.counts["resent"] += self.tailer.resent_lines
            rec.add(
                "log_capturer_source_resent_total", self.tailer.resent_lines, {"source": "file"}
            )
            self.tailer.resent_lines = 0
        if self.tailer.cut_lines:
            rec.add("log_capturer_source_problems_total", self.tailer.cut_lines, _kind("line_cut"))
            self.tailer.cut_lines = 0
        if self.tailer.multiline_cut:
            rec.add(
                "log_capturer_source_problems_total",
                self.tailer.multiline_cut,
                _kind("multiline_cut"),
            )
            self.tailer.multiline_cut = 0
        if self.tailer.bad_format:
            rec.add(
                "log_capturer_source_problems_total", self.tailer.bad_format, _kind("bad_format")
            )
            self.tailer.bad_format = 0

    # ------------------------------------------------------------------ stopping

    def stop_intake(self) -> None:
        """Read no more (the loop ends at its next step)."""
        self.stopping = True
        self._room.set()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the blocks in flight; returns the blocks left."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=max(0.0, timeout))
        return len(self.inflight)

    def close(self) -> dict[str, Any]:
        """Write the positions, close the files and the store; what was done (again the
        same figures when called twice)."""
        if self._closed is not None:
            return self._closed
        self.report()
        self.tailer.commit()
        out = {**self.counts, "in_flight": len(self.inflight), "files": len(self.tailer.files)}
        self._stop_watch()
        self.tailer.close()
        self.tailer.store.close()
        self._closed = out
        return out

    # ------------------------------------------------------------------ file events

    def _start_watch(self) -> None:
        try:
            self._watch = DirWatch()
        except WatchUnavailable as exc:
            # Off Linux this is expected; on Linux it means no inotify instance was left
            # (fs.inotify.max_user_instances): worth a warning and a count.
            level = logging.INFO if exc.errno == errno.ENOSYS else logging.WARNING
            log.log(level, "%s; files are checked every %gs", exc.strerror, self.tail.poll_interval)
            self.rec.add("log_capturer_source_problems_total", 1, _kind("watch_unavailable"))
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._watch.fd, self._on_events)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._watch.fd)
            self._watch.close()
            self._watch = None

    def _on_events(self) -> None:
        assert self._watch is not None
        changes = self._watch.take()
        if changes.layout:
            self._last_scan = float("-inf")  # look at the globs again in this round
        if changes:
            self._room.set()

    def _update_watch(self) -> bool:
        """Watch the globs' directories and the followed files; True when it began to
        watch one."""
        if self._watch is None:
            return False
        patterns = [p for g in self.tailer.groups for p in g.paths]
        files = [f.path for f in self.tailer.files.values()]
        for d, err in self._watch.update(watched_dirs(patterns, files)):
            log.warning("cannot watch %s for changes (%s); its files are checked every %gs",
                        d, os.strerror(err), self.tail.poll_interval)  # fmt: skip
            self.rec.add("log_capturer_source_problems_total", 1, _kind("watch_unavailable"))
        return self._watch.added > 0
