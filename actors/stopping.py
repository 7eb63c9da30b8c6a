"""Closing a shipper: the stop protocol (:mod:`shipper.stopping`) walked over the fleet.

Every node actor answers ``stop_intake``, ``drain(seconds)``, ``park`` and ``close``;
:class:`Stopper` calls a step on every live actor of each role, role after role
(sources, Routers, Batchers, Producers, DLQs), and records each answer, or the lack
of one as a problem that names the actor. :func:`close_fleet` is the whole close:

1. the sources stop reading (and new nodes get none), every entrance stops taking work;
2. the driver flushes its Routers and waits for its acknowledgements, and every actor
   drains, all within the drain timeout;
3. if anything is left (an ack not back, an actor with entries in flight, an actor
   that did not answer) every actor parks: queued entries go to the DLQ with reason
   ``shutdown`` and the Producers purge what Kafka has not answered into it too;
4. every actor closes (files, positions, stores, clients) and answers its figures;
   then the actors are let go.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray

from shipper.errors import brief
from shipper.stopping import ROLES, StopRecord
from shipper.submissions import CloseReport, RunStats

from . import names

if TYPE_CHECKING:
    from .handles import SupervisorHandle
    from .sender import Sender
    from .wiring import Wiring

__all__ = ["Closed", "Stopper", "close_fleet"]

log = logging.getLogger("shipper")

#: Seconds each of the steps other than drain may take per role.
STEP_TIMEOUT = 30.0


class Stopper:
    """Calls one step of the stop protocol on every live actor of the given roles."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self.record = StopRecord()

    def step(
        self,
        step: str,
        *args: Any,
        deadline: float | None = None,
        roles: tuple[str, ...] = ROLES,
    ) -> None:
        """``step(*args)`` on every actor of ``roles``, one role after the other (its
        actors side by side), each role within ``deadline`` (default: 30 s)."""
        wiring = self.wiring
        for role in roles:
            handles: list[tuple[str, Any]] = []
            for name in wiring.named(role):
                try:
                    handles.append((name, wiring._get(name)))
                except ValueError:
                    continue  # gone between the listing and the lookup: its node left
            if not handles:
                continue
            limit = STEP_TIMEOUT if deadline is None else deadline - time.monotonic()
            # Waits a little past a drain's own time limit for its answer.
            limit = max(limit, 0.0) + (5.0 if step == "drain" else 0.0)
            refs = [getattr(h, step).remote(*args) for _, h in handles]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=limit)
            done = set(ready)
            for (name, _h), ref in zip(handles, refs, strict=True):
                if ref not in done:
                    why = f"no answer within {limit:.0f}s"
                else:
                    try:
                        self.record.answered(step, role, name, ray.get(ref))
                        continue
                    except ray.exceptions.RayError as exc:
                        why = brief(exc)
                log.warning("%s", self.record.failed(step, name, why))


@dataclass
class Closed:
    """What a close leaves: the report, and what the sources did (by kind)."""

    report: CloseReport
    #: in, delivered, to the DLQ, failed per kind of source (``files``, ``http``)
    sources: dict[str, RunStats] = field(default_factory=dict)
    #: the sources' own counts (``file_lines``, ``file_resends``...)
    counts: dict[str, int] = field(default_factory=dict)


def close_fleet(
    wiring: Wiring,
    supervisor: SupervisorHandle,
    sender: Sender,
    timeout: float,
    sources_on: bool,
) -> Closed:
    """The whole close (see the module's docstring)."""
    stop = Stopper(wiring)
    deadline = time.monotonic() + timeout
    if sources_on:
        try:  # nodes that join from now on start without sources
            ray.get(supervisor.stop_sources.remote(), timeout=10)
        except ray.exceptions.RayError as exc:
            log.warning("could not tell the supervisor to start no more sources: %s", brief(exc))
    stop.step("stop_intake")
    sender.flush_routers(timeout)
    sender.settle_until(deadline)
    stop.step("drain", max(0.0, deadline - time.monotonic()), deadline=deadline)
    parked = 0
    if sender.tracker.in_flight or not stop.record.settled("drain"):
        log.warning(
            "drain timeout: %d submissions (%d entries) still in flight; parking what is "
            "queued in the DLQ",
            sender.tracker.in_flight,
            sender.tracker.in_flight_entries,
        )
        stop.step("park")
        parked = stop.record.total("park", "batcher")
        sender.settle_until(time.monotonic() + STEP_TIMEOUT)
    stop.step("close", deadline=time.monotonic() + 60.0)
    sender.tracker.finish()
    closed = Closed(sender.tracker.report(parked, stop.record.problems))
    _take_source_figures(closed, stop.record)
    # The sources' lines count like the driver's own submissions (and apart as well).
    closed.report.sources = dict(closed.sources)
    for stats in closed.sources.values():
        closed.report.stats.merge(stats)
    return closed


def _take_source_figures(closed: Closed, record: StopRecord) -> None:
    """What each kind of source did, summed over the nodes, from their close answers."""
    for name, (role, answer) in sorted(record.answers.get("close", {}).items()):
        parsed = names.parse(name)
        if role != "source" or parsed is None or not isinstance(answer, dict):
            continue
        kind = parsed.detail
        run = answer.get("run")
        if isinstance(run, RunStats):
            closed.sources.setdefault(kind, RunStats()).merge(run)
        prefix = "file" if kind == "files" else kind
        for k, v in (answer.get("counts") or {}).items():
            if isinstance(v, int):
                closed.counts[f"{prefix}_{k}"] = closed.counts.get(f"{prefix}_{k}", 0) + v
