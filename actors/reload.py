"""Reloading the configuration of a running ``shipper run``: the switch-over.

SIGHUP, or ``shipper reload --address ...`` (a request left with the fleet's keeper,
which the command looks at every second), makes the command read its ``--config``
file again (:func:`shipper.reload.check_reload`):

- a file that does not validate is **refused**: its problems are printed and logged,
  and the running configuration stays;
- an **unchanged** file changes nothing;
- otherwise the command **switches over**: the running pipelines stop the way a stop
  does (reading stops, what is in flight drains for ``pipeline.drain_timeout``, what
  is still queued is parked in the DLQ), and new ones start from the new file. Files
  go on at their checkpoints, the HTTP intake answers again, stdin is read on from
  where it was, and the new pipelines' DLQ replays what was parked: no entry is lost,
  whatever changed (sources, routing, topic templates, headers, brokers, TLS,
  compression). The switch takes a few seconds, in which an HTTP client may meet a
  refused connection (and sends again).

If the new pipelines cannot start, the old configuration is started again; if that
fails too, the run ends as after an error. :class:`Switched` is what the command
holds: the pipelines in use now, and the figures of the earlier ones, so the summary
counts the whole run. ``log_capturer_config_reloads_total{result}`` counts the
reloads by outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

import ray

from shipper.errors import brief
from shipper.reload import RELOAD_RESULTS, check_reload, resumed
from shipper.submissions import CloseReport, RunStats
from shipper.telemetry import MetricsRecorder

from . import names
from .reporter import Reporter

__all__ = ["Switched", "add_reload_arguments", "reload_command", "request_reload"]

log = logging.getLogger("shipper.reload")

RELOADS: Final = "log_capturer_config_reloads_total"


class Switched:
    """The command's shipper across reloads: attributes are the current one's;
    :meth:`stats`, :meth:`close` and ``source_counts`` add up every one's."""

    def __init__(self, shipper: Any, start: Callable[[str], Any], path: str) -> None:
        self._current = shipper
        self._start = start  # path -> a new Shipper
        self._path = path
        self._lock = threading.Lock()
        self._done = threading.Event()  # the run ends: stop listening for reloads
        self._earlier: list[CloseReport] = []
        self._counts: dict[str, int] = {}
        self._serving = False
        self._live = True  # False between a close and a start (and after both failed)
        self._read = shipper.config  # the file as read: what the next reload compares
        self.reloads: dict[str, int] = dict.fromkeys(RELOAD_RESULTS, 0)
        self._recorder = MetricsRecorder("driver:reload")
        for result in RELOAD_RESULTS:
            self._recorder.add(RELOADS, 0, {"result": result})
        self._reporter = Reporter(None, self._recorder)
        self._point_metrics()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)

    # ------------------------------------------------------------------ figures

    def start_sources(self) -> list[str]:
        self._serving = True
        started: list[str] = self._current.start_sources()
        return started

    def stats(self) -> RunStats:
        out = RunStats()
        for r in self._earlier:
            out.merge(r.stats)
            out.started = min(out.started, r.stats.started)
        if self._live:
            now = self._current.stats()
            out.merge(now)
            out.started = min(out.started, now.started)
        return out

    @property
    def source_counts(self) -> dict[str, int]:
        out = dict(self._counts)
        if not self._live:
            return out
        for k, v in self._current.source_counts.items():
            out[k] = out.get(k, 0) + v if isinstance(v, int) else v
        return out

    def close(self, timeout: float | None = None) -> CloseReport:
        self._done.set()
        reports: list[CloseReport]
        if self._live:
            reports = [*self._earlier, self._current.close(timeout)]
        else:  # both starts of a reload failed: every figure is in _earlier already
            reports = list(self._earlier)
        report = reports[-1]
        if len(reports) == 1:
            return report
        stats = RunStats()
        stats.started = min(r.stats.started for r in reports)
        sources: dict[str, RunStats] = {}
        for r in reports:
            stats.merge(r.stats)
            for kind, run in r.sources.items():
                sources.setdefault(kind, RunStats()).merge(run)
        stats.finished = report.stats.finished
        return CloseReport(
            drained=all(r.drained for r in reports),
            in_flight_submissions=report.in_flight_submissions,
            in_flight_entries=report.in_flight_entries,
            stats=stats,
            parked=report.parked if self._live else 0,  # earlier ones went back through the DLQ
            sources=sources,
            problems=[p for r in reports for p in r.problems],
        )

    # ------------------------------------------------------------------ reload

    def reload_requested(self) -> bool:
        """Whether ``shipper reload`` asked for one (through the keeper)."""
        try:
            keeper = ray.get_actor(names.KEEPER, namespace=self._current.namespace)
            return bool(ray.get(keeper.take_reload.remote(), timeout=10))
        except Exception:  # a keeper that cannot answer now: asked again in a second
            return False

    def listen(self, asked: threading.Event, every: float = 1.0) -> None:
        """Set ``asked`` when ``shipper reload`` asks, looking every ``every`` seconds
        from a thread of its own (never from the reading or serving loop: a slow
        keeper must not hold a line up). Ends with :meth:`close`."""

        def look() -> None:
            while not self._done.wait(every):
                if not asked.is_set() and self.reload_requested():
                    asked.set()

        threading.Thread(target=look, name="reload-listen", daemon=True).start()

    def reload(self, say: Callable[[str], None]) -> str:
        """Read the file again and switch over if it changed; the result (one of
        :data:`shipper.reload.RELOAD_RESULTS`). Every outcome is said and logged."""
        check = check_reload(self._path, self._read)
        if check.refused:
            say(f"reload refused, the running configuration stays: {self._path} has problems:")
            for p in check.problems:
                say(f"  {p}")
            log.warning("reload refused: %s", "; ".join(check.problems))
            return self._count("refused")
        if check.unchanged:
            say(f"reload: {self._path} is unchanged; nothing to do")
            log.info("reload: the configuration is unchanged")
            return self._count("unchanged")
        what = ", ".join(check.changed)
        say(f"reload: {what} changed; switching over (draining, then starting again)")
        log.warning("reload: switching over for %s", what)
        assert check.config is not None
        with self._lock:
            old = self._current
            report = old.close()
            self._earlier.append(report)
            self._live = False  # its figures are in _earlier now
            for k, v in old.source_counts.items():
                if isinstance(v, int):
                    self._counts[k] = self._counts.get(k, 0) + v
            if report.parked:
                say(f"reload: {report.parked:,} entries parked in the DLQ; replayed from there")
            try:
                self._started(resumed(self._read, check.config), say)
                self._read = check.config
            except Exception as exc:
                say(f"reload failed: the new configuration did not start ({brief(exc)}); "
                    "starting the previous one again")  # fmt: skip
                log.error("reload failed: %s", brief(exc))
                self._count("failed")
                try:
                    self._started(old.config, say)
                except Exception as again:
                    raise RuntimeError(
                        "after a failed reload the previous configuration did not start "
                        f"again either ({brief(again)}); what was read is in Kafka or the DLQ"
                    ) from again
                return "failed"
        say("reload: the new configuration runs")
        log.warning("reload applied: %s", what)
        return self._count("applied")

    def _started(self, config: Any, say: Callable[[str], None]) -> None:
        """Start pipelines for ``config`` (and their sources when the run serves); a
        start that fails half-way is closed again, so no second pipeline lingers."""
        shipper = self._start(config)
        try:
            lines = shipper.start_sources() if self._serving else []
        except BaseException:
            with contextlib.suppress(Exception):
                shipper.close()
            raise
        self._current = shipper
        self._live = True
        self._point_metrics()
        for line in lines:
            say(f"reload: {line}")
        if shipper.metrics_url:
            say(f"reload: metrics at {shipper.metrics_url}")

    def _count(self, result: str) -> str:
        self.reloads[result] += 1
        self._recorder.add(RELOADS, 1, {"result": result})
        self._reporter.push_now()
        return result

    def _point_metrics(self) -> None:
        """Send the reload counts to the current pipelines' telemetry actor."""
        telemetry = getattr(self._current, "_telemetry", None)
        self._reporter.telemetry = telemetry
        if telemetry is not None:
            self._reporter.node = names.node_key(self._current.node_id)
            self._reporter.push_now()


def request_reload(namespace: str) -> None:
    """Ask the shipper in ``namespace`` to read its configuration again."""
    keeper = ray.get_actor(names.KEEPER, namespace=namespace)
    ray.get(keeper.request_reload.remote(), timeout=30)


def add_reload_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else auto)")
    p.add_argument("--namespace", help="the shipper to reload (default: the one running)")


def reload_command(args: argparse.Namespace) -> int:
    """``shipper reload``: ask a running ``shipper run`` (a Ray job, or a command on
    a cluster) to read its configuration file again; what it did is in its output and
    log (and ``log_capturer_config_reloads_total``)."""
    from .status import find_shippers

    found = find_shippers(args, "reload")
    if isinstance(found, int):
        return found
    if len(found) > 1:
        print(
            "shipper reload: several shippers run here; name one with --namespace: "
            + ", ".join(found),
            file=sys.stderr,
        )
        return 2
    try:
        request_reload(found[0])
    except Exception as exc:
        print(f"shipper reload: {found[0]} did not take the request: {brief(exc)}", file=sys.stderr)
        return 1
    print(
        f"asked {found[0]} to read its configuration again; it says how it went in its "
        "output and log (a file that does not validate is refused, the running one stays)"
    )
    return 0
