"""The fleet, without Ray: which nodes get a pipeline, and which pipeline gets work.

:class:`FleetPlan` is what the supervisor runs against Ray's node list every
``fleet.reconcile_interval``: the nodes that should have a pipeline
(``fleet.nodes``), which of them need one started (new, or back after being lost),
and which were lost. A node is named by its *key*: its Ray node label
``shipper-node`` when set, else its hostname; ``{node}`` in a configured path becomes
that key, so a node that comes back finds its DLQ and its checkpoints again.

:class:`Spreader` is what a sender (the driver) runs to pick a pipeline for a
submission: the live one with the fewest entries in flight, so a slow node gets
less. A submission whose pipeline died is sent again to another one by its sender.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NODE_LABEL",
    "FleetPlan",
    "FleetReconciler",
    "NodeInfo",
    "Reconcile",
    "Spreader",
    "node_path",
    "start_line",
]

#: The Ray node label that names a node for the shipper (else: its hostname).
NODE_LABEL = "shipper-node"


def node_path(template: str, key: str) -> str:
    """``template`` with ``{node}`` replaced by the node's key."""
    return template.replace("{node}", key)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One Ray node, as the supervisor sees it."""

    node_id: str
    key: str
    alive: bool
    resources: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_ray(cls, raw: Mapping[str, Any]) -> NodeInfo:
        """From an entry of ``ray.nodes()``."""
        labels = raw.get("Labels") or {}
        key = labels.get(NODE_LABEL) or raw.get("NodeManagerHostname") or raw["NodeID"][:12]
        return cls(
            node_id=str(raw["NodeID"]),
            key=_safe(str(key)),
            alive=bool(raw.get("Alive")),
            resources=dict(raw.get("Resources") or {}),
        )


def _safe(key: str) -> str:
    # Keys end up in actor names and paths: keep them to a plain alphabet.
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key) or "node"


@dataclass
class Reconcile:
    """What a reconcile round found: pipelines to start, nodes lost, nodes back."""

    start: list[NodeInfo] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    back: list[str] = field(default_factory=list)
    #: wanted nodes whose name a running pipeline's live node has (not started)
    held: list[NodeInfo] = field(default_factory=list)


class FleetPlan:
    """Which nodes get a pipeline, round after round. Not thread-safe: one owner."""

    def __init__(self, selector: str, driver_node_id: str) -> None:
        self.selector = selector
        self.driver_node_id = driver_node_id
        #: key -> node id of the pipeline that runs (or ran) there
        self.running: dict[str, str] = {}
        self.lost: set[str] = set()

    def wanted(self, node: NodeInfo) -> bool:
        if not node.alive:
            return False
        if self.selector == "driver":
            return node.node_id == self.driver_node_id
        if self.selector == "all":
            return True
        resource = self.selector.partition(":")[2]
        return node.resources.get(resource, 0) > 0

    def keys(self, nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
        """Nodes with their keys settled. A node whose pipeline runs keeps the key it
        started under (its paths hang on it); new nodes that share a name (two hosts
        with one hostname and no label) get their node ids' heads appended."""
        by_id = {node_id: key for key, node_id in self.running.items()}
        fresh = Counter(n.key for n in nodes if n.alive and n.node_id not in by_id)
        out = []
        for n in nodes:
            key = by_id.get(n.node_id)
            if key is None:
                key = f"{n.key}-{n.node_id[:6]}" if fresh[n.key] > 1 else n.key
            out.append(n if key == n.key else NodeInfo(n.node_id, key, n.alive, n.resources))
        return out

    def reconcile(self, nodes: Iterable[NodeInfo]) -> Reconcile:
        """Compare with Ray's nodes; the caller starts ``start`` and then calls
        :meth:`started` for each."""
        out = Reconcile()
        nodes = self.keys(list(nodes))
        live = {n.node_id for n in nodes if n.alive}
        for key, node_id in self.running.items():
            if node_id not in live and key not in self.lost:
                self.lost.add(key)
                out.lost.append(key)
        for n in nodes:
            if not self.wanted(n):
                continue
            runs = self.running.get(n.key)
            if runs == n.node_id and n.key not in self.lost:
                continue
            if runs is not None and runs in live and runs != n.node_id:
                # Its name is taken by a live node whose pipeline runs: the same host
                # back before Ray has declared its old node dead, or two hosts with
                # one name. One pipeline per name: this one waits.
                out.held.append(n)
                continue
            if n.key in self.lost:
                out.back.append(n.key)
            out.start.append(n)
        return out

    def started(self, node: NodeInfo) -> None:
        self.running[node.key] = node.node_id
        self.lost.discard(node.key)

    def up(self) -> list[str]:
        return sorted(k for k in self.running if k not in self.lost)


class FleetReconciler:
    """The supervisor's book of the fleet: a :class:`FleetPlan` plus what each node's
    start gave (its pipeline's description), which starts are under way and why the
    last start of a node failed. The supervisor asks Ray for the nodes, calls
    :meth:`round`, starts what it says, and reports back with :meth:`started` or
    :meth:`failed`; it makes no decision of its own."""

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        #: key -> what the node's pipeline answered when it started
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.starting: set[str] = set()
        self.errors: dict[str, str] = {}
        self._held_told: set[str] = set()

    def round(self, nodes: Iterable[NodeInfo]) -> Reconcile:
        """What to do now: ``start`` (marked as starting), ``lost`` (dropped from the
        pipelines), and in ``held`` only the nodes not reported before."""
        todo = self.plan.reconcile(nodes)
        for key in todo.lost:
            self.pipelines.pop(key, None)
        fresh = [n for n in todo.held if n.node_id not in self._held_told]
        self._held_told.update(n.node_id for n in fresh)
        todo.held = fresh
        self.starting = {n.key for n in todo.start}
        return todo

    def started(self, node: NodeInfo, info: dict[str, Any]) -> None:
        self.starting.discard(node.key)
        self.errors.pop(node.key, None)
        self.plan.started(node)
        self.pipelines[node.key] = info

    def failed(self, key: str, error: str) -> None:
        self.starting.discard(key)
        self.errors[key] = error

    def held_by_keeper(self, held: Mapping[str, Mapping[str, Any]]) -> None:
        """Take over pipelines that run already (a restarted supervisor's start)."""
        for key, info in held.items():
            self.started(NodeInfo(str(info["node_id"]), key, True), dict(info))

    def set_sources(self, by_node: Mapping[str, Mapping[str, str]]) -> None:
        for key, srcs in by_node.items():
            if key in self.pipelines:
                self.pipelines[key] = {**self.pipelines[key], "sources": dict(srcs)}

    def progress(self) -> dict[str, Any]:
        """The nodes whose pipeline runs, those still starting, and why a start failed."""
        return {
            "running": sorted(self.pipelines),
            "starting": sorted(self.starting),
            "errors": dict(self.errors),
        }

    def counts(self) -> tuple[int, int]:
        """Nodes up and nodes lost."""
        return len(self.plan.up()), len(self.plan.lost)


class Spreader:
    """Entries in flight per pipeline; picks the least loaded live one."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}

    def set_pipelines(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for k in keys:
            self.in_flight.setdefault(k, 0)
        for k in list(self.in_flight):
            if k not in keys:
                del self.in_flight[k]

    def pick(self, avoid: Iterable[str] = (), prefer: str | None = None) -> str | None:
        """The live pipeline with the fewest entries in flight (ties: ``prefer``, then
        by key), not one of ``avoid`` unless nothing else is left; None when there is
        no pipeline."""
        banned = set(avoid)
        choices = [k for k in self.in_flight if k not in banned] or list(self.in_flight)
        if not choices:
            return None
        return min(choices, key=lambda k: (self.in_flight[k], k != prefer, k))

    def add(self, key: str, n: int) -> None:
        self.in_flight[key] = self.in_flight.get(key, 0) + n

    def done(self, key: str, n: int) -> None:
        if key in self.in_flight:
            self.in_flight[key] = max(0, self.in_flight[key] - n)


def start_line(progress: Mapping[str, Any], elapsed: float) -> str:
    """One line on a start that takes long: how many pipelines run, which nodes wait."""
    running, starting = progress["running"], progress["starting"]
    total = len(running) + len(starting)
    line = f"started {len(running)} of {total} node pipelines in {elapsed:.0f} s"
    if starting:
        line += "; waiting for node " + ", ".join(starting)
    errors = progress.get("errors") or {}
    if errors:
        line += " (" + "; ".join(f"{k}: {e}" for k, e in sorted(errors.items())) + ")"
    return line
