"""What a running shipper answers about itself: DLQ, breakers, restarts.

:class:`ShipperViews` is the read-only half of :class:`actors.pipeline.Shipper`'s API,
kept apart so the class that starts, submits and stops stays short.
"""

from __future__ import annotations

from typing import Any

import ray

from shipper.dlq import DlqStats

__all__ = ["ShipperViews"]


class ShipperViews:
    """Queries a :class:`~actors.pipeline.Shipper` answers from its actors."""

    _supervisor: Any

    def _dlqs_by_node(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def _dlqs(self) -> list[Any]:
        return [d for _, d in self._dlqs_by_node()]

    def dlq_count(self) -> int:
        """Records in the DLQs of every node (0 when the DLQ is disabled)."""
        return int(sum(ray.get([d.count.remote() for d in self._dlqs()])))

    def reprocess_dlq(self, **kw: Any) -> dict[str, int]:
        """Run one DLQ reprocessing pass now on every node; the summed counts."""
        out: dict[str, int] = {}
        for summary in ray.get([d.reprocess.remote(**kw) for d in self._dlqs()]):
            for k, v in summary.as_dict().items():
                out[k] = out.get(k, 0) + v
        return out

    def breaker_states(self) -> dict[str, dict[str, Any]]:
        """Per broker set: state (0 closed, 1 open, 2 half-open), opens, retry time."""
        states: dict[str, dict[str, Any]] = ray.get(self._supervisor.states.remote())
        return states

    def breaker_history(self) -> list[tuple[float, str, int, int]]:
        """Every breaker transition so far: (wall time, broker set, old, new)."""
        history: list[tuple[float, str, int, int]] = ray.get(self._supervisor.history.remote())
        return history

    def restarts(self) -> dict[str, int]:
        """Actor restarts the supervisor has seen, by component."""
        counts: dict[str, int] = ray.get(self._supervisor.restart_counts.remote())
        return counts

    def dlq_stats(self) -> DlqStats | None:
        """The DLQ figures of the first node (the driver's, with ``fleet.nodes: driver``),
        or None without a DLQ; :meth:`dlq_stats_by_node` has every node."""
        dlqs = self._dlqs()
        return None if not dlqs else ray.get(dlqs[0].stats.remote())

    def dlq_stats_by_node(self) -> dict[str, DlqStats]:
        """DLQ figures per node, for the nodes whose DLQ can be found now."""
        pairs = self._dlqs_by_node()
        stats = ray.get([d.stats.remote() for _, d in pairs])
        return {key: st for (key, _), st in zip(pairs, stats, strict=True)}
