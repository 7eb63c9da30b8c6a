"""The client-side router: which node pipeline gets a submission, and through which handle.

Every sender that spreads work over the node pipelines (the driver's
:class:`actors.pipeline.Shipper`, and each node's HTTP intake) holds one
:class:`RouterClient`. It keeps:

- the fleet view: the running pipelines as the supervisor last listed them
  (:meth:`set_fleet`; an empty answer from a supervisor that is just restarting keeps
  the known ones);
- the spreading: the pipeline with the fewest of this sender's entries in flight
  (:class:`shipper.fleet.Spreader`), a preferred one on a tie;
- the Router cache: one handle per node, dropped when the node leaves or comes back
  under its name with a new Router, or when a call to it failed (:meth:`lost`);
- the sender's call numbers, one :class:`shipper.ordering.OrderCounter`, renewed when a
  Router was lost (its successor never saw the old numbers).

Fetching the fleet is the caller's (a blocking ``ray.get`` in the driver, an ``await``
in an actor); sending again elsewhere after a loss is the caller's too, with
:meth:`pick` and ``avoid``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from shipper.fleet import Spreader
from shipper.ordering import OrderCounter

from .handles import Order, RouterHandle
from .wiring import Wiring

__all__ = ["RouterClient"]


class RouterClient:
    """One sender's view of the node pipelines (see the module's docstring)."""

    def __init__(self, wiring: Wiring, prefer: str | None = None) -> None:
        self.wiring = wiring
        #: A key always listed and preferred on a tie (an HTTP intake's own node).
        self.prefer = prefer
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.spreader = Spreader()
        self.orders = OrderCounter()
        self.fleet_at = float("-inf")
        self._routers: dict[str, RouterHandle] = {}
        self._spread()

    # ------------------------------------------------------------------ the fleet

    def set_fleet(self, pipelines: Mapping[str, Mapping[str, Any]]) -> None:
        """Take the supervisor's list of running pipelines (key -> node id, ...)."""
        self.fleet_at = time.monotonic()
        if not pipelines and self.pipelines:
            # A restarted supervisor answers with nothing until it has taken the
            # pipelines over: keep sending to the known ones (a lost one is found out
            # when its Router cannot be reached).
            return
        old = self.pipelines
        self.pipelines = {k: dict(v) for k, v in pipelines.items()}
        for key in list(self._routers):
            # A node that left and came back under its name has a new Router.
            if key not in pipelines or pipelines[key]["node_id"] != old.get(key, {}).get("node_id"):
                del self._routers[key]
        self._spread()

    def _spread(self) -> None:
        keys = set(self.pipelines)
        if self.prefer:
            keys.add(self.prefer)
        self.spreader.set_pipelines(sorted(keys))

    def stale(self, every: float) -> bool:
        """Whether the fleet view is older than ``every`` seconds."""
        return time.monotonic() - self.fleet_at >= every

    def node_keys(self) -> list[str]:
        return sorted(self.pipelines)

    def wiring_of(self, key: str) -> Wiring:
        """The wiring (names, handles) of node ``key``'s pipeline."""
        node_id = self.pipelines.get(key, {}).get("node_id", "")
        return self.wiring.on_node(key, node_id)

    # ------------------------------------------------------------------ spreading

    def pick(self, avoid: Iterable[str] = ()) -> str | None:
        """The pipeline with the fewest of this sender's entries in flight, not one of
        ``avoid`` unless nothing else is left; None when there is none."""
        return self.spreader.pick(avoid, prefer=self.prefer)

    def add(self, key: str, n: int) -> None:
        self.spreader.add(key, n)

    def done(self, key: str, n: int) -> None:
        self.spreader.done(key, n)

    # ------------------------------------------------------------------ Routers

    def router(self, key: str) -> RouterHandle:
        """Node ``key``'s Router (``ValueError`` when it cannot be found)."""
        handle = self._routers.get(key)
        if handle is None:
            handle = self._routers[key] = self.wiring_of(key).router()
        return handle

    def reachable(self, key: str) -> bool:
        """Whether node ``key``'s Router can be found now."""
        try:
            self.router(key)
        except ValueError:  # no such named actor
            self._routers.pop(key, None)
            return False
        return True

    def lost(self, key: str) -> None:
        """A call to node ``key``'s Router failed: find it anew next time, and number
        the calls as a new sender (a restarted Router never saw the old numbers)."""
        self._routers.pop(key, None)
        self.wiring.forget(self.wiring.on_node(key, "").router_name())
        self.orders.renew()

    def next_order(self, key: str) -> Order:
        """The number of this sender's next call to node ``key``'s Router."""
        return self.orders.next(key, per_receiver_id=True)
