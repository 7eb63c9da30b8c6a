"""What ``shipper run`` shows on the terminal: progress, notices, the summary.

- :class:`Progress` draws one line of figures on stderr (when stderr is a terminal)
  and puts notices on lines of their own;
- :class:`Watch` looks at the breakers every few seconds and says when one opens or
  closes (the words are :class:`shipper.cli.notices.RunNotices`');
- :func:`summary` prints the run's figures (and writes ``--summary-json``) and gives
  the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

__all__ = ["Progress", "Watch", "say", "summary"]

#: Seconds between two looks at the breakers.
WATCH_EVERY = 2.0


def say(msg: str) -> None:
    sys.stderr.write(f"shipper run: {msg}\n")
    sys.stderr.flush()


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.drawn = False

    def show(self, stats: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        self.drawn = True
        sys.stderr.write(
            f"\r{stats.entries_in:>12,} in  {stats.delivered:>12,} delivered  "
            f"{stats.failed:>8,} failed  {stats.rate:>10,.0f} entries/s"
        )
        sys.stderr.flush()

    def say(self, msg: str) -> None:
        """A notice on a line of its own (the progress line is drawn again after it)."""
        if self.drawn:
            sys.stderr.write("\n")
            self.drawn = False
        say(msg)

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class Watch:
    """Looks at the breakers every few seconds and says when one opens or closes."""

    def __init__(self, shipper: Any, notices: Any, progress: Progress) -> None:
        self.shipper = shipper
        self.notices = notices
        self.progress = progress
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="run-watch", daemon=True)

    def _run(self) -> None:
        while not self.done.wait(WATCH_EVERY):
            try:
                for line in self.notices.breakers(self.shipper.breaker_states()):
                    self.progress.say(line)
            except Exception:  # a look that failed (Ray busy): the next one will do
                continue

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def summary(args: argparse.Namespace, shipper: Any, report: Any, progress: Progress,
             fatal: str | None) -> int:  # fmt: skip
    stats = report.stats
    sources = dict(shipper.source_counts)
    progress.show(stats, force=True)
    progress.end()
    print(stats.table())
    for kind, run in sorted(report.sources.items()):
        print(f"  of which from {kind}: {run.brief()}")
    if sources:
        print(
            "sources: " + ", ".join(f"{k} {v:,}" for k, v in sources.items() if isinstance(v, int))
        )
    reloads = {k: v for k, v in getattr(shipper, "reloads", {}).items() if v}
    if reloads:
        print("configuration reloads: " + ", ".join(f"{v} {k}" for k, v in reloads.items()))
    if report.parked:
        print(f"parked in the DLQ at shutdown: {report.parked:,} entries (reason shutdown)")
    if not report.drained:
        say(str(report))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(
                {
                    **stats.as_dict(),
                    "drained": report.drained,
                    "parked": report.parked,
                    "sources": sources,
                    "by_source": {k: v.as_dict() for k, v in sorted(report.sources.items())},
                    "reloads": dict(getattr(shipper, "reloads", {})),
                    "fatal": fatal,
                },
                f,
                indent=2,
            )
    return 0 if report.drained and stats.failed == 0 and fatal is None else 1
