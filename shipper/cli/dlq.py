"""``shipper dlq ...``: the operator's tools for the dead-letter queue on local disk.

The DLQ actor reprocesses the queue by itself while the shipper runs; these commands
are for a human: see what is in it, send it again by hand (also when the shipper is
stopped), throw records away, or take them elsewhere.

=========  ==========================================================================
command    what it does
=========  ==========================================================================
stats      counts by reason, topic and age, active vs parked, disk use vs budget
list       one line per record (or ``--json``: JSON lines), newest filters below
replay     re-send records to Kafka with the config's producer settings; delivered
           records are deleted, failed ones stay with ``attempts`` + 1
purge      delete records, after a ``[y/N]`` question (or ``--yes``)
export     JSON lines of records to stdout or ``--output FILE``
=========  ==========================================================================

Every command finds the DLQ through ``--config FILE`` (``sinks.kafka.dlq_config``) or
``--path DIR``; ``replay`` needs the config for the Kafka settings. Filters, shared by
``list``, ``replay``, ``purge`` and ``export``: ``--reason`` and ``--topic`` (both
repeatable), ``--id`` (repeatable), ``--older-than DURATION`` (by first failure),
``--parked`` / ``--active`` / ``--all`` and ``--limit N``.

Several processes may use one LMDB directory, so all of this works while a DLQ actor
has the queue open: reads see the last committed snapshot, writes take turns on the
LMDB writer lock, and a record that the actor replays or deletes meanwhile is simply
counted as gone. ``replay`` and ``purge`` act on the records that matched when they
started, never on records that arrive while they run.

Exit codes: 0 success; 1 the command ran but not everything succeeded (a record not
delivered, a purge declined, an unreadable DLQ); 2 usage or configuration errors
(bad arguments, invalid config, no DLQ at the path). Nothing printed contains a
secret: the config is never shown, and Kafka's error texts carry no credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, TextIO

import lmdb

from shipper.config import DlqConfig, ShipperConfig, load_config
from shipper.dlq import DlqFilter, DlqRecord, DlqStore, LmdbDlqStore
from shipper.dlq.reprocess import ReplaySummary, Reprocessor, Resend
from shipper.durations import DurationError, format_duration, parse_duration
from shipper.errors import ConfigError, ShipperError
from shipper.kafka.client import ConfluentProducerClient, Failure, ProducerClient, SendResult
from shipper.kafka.settings import librdkafka_settings
from shipper.logs import librdkafka_logger
from shipper.outcomes import Reason

__all__ = [
    "AGE_BUCKETS",
    "DLQ_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Progress",
    "add_dlq_arguments",
    "client_resend",
    "record_to_json",
    "register",
    "replay_records",
    "run_dlq",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Age buckets of ``dlq stats`` (age = now - first_failure): upper bound in seconds.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<1m", 60.0),
    ("<1h", 3600.0),
    ("<1d", 86400.0),
    ("older", float("inf")),
)

_PAGE = 5000  # records per read transaction while scanning
_DELETE_CHUNK = 10_000  # ids per delete transaction in purge
_ERROR_WIDTH = 40
_VALUE_WIDTH = 60
_TOPIC_WIDTH = 30
_DEFAULT_DLQ = DlqConfig()

log = logging.getLogger("shipper.cli.dlq")


class _UsageError(Exception):
    """Internal: a usage or configuration problem; the message goes to stderr, exit 2."""


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class _Target:
    """Where the DLQ is and how to open it, from ``--config`` and/or ``--path``."""

    path: str
    map_size: int
    max_disk_bytes: int
    budget_from_config: bool
    config: ShipperConfig | None


def _target(args: argparse.Namespace) -> _Target:
    cfg: ShipperConfig | None = None
    dlq = _DEFAULT_DLQ
    if args.config is not None:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise _UsageError(str(exc)) from None
        dlq = cfg.sinks.kafka.dlq_config
    elif args.path is None:
        raise _UsageError(
            "say where the DLQ is: --config FILE (uses sinks.kafka.dlq_config.path) or --path DIR"
        )
    path = args.path if args.path is not None else dlq.path
    return _Target(
        path=os.path.abspath(path),
        map_size=dlq.map_size_bytes,
        max_disk_bytes=dlq.max_disk_bytes,
        budget_from_config=cfg is not None,
        config=cfg,
    )


def _open(target: _Target) -> LmdbDlqStore:
    # LmdbDlqStore creates a missing directory; a typo in --path must not leave an
    # empty DLQ behind and report "0 records" as if all were well.
    if not os.path.isfile(os.path.join(target.path, "data.mdb")):
        raise _UsageError(
            f"no DLQ at {target.path} (nothing was ever dead-lettered, or "
            "dlq_config.path points elsewhere)"
        )
    return LmdbDlqStore(target.path, map_size=target.map_size, max_disk_bytes=target.max_disk_bytes)


# --------------------------------------------------------------------------- filters


def _duration(text: str) -> float:
    # Days too: "older than 2d" is how an operator thinks about a DLQ backlog.
    days = text.strip().lower().removesuffix("d")
    if days != text.strip().lower() and days.replace(".", "", 1).isdigit():
        return float(days) * 86400.0
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _limit(text: str) -> int:
    if text.strip() == "0":
        return 0
    return _positive_int(text)


def _build_filter(args: argparse.Namespace, now: float) -> DlqFilter:
    older: float | None = args.older_than
    return DlqFilter(
        reasons=args.reason or None,
        topics=args.topic or None,
        ids=args.id or None,
        parked=args.state,
        before=None if older is None else now - older,
    )


def _iter_matching(store: DlqStore, flt: DlqFilter, limit: int | None) -> Iterator[DlqRecord]:
    """Matching records oldest first, one read transaction per page (bounded memory)."""
    after = 0
    left = limit
    while left is None or left > 0:
        n = _PAGE if left is None else min(_PAGE, left)
        page = store.select(dataclasses.replace(flt, after=after), n)
        yield from page
        if len(page) < n:
            return
        after = page[-1].id
        if left is not None:
            left -= len(page)


# --------------------------------------------------------------------------- formatting


def _bytes_field(data: bytes) -> tuple[str, str]:
    """(text, encoding): the bytes as UTF-8 text when they are, else base64."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def record_to_json(record: DlqRecord) -> dict[str, Any]:
    """The record as ``list --json`` and ``export`` write it (one JSON object per line).

    ``value`` (and ``key``, and each header value) is text when the bytes are valid
    UTF-8 and base64 otherwise; ``value_encoding`` says which (``utf-8`` or
    ``base64``). Times are Unix seconds.
    """
    value, value_enc = _bytes_field(record.value)
    out: dict[str, Any] = {
        "id": record.id,
        "topic": record.topic,
        "reason": str(record.reason),
        "error": record.error,
        "attempts": record.attempts,
        "parked": record.parked,
        "first_failure": record.first_failure,
        "last_failure": record.last_failure,
        "key": None,
        "key_encoding": None,
        "value": value,
        "value_encoding": value_enc,
        "headers": [],
    }
    if record.key is not None:
        out["key"], out["key_encoding"] = _bytes_field(record.key)
    for name, hval in record.headers:
        text, enc = _bytes_field(hval)
        out["headers"].append({"name": name, "value": text, "value_encoding": enc})
    return out


def _json_line(record: DlqRecord) -> str:
    return json.dumps(record_to_json(record), separators=(",", ":"))


def _oneline(text: str, width: int) -> str:
    """``text`` on one line (control characters escaped), cut to ``width`` with '…'."""
    head = text[: width * 2]  # escaping only grows it; no need to look further
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    if len(shown) > width or len(text) > len(head):
        return shown[: width - 1] + "…"
    return shown


def _preview(data: bytes, width: int) -> str:
    try:
        return _oneline(data.decode("utf-8"), width)
    except UnicodeDecodeError:
        return _oneline(f"<{len(data)} bytes, not UTF-8> {data[:width].hex()}", width)


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _age_bucket(age: float) -> str:
    for name, bound in AGE_BUCKETS:
        if age < bound:
            return name
    return AGE_BUCKETS[-1][0]  # pragma: no cover - the last bound is infinite


def _record_lines(records: Sequence[DlqRecord], now: float) -> list[str]:
    """The human table of ``list`` (and ``replay --dry-run``): a header, one line each."""
    id_w = max([2, *(len(str(r.id)) for r in records)])
    reason_w = max([6, *(len(r.reason) for r in records)])
    topic_w = min(_TOPIC_WIDTH, max([5, *(len(r.topic) for r in records)]))
    lines = [
        f"{'ID':>{id_w}}  {'REASON':<{reason_w}}  {'TOPIC':<{topic_w}}  TRIES  AGE   "
        f"STATE   {'ERROR':<{_ERROR_WIDTH}}  VALUE"
    ]
    for r in records:
        lines.append(
            f"{r.id:>{id_w}}  {r.reason:<{reason_w}}  "
            f"{_oneline(r.topic or '-', topic_w):<{topic_w}}  {r.attempts:>5}  "
            f"{_age(now - r.first_failure):<4}  {'parked' if r.parked else 'active':<6}  "
            f"{_oneline(r.error or '-', _ERROR_WIDTH):<{_ERROR_WIDTH}}  "
            f"{_preview(r.value, _VALUE_WIDTH)}"
        )
    return lines


# --------------------------------------------------------------------------- stats


def _stats(store: LmdbDlqStore, target: _Target, now: float) -> dict[str, Any]:
    # One pass of our own rather than store.stats(): the age buckets need every
    # record's first_failure anyway, and a second scan would double the cost.
    total = parked = 0
    by_reason: Counter[str] = Counter()
    by_topic: Counter[str] = Counter()
    by_age: dict[str, int] = {name: 0 for name, _ in AGE_BUCKETS}
    oldest: float | None = None
    newest: float | None = None
    for r in _iter_matching(store, DlqFilter(), None):
        total += 1
        parked += r.parked
        by_reason[str(r.reason)] += 1
        by_topic[r.topic] += 1
        by_age[_age_bucket(now - r.first_failure)] += 1
        oldest = r.first_failure if oldest is None else min(oldest, r.first_failure)
        newest = r.first_failure if newest is None else max(newest, r.first_failure)
    return {
        "path": target.path,
        "total": total,
        "active": total - parked,
        "parked": parked,
        "by_reason": dict(sorted(by_reason.items())),
        "by_topic": dict(sorted(by_topic.items())),
        "by_age": by_age,
        "oldest_first_failure": oldest,
        "newest_first_failure": newest,
        "disk_used_bytes": store.disk_used(),
        "disk_budget_bytes": store.max_disk_bytes,
        "disk_budget_source": "config" if target.budget_from_config else "default",
        "file_bytes": store.file_bytes(),
    }


def _print_stats(s: dict[str, Any], now: float, out: TextIO) -> None:
    used, budget = s["disk_used_bytes"], s["disk_budget_bytes"]
    pct = 100.0 * used / budget if budget else 0.0
    source = "" if s["disk_budget_source"] == "config" else " (default; --config for yours)"
    print(f"DLQ at {s['path']}", file=out)
    print(f"  records    {s['total']} ({s['active']} active, {s['parked']} parked)", file=out)
    print(f"  disk used  {_size(used)} of {_size(budget)} budget ({pct:.1f}%){source}", file=out)
    print(f"  file size  {_size(s['file_bytes'])} (LMDB files never shrink)", file=out)
    if s["oldest_first_failure"] is not None:
        print(
            f"  oldest     {_age(now - s['oldest_first_failure'])} ago, newest "
            f"{_age(now - s['newest_first_failure'])} ago (by first failure)",
            file=out,
        )
    sections = (("by reason", s["by_reason"]), ("by topic", s["by_topic"]), ("by age", s["by_age"]))
    width = min(_TOPIC_WIDTH, max(len(k) for _, counts in sections for k in counts))
    for title, counts in sections:
        if not counts:
            continue
        print(f"\n  {title}", file=out)
        for name, n in counts.items():
            print(f"    {_oneline(name or '-', width):<{width}}  {n:>9}", file=out)


def _cmd_stats(args: argparse.Namespace) -> int:
    target = _target(args)
    now = time.time()
    with _open(target) as store:
        s = _stats(store, target, now)
    if args.json:
        print(json.dumps(s, separators=(",", ":")), file=sys.stdout)
    else:
        _print_stats(s, now, sys.stdout)
    return EXIT_OK


# --------------------------------------------------------------------------- list / export


def _cmd_list(args: argparse.Namespace) -> int:
    target = _target(args)
    now = time.time()
    limit: int | None = args.limit or None
    with _open(target) as store:
        flt = _build_filter(args, now)
        # One more than asked, to say whether the listing was cut.
        records = list(_iter_matching(store, flt, None if limit is None else limit + 1))
    more = limit is not None and len(records) > limit
    if more:
        records = records[:limit]
    out = sys.stdout
    if args.json:
        for r in records:
            print(_json_line(r), file=out)
    elif records:
        print("\n".join(_record_lines(records, now)), file=out)
    if more:
        print(f"showing the first {limit} matching records; --limit N shows more", file=sys.stderr)
    elif not records:
        print("no record matches", file=sys.stderr)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    target = _target(args)
    now = time.time()
    with _open(target) as store:
        flt = _build_filter(args, now)
        n = 0
        sink: IO[str]
        if args.output is None or args.output == "-":
            sink = sys.stdout
            close = False
        else:
            try:
                sink = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise _UsageError(f"cannot write {args.output}: {exc.strerror}") from None
            close = True
        try:
            for r in _iter_matching(store, flt, args.limit or None):
                sink.write(_json_line(r))
                sink.write("\n")
                n += 1
        finally:
            if close:
                sink.close()
            else:
                sink.flush()
    where = "" if not close else f" to {args.output}"
    print(f"exported {n} record{'s' if n != 1 else ''}{where}", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- purge


def _confirm(question: str) -> bool | None:
    """Ask on the terminal; ``None`` when stdin is not a terminal (nobody to ask)."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        return None
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _cmd_purge(args: argparse.Namespace) -> int:
    target = _target(args)
    now = time.time()
    with _open(target) as store:
        flt = _build_filter(args, now)
        # The ids that match now: purge deletes exactly what was counted and
        # confirmed, not records a live DLQ actor writes meanwhile.
        ids = [r.id for r in _iter_matching(store, flt, args.limit or None)]
        if not ids:
            print("no record matches; nothing purged", file=sys.stdout)
            return EXIT_OK
        n = len(ids)
        what = f"{n} record{'s' if n != 1 else ''}"
        if not args.yes:
            answer = _confirm(f"purge {what} from {target.path}? [y/N] ")
            if answer is None:
                print(
                    f"refusing to purge {what} without confirmation: stdin is not a "
                    "terminal, so nobody can answer the question; pass --yes to purge "
                    "without asking",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            if not answer:
                print("not confirmed; nothing purged", file=sys.stderr)
                return EXIT_FAILED
        deleted = 0
        for i in range(0, n, _DELETE_CHUNK):
            deleted += store.delete(ids[i : i + _DELETE_CHUNK])
    gone = n - deleted
    note = f" ({gone} were already gone)" if gone else ""
    print(f"purged {deleted} record{'s' if deleted != 1 else ''}{note}", file=sys.stdout)
    return EXIT_OK


# --------------------------------------------------------------------------- replay


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

    async def resend(topic: str, values: list[bytes], keys: list[bytes | None]) -> list[Failure]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SendResult] = loop.create_future()

        def settle(result: SendResult) -> None:
            if not fut.done():  # a late report after the wait gave up
                fut.set_result(result)

        def done(result: SendResult) -> None:
            loop.call_soon_threadsafe(settle, result)

        client.send(topic, values, keys, None, done)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), wait)
        except TimeoutError:
            error = (
                f"no delivery report within {format_duration(wait)}; kept in the DLQ "
                "(the records may still reach Kafka)"
            )
            return [Failure(v, k, Reason.TIMEOUT, error) for v, k in zip(values, keys, strict=True)]
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
        print(f"  {n:>7} x {_oneline(error, 100)}", file=out)
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
    if s.with_headers:
        print(
            f"note: {s.with_headers} records had headers, which replay does not send",
            file=out,
        )


def _make_client(conf: dict[str, Any]) -> ProducerClient:
    """The Kafka client of ``replay`` (a seam: unit tests put an in-memory one here)."""
    return ConfluentProducerClient(conf)


def _cmd_replay(args: argparse.Namespace) -> int:
    target = _target(args)
    cfg = target.config
    if cfg is None and not args.dry_run:
        raise _UsageError(
            "replay needs --config FILE: the Kafka brokers, security and producer "
            "settings come from its sinks.kafka section (--path alone is enough for "
            "--dry-run)"
        )
    now = time.time()
    with _open(target) as store:
        flt = _build_filter(args, now)
        if args.dry_run:
            records = list(_iter_matching(store, flt, args.limit or None))
            if records:
                print("\n".join(_record_lines(records, now)), file=sys.stdout)
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
        ids = [r.id for r in _iter_matching(store, flt, args.limit or None)]
        if not ids:
            print("no record matches; nothing to replay", file=sys.stdout)
            return EXIT_OK
        conf: dict[str, Any] = librdkafka_settings(sink)
        if not args.verbose:
            # librdkafka's own lines (connection refused, every retry) would tear the
            # progress bar apart: they go to the log file; the errors that matter come
            # back through the delivery reports and are summarized at the end.
            conf["logger"] = librdkafka_logger(cfg.logging.file)
        client = _make_client(conf)
        progress = Progress(len(ids), sys.stderr, tty=sys.stderr.isatty())
        try:
            summary = replay_records(
                store,
                client,
                ids,
                include_parked=flt.parked is None,
                batch_size=args.batch_size or sink.dlq_config.reprocessing_config.batch_size,
                max_retries=sink.dlq_config.reprocessing_config.max_retries,
                wait=sink.timeout + 15.0,
                keep_going=args.keep_going,
                progress=progress,
            )
        finally:
            client.close(10.0)
        progress.finish()
    _print_summary(summary, sys.stdout)
    if summary.stopped_early and client.last_error:
        print(f"last client error: {_oneline(client.last_error, 200)}", file=sys.stdout)
    return EXIT_OK if summary.ok else EXIT_FAILED


# --------------------------------------------------------------------------- arguments


def _location_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the DLQ is")
    where.add_argument(
        "--config",
        metavar="FILE",
        help="shipper config; the DLQ is at sinks.kafka.dlq_config.path",
    )
    where.add_argument(
        "--path", metavar="DIR", help="the DLQ directory (overrides the config's path)"
    )


def _filter_arguments(
    parser: argparse.ArgumentParser, limit_default: int | None, replay: bool = False
) -> None:
    f = parser.add_argument_group("which records")
    f.add_argument(
        "--reason",
        action="append",
        choices=[r.value for r in Reason],
        metavar="REASON",
        help=f"only this reason (repeatable): {', '.join(r.value for r in Reason)}",
    )
    f.add_argument("--topic", action="append", metavar="TOPIC", help="only this topic (repeatable)")
    f.add_argument(
        "--id", action="append", type=_positive_int, metavar="ID", help="only this id (repeatable)"
    )
    f.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="only records whose first failure is older than this (e.g. 90s, 30m, 2h, 7d)",
    )
    f.add_argument(
        "--limit",
        type=_limit,
        default=limit_default,
        metavar="N",
        help=(
            "at most N records, oldest first "
            + (f"(default {limit_default}; 0: all)" if limit_default else "(default: all)")
        ),
    )
    if replay:
        f.add_argument(
            "--parked",
            dest="state",
            action="store_const",
            const=None,
            default=False,
            help="include parked records (by default only active ones are replayed)",
        )
        return
    state = f.add_mutually_exclusive_group()
    state.add_argument(
        "--parked", dest="state", action="store_const", const=True, help="only parked records"
    )
    state.add_argument(
        "--active", dest="state", action="store_const", const=False, help="only active records"
    )
    state.add_argument(
        "--all",
        dest="state",
        action="store_const",
        const=None,
        help="active and parked records (the default)",
    )
    parser.set_defaults(state=None)


def add_dlq_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dlq`` subcommands and their options, under ``parser``."""
    sub = parser.add_subparsers(dest="dlq_command", metavar="COMMAND")

    p = sub.add_parser("stats", help="counts by reason, topic and age; disk use")
    _location_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(_dlq_run=_cmd_stats)

    p = sub.add_parser("list", help="one line per record, oldest first (or JSON lines)")
    _location_arguments(p)
    _filter_arguments(p, limit_default=50)
    p.add_argument("--json", action="store_true", help="JSON lines, as export writes them")
    p.set_defaults(_dlq_run=_cmd_list)

    p = sub.add_parser(
        "replay",
        help="re-send records to Kafka; delivered ones are deleted, failed ones kept",
    )
    _location_arguments(p)
    _filter_arguments(p, limit_default=None, replay=True)
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="records per batch (default: dlq_config.reprocessing_config.batch_size)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be sent; send and change nothing"
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="try every batch even when Kafka refused a whole batch",
    )
    p.add_argument("--verbose", action="store_true", help="show librdkafka's own log lines")
    p.set_defaults(_dlq_run=_cmd_replay)

    p = sub.add_parser("purge", help="delete records (asks first unless --yes)")
    _location_arguments(p)
    _filter_arguments(p, limit_default=None)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(_dlq_run=_cmd_purge)

    p = sub.add_parser("export", help="records as JSON lines, to stdout or a file")
    _location_arguments(p)
    _filter_arguments(p, limit_default=None)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(_dlq_run=_cmd_export)

    parser.set_defaults(_dlq_parser=parser)


def run_dlq(args: argparse.Namespace) -> int:
    """Run the chosen ``dlq`` subcommand; returns the exit code."""
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_dlq_run", None)
    if run is None:
        args._dlq_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # e.g. a DlqFilter built from bad input
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ShipperError, lmdb.Error, OSError) as exc:  # unreadable, open twice, ...
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # `shipper dlq export | head`: the reader left; stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "\ninterrupted; records not yet confirmed as delivered stay in the DLQ", file=sys.stderr
        )
        return 130


DLQ_HELP = "inspect, replay, purge and export the dead-letter queue"


def register(register_subcommand: Callable[..., Any]) -> None:
    """Add ``shipper dlq`` through :func:`shipper.cli.register_subcommand`."""
    register_subcommand("dlq", DLQ_HELP, add_dlq_arguments, run_dlq)
