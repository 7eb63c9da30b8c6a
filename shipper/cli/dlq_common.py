"""What the ``shipper dlq`` commands share: where the DLQ is, filters, and how records print.

Exit codes, the usage error (exit 2), finding the DLQ from ``--config`` / ``--path``,
the filter options turned into a :class:`~shipper.dlq.DlqFilter`, and the one-line and
JSON forms of a record. Nothing printed here shows a secret.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shipper.config import DlqConfig, ShipperConfig, load_config
from shipper.dlq import DlqFilter, DlqRecord, DlqStore, LmdbDlqStore
from shipper.durations import DurationError, parse_duration
from shipper.errors import ConfigError

EXIT_OK = 0


EXIT_FAILED = 1


EXIT_USAGE = 2


ERROR_WIDTH = 40


VALUE_WIDTH = 60


TOPIC_WIDTH = 30


DEFAULT_DLQ = DlqConfig()


PAGE = 5000  # records per read transaction while scanning


class UsageError(Exception):
    """Internal: a usage or configuration problem; the message goes to stderr, exit 2."""


@dataclass(frozen=True)
class Target:
    """Where the DLQ is and how to open it, from ``--config`` and/or ``--path``."""

    path: str
    map_size: int
    max_disk_bytes: int
    budget_from_config: bool
    config: ShipperConfig | None


def locate(args: argparse.Namespace) -> Target:
    cfg: ShipperConfig | None = None
    dlq = DEFAULT_DLQ
    if args.config is not None:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        dlq = cfg.sinks.kafka.dlq_config
    elif args.path is None:
        raise UsageError(
            "say where the DLQ is: --config FILE (uses sinks.kafka.dlq_config.path) or --path DIR"
        )
    path = args.path if args.path is not None else dlq.path
    return Target(
        path=os.path.abspath(path),
        map_size=dlq.map_size_bytes,
        max_disk_bytes=dlq.max_disk_bytes,
        budget_from_config=cfg is not None,
        config=cfg,
    )


def open_store(target: Target) -> LmdbDlqStore:
    # LmdbDlqStore creates a missing directory; a typo in --path must not leave an
    # empty DLQ behind and report "0 records" as if all were well.
    if not os.path.isfile(os.path.join(target.path, "data.mdb")):
        raise UsageError(
            f"no DLQ at {target.path} (nothing was ever dead-lettered, or "
            "dlq_config.path points elsewhere)"
        )
    return LmdbDlqStore(target.path, map_size=target.map_size, max_disk_bytes=target.max_disk_bytes)


def duration(text: str) -> float:
    # Days too: "older than 2d" is how an operator thinks about a DLQ backlog.
    days = text.strip().lower().removesuffix("d")
    if days != text.strip().lower() and days.replace(".", "", 1).isdigit():
        return float(days) * 86400.0
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def limit_arg(text: str) -> int:
    if text.strip() == "0":
        return 0
    return positive_int(text)


def build_filter(args: argparse.Namespace, now: float) -> DlqFilter:
    older: float | None = args.older_than
    return DlqFilter(
        reasons=args.reason or None,
        topics=args.topic or None,
        ids=args.id or None,
        parked=args.state,
        before=None if older is None else now - older,
    )


def iter_matching(store: DlqStore, flt: DlqFilter, limit: int | None) -> Iterator[DlqRecord]:
    """Matching records oldest first, one read transaction per page (bounded memory)."""
    after = 0
    left = limit
    while left is None or left > 0:
        n = PAGE if left is None else min(PAGE, left)
        page = store.select(dataclasses.replace(flt, after=after), n)
        yield from page
        if len(page) < n:
            return
        after = page[-1].id
        if left is not None:
            left -= len(page)


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


def json_line(record: DlqRecord) -> str:
    return json.dumps(record_to_json(record), separators=(",", ":"))


def oneline(text: str, width: int) -> str:
    """``text`` on one line (control characters escaped), cut to ``width`` with '…'."""
    head = text[: width * 2]  # escaping only grows it; no need to look further
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    if len(shown) > width or len(text) > len(head):
        return shown[: width - 1] + "…"
    return shown


def preview(data: bytes, width: int) -> str:
    try:
        return oneline(data.decode("utf-8"), width)
    except UnicodeDecodeError:
        return oneline(f"<{len(data)} bytes, not UTF-8> {data[:width].hex()}", width)


def age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def record_lines(records: Sequence[DlqRecord], now: float) -> list[str]:
    """The human table of ``list`` (and ``replay --dry-run``): a header, one line each."""
    id_w = max([2, *(len(str(r.id)) for r in records)])
    reason_w = max([6, *(len(r.reason) for r in records)])
    topic_w = min(TOPIC_WIDTH, max([5, *(len(r.topic) for r in records)]))
    lines = [
        f"{'ID':>{id_w}}  {'REASON':<{reason_w}}  {'TOPIC':<{topic_w}}  TRIES  AGE   "
        f"STATE   {'ERROR':<{ERROR_WIDTH}}  VALUE"
    ]
    for r in records:
        lines.append(
            f"{r.id:>{id_w}}  {r.reason:<{reason_w}}  "
            f"{oneline(r.topic or '-', topic_w):<{topic_w}}  {r.attempts:>5}  "
            f"{age(now - r.first_failure):<4}  {'parked' if r.parked else 'active':<6}  "
            f"{oneline(r.error or '-', ERROR_WIDTH):<{ERROR_WIDTH}}  "
            f"{preview(r.value, VALUE_WIDTH)}"
        )
    return lines
