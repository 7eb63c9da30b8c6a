"""The driver's submission path: budget, spreading, acknowledgements, resends.

:class:`Sender` is what :class:`actors.pipeline.Shipper` submits through. Before each
submission it consults the in-flight budget (:class:`shipper.submissions.SubmissionTracker`;
when it is used up, it waits for the oldest acknowledgement: the backpressure a caller
feels), picks a pipeline with the driver's :class:`actors.client.RouterClient` and
keeps the payload until the acknowledgement: a submission whose pipeline died with it
(a lost node, a killed Router) goes again to another pipeline, counted in
``stats().resent`` (possible duplicates), never reported twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import ray

from shipper.config import ShipperConfig
from shipper.errors import BackpressureError, ShutdownError, brief
from shipper.outcomes import SubmissionResult
from shipper.submissions import SubmissionTracker, lost_submission

from .client import RouterClient
from .handles import Order, Ref, RouterHandle

__all__ = ["Ack", "Sender"]

log = logging.getLogger("shipper")

#: Attempts at a submission whose pipeline died with it, before it is reported failed.
SEND_ATTEMPTS = 3

Call = Callable[[RouterHandle, float, Order], Ref[SubmissionResult]]


class Ack:
    """The acknowledgement of one submission: resolves when every entry has an outcome."""

    def __init__(self, sender: Sender, call: Call, size: int) -> None:
        self._sender = sender
        self.call = call  # sends it again, to another pipeline, if its own died
        self.size = size
        self.ref: Ref[SubmissionResult] | None = None
        self.node = ""
        self.attempts = 0
        self._result: SubmissionResult | None = None

    def done(self) -> bool:
        if self._result is not None:
            return True
        assert self.ref is not None
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self, timeout: float | None = None) -> SubmissionResult:
        """Block until the outcome is known (``TimeoutError`` after ``timeout``)."""
        if self._result is None:
            self._sender.settle(self, timeout)
        assert self._result is not None
        return self._result

    def __repr__(self) -> str:
        state = self._result.summary() if self._result is not None else "pending"
        return f"Ack({self.size} entries: {state})"


class Sender:
    """The driver's submissions in flight (see the module's docstring)."""

    def __init__(
        self,
        config: ShipperConfig,
        client: RouterClient,
        refresh_fleet: Callable[[], None],
        dlqs: Callable[[], list[Any]],
    ) -> None:
        self.config = config
        self._client = client
        self._refresh_fleet = refresh_fleet
        self._dlqs = dlqs
        pipe = config.pipeline
        # Entries in flight from this driver, per pipeline (see SubmissionTracker).
        self.per_pipeline_budget = pipe.max_inflight_entries or config.sinks.kafka.inflight_entries
        self._tracker: SubmissionTracker[Ack] = SubmissionTracker(
            pipe.max_inflight_submissions, self.per_pipeline_budget
        )
        self._acks: dict[Any, Ack] = {}
        self._closed = False

    @property
    def tracker(self) -> SubmissionTracker[Ack]:
        return self._tracker

    def set_pipelines(self, n: int) -> None:
        """The budgets grow with the number of pipelines."""
        n = max(1, n)
        self._tracker.max_submissions = self.config.pipeline.max_inflight_submissions * n
        self._tracker.entry_budget = self.per_pipeline_budget * n

    def close(self) -> None:
        """Accept nothing more (what is in flight still settles)."""
        self._closed = True

    def submit(
        self, size: int, call: Call, timeout: float | None = None, overflow: bool = False
    ) -> Ack:
        if self._closed:
            raise ShutdownError("the shipper is closed; create a new Shipper to submit more")
        if timeout is None:
            timeout = self.config.pipeline.submit_timeout
        deadline = time.monotonic() + timeout
        tracker = self._tracker
        while not overflow and not tracker.has_room(size):
            left = deadline - time.monotonic()
            ready, _ = ray.wait(list(self._acks), num_returns=1, timeout=max(0.0, left))
            if not ready:
                raise BackpressureError(
                    f"the pipeline took no new submission for {timeout:.0f}s "
                    f"({tracker.in_flight} in flight); Kafka is slow or down. The entries "
                    "were not accepted: submit them again later"
                )
            self.settle(self._acks[ready[0]], None)
        if tracker.dlq_full and not overflow:
            self._wait_for_dlq_room(deadline)
        ack = Ack(self, call, size)
        self.send(ack)
        tracker.add(ack, size)
        return ack

    def _wait_for_dlq_room(self, deadline: float) -> None:
        # Kafka refused entries and a DLQ could not take them: accept nothing more
        # until every DLQ has room again (or the submit timeout passes).
        while not all(ray.get([d.has_room.remote() for d in self._dlqs()])):
            if time.monotonic() >= deadline:
                raise BackpressureError(
                    "the DLQ's disk budget is used up and Kafka is not taking entries; "
                    "nothing more is accepted. Free space with `shipper dlq replay` or "
                    "`shipper dlq purge`, or raise dlq_config.max_disk_bytes"
                )
            time.sleep(0.2)
        self._tracker.dlq_full = False

    def send(self, ack: Ack, avoid: Iterable[str] = ()) -> None:
        """Send ``ack``'s submission to the least loaded pipeline (not one of ``avoid``)."""
        if self._client.stale(self.config.fleet.reconcile_interval):
            self._refresh_fleet()  # nodes that joined get work, lost ones none
        banned = set(avoid)
        while True:
            key = self._client.pick(banned)  # one of ``banned`` only if nothing else
            if key is None:
                raise ShutdownError("no node pipeline runs; nothing can be shipped")
            if self._client.reachable(key):
                break
            if key in banned:
                raise ShutdownError("no node pipeline answers; nothing can be shipped")
            # Its Router is gone: the node left and the supervisor has not said so yet.
            banned.add(key)
            self._refresh_fleet()
        ack.node = key
        ack.attempts += 1
        ack.ref = ack.call(self._client.router(key), time.time(), self._client.next_order(key))
        self._acks[ack.ref] = ack
        self._client.add(key, ack.size)

    def settle(self, ack: Ack, timeout: float | None) -> None:
        while ack._result is None:
            assert ack.ref is not None
            try:
                result: SubmissionResult | None = ray.get(ack.ref, timeout=timeout)
            except ray.exceptions.GetTimeoutError as exc:
                raise TimeoutError(
                    f"submission of {ack.size} entries not settled in {timeout}s"
                ) from exc
            except ray.exceptions.RayError as exc:
                self._acks.pop(ack.ref, None)
                self._client.done(ack.node, ack.size)
                result = self.lost(ack, exc)
                if result is None:
                    continue  # sent again: wait for the new acknowledgement
            else:
                self._acks.pop(ack.ref, None)
                self._client.done(ack.node, ack.size)
            assert result is not None
            ack._result = result
            self._tracker.settle(ack, result)

    def lost(self, ack: Ack, exc: BaseException) -> SubmissionResult | None:
        """``ack``'s pipeline died with it: send it again to another one (the driver
        still has the payload) and return None, or, after the last attempt, the result
        that reports every entry failed."""
        failed = ack.node
        self._client.lost(failed)  # a restarted Router never saw this driver's numbers
        self._refresh_fleet()
        if ack.attempts < SEND_ATTEMPTS and self._client.pipelines and not self._closed:
            log.warning(
                "the pipeline on %s failed with a submission of %d entries (%s); sending it again",
                failed,
                ack.size,
                brief(exc),
            )
            try:
                self.send(ack, avoid=[failed])
            except ShutdownError as none_left:
                return lost_submission(ack.size, f"router failed: {brief(exc)}; {none_left}")
            self._tracker.stats.resent += ack.size
            return None
        return lost_submission(ack.size, f"router failed: {brief(exc)}")

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for every outstanding ack."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Numbered like a submission, so each Router flushes after every earlier one.
        self.flush_routers(timeout)
        for ack in list(self._acks.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.settle(ack, left)

    def flush_routers(self, timeout: float | None) -> None:
        refs = [
            self._client.router(key).flush.remote(self._client.next_order(key))
            for key in self._client.node_keys()
            if self._client.reachable(key)
        ]
        try:
            ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            pass
        except ray.exceptions.RayError as exc:
            log.warning("a flush failed: %s", brief(exc))

    def settle_until(self, deadline: float) -> None:
        for ack in list(self._acks.values()):
            try:
                self.settle(ack, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break

    def pick_up(self) -> None:
        """Settle the acknowledgements that came meanwhile, without blocking."""
        refs = list(self._acks)
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                ack = self._acks.get(ref)
                if ack is not None:
                    self.settle(ack, None)
