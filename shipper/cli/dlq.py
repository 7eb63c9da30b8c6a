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

The commands live here; what they share (finding the DLQ, filters, printing records)
is in :mod:`shipper.cli.dlq_common`, and ``replay`` in :mod:`shipper.cli.dlq_replay`.

Exit codes: 0 success; 1 the command ran but not everything succeeded (a record not
delivered, a purge declined, an unreadable DLQ); 2 usage or configuration errors
(bad arguments, invalid config, no DLQ at the path). Nothing printed contains a
secret: the config is never shown, and Kafka's error texts carry no credentials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, TextIO

import lmdb

from shipper.cli.dlq_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TOPIC_WIDTH,
    Target,
    UsageError,
    age,
    build_filter,
    duration,
    iter_matching,
    json_line,
    limit_arg,
    locate,
    oneline,
    open_store,
    positive_int,
    record_lines,
    record_to_json,
    size,
)
from shipper.cli.dlq_replay import Progress, client_resend, cmd_replay, replay_records
from shipper.dlq import DlqFilter, LmdbDlqStore
from shipper.errors import ShipperError
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


#: Age buckets of ``dlq stats`` (age = now - first_failure): upper bound in seconds.
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("<1m", 60.0),
    ("<1h", 3600.0),
    ("<1d", 86400.0),
    ("older", float("inf")),
)

_DELETE_CHUNK = 10_000  # ids per delete transaction in purge

log = logging.getLogger("shipper.cli.dlq")


# --------------------------------------------------------------------------- targets


# --------------------------------------------------------------------------- filters


# --------------------------------------------------------------------------- formatting


def _age_bucket(age: float) -> str:
    for name, bound in AGE_BUCKETS:
        if age < bound:
            return name
    return AGE_BUCKETS[-1][0]  # pragma: no cover - the last bound is infinite


# --------------------------------------------------------------------------- stats


def _stats(store: LmdbDlqStore, target: Target, now: float) -> dict[str, Any]:
    # One pass of our own rather than store.stats(): the age buckets need every
    # record's first_failure anyway, and a second scan would double the cost.
    total = parked = 0
    by_reason: Counter[str] = Counter()
    by_topic: Counter[str] = Counter()
    by_age: dict[str, int] = {name: 0 for name, _ in AGE_BUCKETS}
    oldest: float | None = None
    newest: float | None = None
    for r in iter_matching(store, DlqFilter(), None):
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
    print(f"  disk used  {size(used)} of {size(budget)} budget ({pct:.1f}%){source}", file=out)
    print(f"  file size  {size(s['file_bytes'])} (LMDB files never shrink)", file=out)
    if s["oldest_first_failure"] is not None:
        print(
            f"  oldest     {age(now - s['oldest_first_failure'])} ago, newest "
            f"{age(now - s['newest_first_failure'])} ago (by first failure)",
            file=out,
        )
    sections = (("by reason", s["by_reason"]), ("by topic", s["by_topic"]), ("by age", s["by_age"]))
    width = min(TOPIC_WIDTH, max(len(k) for _, counts in sections for k in counts))
    for title, counts in sections:
        if not counts:
            continue
        print(f"\n  {title}", file=out)
        for name, n in counts.items():
            print(f"    {oneline(name or '-', width):<{width}}  {n:>9}", file=out)


def _cmd_stats(args: argparse.Namespace) -> int:
    target = locate(args)
    now = time.time()
    with open_store(target) as store:
        s = _stats(store, target, now)
    if args.json:
        print(json.dumps(s, separators=(",", ":")), file=sys.stdout)
    else:
        _print_stats(s, now, sys.stdout)
    return EXIT_OK


# --------------------------------------------------------------------------- list / export


def _cmd_list(args: argparse.Namespace) -> int:
    target = locate(args)
    now = time.time()
    limit: int | None = args.limit or None
    with open_store(target) as store:
        flt = build_filter(args, now)
        # One more than asked, to say whether the listing was cut.
        records = list(iter_matching(store, flt, None if limit is None else limit + 1))
    more = limit is not None and len(records) > limit
    if more:
        records = records[:limit]
    out = sys.stdout
    if args.json:
        for r in records:
            print(json_line(r), file=out)
    elif records:
        print("\n".join(record_lines(records, now)), file=out)
    if more:
        print(f"showing the first {limit} matching records; --limit N shows more", file=sys.stderr)
    elif not records:
        print("no record matches", file=sys.stderr)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    target = locate(args)
    now = time.time()
    with open_store(target) as store:
        flt = build_filter(args, now)
        n = 0
        sink: IO[str]
        if args.output is None or args.output == "-":
            sink = sys.stdout
            close = False
        else:
            try:
                sink = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
            close = True
        try:
            for r in iter_matching(store, flt, args.limit or None):
                sink.write(json_line(r))
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
    target = locate(args)
    now = time.time()
    with open_store(target) as store:
        flt = build_filter(args, now)
        # The ids that match now: purge deletes exactly what was counted and
        # confirmed, not records a live DLQ actor writes meanwhile.
        ids = [r.id for r in iter_matching(store, flt, args.limit or None)]
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
        "--id", action="append", type=positive_int, metavar="ID", help="only this id (repeatable)"
    )
    f.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help="only records whose first failure is older than this (e.g. 90s, 30m, 2h, 7d)",
    )
    f.add_argument(
        "--limit",
        type=limit_arg,
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
        type=positive_int,
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
    p.add_argument(
        "--wait",
        type=duration,
        default=0.0,
        metavar="DURATION",
        help="when Kafka does not answer, try what is left again every 2 s for this long "
        "(e.g. 5m) instead of stopping at once; no retry is spent on those tries",
    )
    p.add_argument("--verbose", action="store_true", help="show librdkafka's own log lines")
    p.set_defaults(_dlq_run=cmd_replay)

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
    except UsageError as exc:
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
