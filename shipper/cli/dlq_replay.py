"""``shipper dlq replay``: re-send records by hand, with the reprocessor's own rules.

The records that match when the command starts are replayed through a producer of
the command's own (the config's librdkafka settings) by the one
:class:`~shipper.dlq.reprocess.Reprocessor` the DLQ actor runs too: the same paced
steps, retries, parking and stopping rule. Progress goes to stderr, the summary to
stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from shipper.cli.dlq_common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    build_filter,
    iter_matching,
    locate,
    oneline,
    open_store,
    record_lines,
)
from shipper.dlq import DlqFilter, DlqStore
from shipper.dlq.reprocess import ReplaySummary, Reprocessor, Resend
from shipper.durations import format_duration
from shipper.kafka.client import ConfluentProducerClient, Failure, ProducerClient, SendResult
from shipper.kafka.settings import librdkafka_settings
from shipper.logs import librdkafka_logger
from shipper.outcomes import Reason


class Progress:
    """Replay progress on stderr: a redrawn bar on a terminal, plain lines otherwise.

    On a terminal the bar is redrawn at most every ``tty_interval`` seconds; elsewhere
    (a log file, CI) one line is written every ``line_interval`` seconds, so the
    output stays readable. :meth:`finish` always writes the final state.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
        line_interval: float = 5.0,
        tty_interval: float = 0.1,
        width: int = 30,
    ) -> None:
        self.total = total
        self.stream = stream
        self.tty = tty
        self.clock = clock
        self.interval = tty_interval if tty else line_interval
        self.width = width
        self.started = clock()
        self._shown_at = self.started
        self.done = self.delivered = self.failed = 0

    def update(self, done: int, delivered: int, failed: int) -> None:
        self.done, self.delivered, self.failed = done, delivered, failed
        now = self.clock()
        if now - self._shown_at >= self.interval:
            self._show(now)

    def finish(self) -> None:
        self._show(self.clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        counts = (
            f"{self.done}/{self.total} ({pct:.0f}%)  {rate:,.0f}/s  "
            f"delivered {self.delivered}  failed {self.failed}"
        )
        if not self.tty:
            return f"replay: {counts}"
        filled = self.width if not self.total else self.width * self.done // self.total
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {counts}"

    def _show(self, now: float) -> None:
        self._shown_at = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()


def client_resend(client: ProducerClient, wait: float) -> Resend:
    """The reprocessor's re-send through a producer client of our own. ``wait`` bounds
    the wait for one topic's delivery reports; past it, every record of the call
    counts as a timeout (it may still reach Kafka, so it stays in the DLQ)."""

    async def resend(
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: list[list[tuple[str, bytes]]] | None = None,
    ) -> list[Failure]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SendResult] = loop.create_future()

        def settle(result: SendResult) -> None:
            if not fut.done():  # a late report after the wait gave up
                fut.set_result(result)

        def done(result: SendResult) -> None:
            loop.call_soon_threadsafe(settle, result)

        client.send(topic, values, keys, None, done, headers=headers)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), wait)
        except TimeoutError:
            error = (
                f"no delivery report within {format_duration(wait)}; kept in the DLQ "
                "(the records may still reach Kafka)"
            )
            hs = headers if headers is not None else [None] * len(values)
            return [
                Failure(v, k, Reason.TIMEOUT, error, h)
                for v, k, h in zip(values, keys, hs, strict=True)
            ]
        return result.failures

    return resend


def replay_records(
    store: DlqStore,
    client: ProducerClient,
    ids: Sequence[int],
    *,
    include_parked: bool,
    batch_size: int,
    max_retries: int,
    wait: float,
    keep_going: bool = False,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Re-send the records ``ids`` (oldest first) with the reprocessor's rules
    (:mod:`shipper.dlq.reprocess`): paced steps from ``batch_size`` up, delivered
    records deleted, failed ones ``attempts`` + 1 (parked at ``max_retries``), and a
    stop when Kafka refuses a whole step unless ``keep_going``."""

    def show(s: ReplaySummary) -> None:
        if progress is not None:
            progress.update(s.delivered + s.failed + s.untouched + s.gone, s.delivered, s.failed)

    reprocessor = Reprocessor(
        store, client_resend(client, wait), batch_size=batch_size, max_retries=max_retries
    )
    return asyncio.run(
        reprocessor.run(
            filter=DlqFilter(parked=None if include_parked else False),
            ids=ids,
            keep_going=keep_going,
            on_progress=show,
        )
    )


def _print_summary(s: ReplaySummary, out: TextIO) -> None:
    print(
        f"replayed {s.selected - s.not_tried - s.gone} of {s.selected} matching records: "
        f"{s.delivered} delivered (deleted from the DLQ), {s.failed} failed "
        f"(kept, attempts + 1; {s.parked} of them now parked)",
        file=out,
    )
    for error, n in s.errors.most_common(10):
        print(f"  {n:>7} x {oneline(error, 100)}", file=out)
    if s.gone:
        print(
            f"{s.gone} records were gone before their turn (replayed, parked or "
            "purged by another process, e.g. a running DLQ actor)",
            file=out,
        )
    if s.untouched:
        print(
            f"{s.untouched} records met an open circuit breaker and were not tried "
            "(unchanged, no retry spent)",
            file=out,
        )
    if s.stopped_early:
        print(
            f"stopped early: nothing of the last step was delivered; {s.not_tried} "
            "records were not tried and are unchanged (--keep-going tries them all)",
            file=out,
        )


def _stderr_logger() -> logging.Logger:
    logger = logging.getLogger("shipper.librdkafka.verbose")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    return logger


def _make_client(conf: dict[str, Any], unreachable_after: float = 0.0) -> ProducerClient:
    """The Kafka client of ``replay`` (a seam: unit tests put an in-memory one here)."""
    return ConfluentProducerClient(conf, unreachable_after=unreachable_after)


#: Seconds between two tries of ``replay --wait`` while Kafka does not answer.
WAIT_STEP = 2.0


def _merge(total: ReplaySummary | None, s: ReplaySummary) -> ReplaySummary:
    """One summary for several tries of the same records: what each try did adds up;
    what is left (untouched, not tried, stopped early) is the last try's."""
    if total is None:
        return s
    total.delivered += s.delivered
    total.failed += s.failed
    total.parked += s.parked
    total.errors.update(s.errors)
    total.untouched, total.broken = s.untouched, s.broken
    total.not_tried, total.stopped_early = s.not_tried, s.stopped_early
    return total


def _refused(s: ReplaySummary) -> bool:
    """Kafka did not take this try (unreachable, breaker open): worth another one."""
    return s.delivered == 0 and (s.stopped_early or s.untouched > 0) and s.failed == 0


def cmd_replay(args: argparse.Namespace) -> int:
    target = locate(args)
    cfg = target.config
    if cfg is None and not args.dry_run:
        raise UsageError(
            "replay needs --config FILE: the Kafka brokers, security and producer "
            "settings come from its sinks.kafka section (--path alone is enough for "
            "--dry-run)"
        )
    now = time.time()
    with open_store(target) as store:
        flt = build_filter(args, now)
        if args.dry_run:
            records = list(iter_matching(store, flt, args.limit or None))
            if records:
                print("\n".join(record_lines(records, now)), file=sys.stdout)
            topics = Counter(r.topic for r in records)
            where = ", ".join(f"{t or '-'} ({n})" for t, n in topics.most_common())
            print(
                f"dry run: would send {len(records)} records"
                + (f" to {where}" if where else "")
                + "; nothing was sent or changed",
                file=sys.stderr,
            )
            return EXIT_OK
        assert cfg is not None
        sink = cfg.sinks.kafka
        ids = [r.id for r in iter_matching(store, flt, args.limit or None)]
        if not ids:
            print("no record matches; nothing to replay", file=sys.stdout)
            return EXIT_OK
        conf: dict[str, Any] = librdkafka_settings(sink)
        # librdkafka's own lines (connection refused, every retry) would tear the
        # progress bar apart: they go to the log file (--verbose: to stderr); the
        # errors that matter come back through the delivery reports and are
        # summarized at the end.
        conf["logger"] = _stderr_logger() if args.verbose else librdkafka_logger(cfg.logging.file)
        client = _make_client(conf, sink.circuit_breaker.unreachable_after)
        progress = Progress(len(ids), sys.stderr, tty=sys.stderr.isatty())
        deadline = time.monotonic() + args.wait
        summary: ReplaySummary | None = None
        try:
            todo = ids
            while True:
                attempt = replay_records(
                    store,
                    client,
                    todo,
                    include_parked=flt.parked is None,
                    batch_size=args.batch_size or sink.dlq_config.reprocessing_config.batch_size,
                    max_retries=sink.dlq_config.reprocessing_config.max_retries,
                    wait=sink.timeout + 15.0,
                    keep_going=args.keep_going,
                    progress=progress,
                )
                summary = _merge(summary, attempt)
                left = deadline - time.monotonic()
                if not _refused(attempt) or left <= 0:
                    break
                why = oneline(client.last_error or "no answer", 120)
                print(
                    f"Kafka does not take the records ({why}); trying again in "
                    f"{WAIT_STEP:.0f} s ({left:.0f} s of --wait left)",
                    file=sys.stderr,
                )
                time.sleep(min(WAIT_STEP, left))
                kept = {r.id for r in store.select(DlqFilter(ids=todo, parked=None), len(todo))}
                todo = [i for i in todo if i in kept]
        finally:
            client.close(10.0)
        assert summary is not None
        progress.finish()
    _print_summary(summary, sys.stdout)
    if summary.stopped_early and client.last_error:
        print(f"last client error: {oneline(client.last_error, 200)}", file=sys.stdout)
    return EXIT_OK if summary.ok else EXIT_FAILED
