"""How the actors of one shipper find each other: names made in one place, handles by name.

Every actor is constructed from a :class:`Wiring` and nothing else that Ray would have
to keep: it is plain data (the namespace, the config, the node), so when Ray restarts
an actor it rebuilds the same object from the same arguments and finds its peers
again by name. Passing actor handles to a constructor instead would pin them in the
object store, and a restart would fail once they went out of scope.

Names are made and read back in :mod:`actors.names`.

``<node>`` is the node's key: its Ray label ``shipper-node``, else its hostname. The
same key replaces ``{node}`` in the DLQ, checkpoint and log paths, so a node that
comes back finds its files again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from shipper.config import KafkaSinkConfig, ShipperConfig
from shipper.fleet import node_path

from . import names

if TYPE_CHECKING:
    from .handles import (
        BatcherHandle,
        DlqHandle,
        ProducerHandle,
        RouterHandle,
        SupervisorHandle,
        TelemetryHandle,
    )

__all__ = ["Wiring"]


@dataclass(frozen=True)
class Wiring:
    """The plain data every actor of one pipeline is built from."""

    namespace: str
    config: ShipperConfig
    #: The node's key (label ``shipper-node``, else its hostname); "" for the fleet-wide
    #: actors (supervisor, telemetry).
    node: str = ""
    #: The Ray node id the node's actors are pinned to ("" when nothing is pinned).
    node_id: str = ""
    _handles: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __getstate__(self) -> dict[str, Any]:
        # Handles are looked up again in each process, never shipped.
        return {
            "namespace": self.namespace,
            "config": self.config,
            "node": self.node,
            "node_id": self.node_id,
        }

    def on_node(self, node: str, node_id: str) -> Wiring:
        """The wiring of the pipeline on node ``node`` (Ray node ``node_id``)."""
        return Wiring(self.namespace, self.config, node, node_id)

    # ------------------------------------------------------------------ placement

    def placement(self, kind: str) -> dict[str, Any]:
        """Ray options that pin an actor of this node's pipeline to the node, with the
        resources ``fleet.resources.<kind>`` asks for."""
        res = getattr(self.config.fleet.resources, kind)
        out: dict[str, Any] = {"num_cpus": res.num_cpus}
        if res.memory is not None:
            out["memory"] = res.memory
        if self.node_id:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            out["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        return out

    # ------------------------------------------------------------------ paths

    def dlq_path(self) -> str:
        return node_path(self.sink.dlq_config.path, self.node)

    def checkpoint_path(self) -> str:
        return node_path(self.config.checkpoint_path(), self.node)

    def log_file(self) -> str:
        return node_path(self.config.logging.file, self.node)

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_handles", {})

    @property
    def sink(self) -> KafkaSinkConfig:
        return self.config.sinks.kafka

    @property
    def broker_set(self) -> str:
        return self.sink.broker_set_id()

    # ------------------------------------------------------------------ names

    def router_name(self) -> str:
        return names.router(self.node)

    def batcher_name(self, topic: str) -> str:
        return names.batcher(self.node, topic)

    def producer_name(self, replica: int) -> str:
        return names.producer(self.node, self.broker_set, replica)

    def producer_names(self) -> list[str]:
        return [self.producer_name(i) for i in range(self.config.pipeline.producer_replicas)]

    def dlq_name(self) -> str:
        return names.dlq(self.node)

    def source_name(self, kind: str) -> str:
        return names.source(kind, self.node)

    # ------------------------------------------------------------------ listing

    def named(self, role: str | None = None) -> list[str]:
        """Names of this shipper's live actors (of ``role``, when given)."""
        import ray

        out = []
        for a in ray.util.list_named_actors(all_namespaces=True):
            if a.get("namespace") != self.namespace:
                continue
            parsed = names.parse(a["name"])
            if parsed is not None and (role is None or parsed.role == role):
                out.append(a["name"])
        return sorted(out)

    def node_named(self, role: str | None = None) -> list[str]:
        """Names of this node's live actors (of ``role``, when given)."""
        return names.of_node(self.named(role), self.node, role)

    def topics(self) -> list[str]:
        """Topics that have a Batcher on this node."""
        out = []
        for n in self.node_named("batcher"):
            parsed = names.parse(n)
            assert parsed is not None
            out.append(parsed.detail)
        return out

    # ------------------------------------------------------------------ handles

    def _get(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            import ray

            handle = ray.get_actor(name, namespace=self.namespace)
            self._handles[name] = handle
        return handle

    def keep(self, name: str, handle: Any) -> Any:
        """Hold ``handle`` in this wiring. An actor lives as long as a handle of its
        creator does: the supervisor keeps each node's wiring, so the pipeline it
        started lives as long as the fleet."""
        self._handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        """Drop a cached handle (its actor was killed for good and made anew)."""
        self._handles.pop(name, None)

    def router(self) -> RouterHandle:
        return cast("RouterHandle", self._get(self.router_name()))

    def producers(self) -> list[ProducerHandle]:
        return [cast("ProducerHandle", self._get(n)) for n in self.producer_names()]

    def batcher(self, topic: str) -> BatcherHandle:
        """The topic's Batcher on this node; ``ValueError`` when it has none (yet):
        :meth:`open_batcher` asks for one."""
        return cast("BatcherHandle", self._get(self.batcher_name(topic)))

    async def open_batcher(self, topic: str) -> BatcherHandle:
        """The topic's Batcher on this node, made on first use. The keeper makes it and
        holds it (its one owner: a Batcher outlives whichever entrance met the topic
        first), see :meth:`actors.fleet.FleetKeeperActor.batcher`."""
        name = self.batcher_name(topic)
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = self._get(name)
            except ValueError:
                keeper = self._get(names.KEEPER)
                handle = self.keep(name, await keeper.batcher.remote(self.node, topic))
        return cast("BatcherHandle", handle)

    def dlq(self) -> DlqHandle | None:
        if not self.sink.dlq_config.enabled:
            return None
        return cast("DlqHandle", self._get(self.dlq_name()))

    def supervisor(self) -> SupervisorHandle:
        return cast("SupervisorHandle", self._get(names.SUPERVISOR))

    def telemetry(self) -> TelemetryHandle | None:
        if not self.config.metrics.enabled:
            return None
        return cast("TelemetryHandle", self._get(names.TELEMETRY))
