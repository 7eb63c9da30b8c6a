"""Every actor name of a shipper, built and read back here and nowhere else.

One shipper is one Ray namespace; its actors are named actors in it::

    router:<node>                    the node pipeline's entrance
    batcher:<node>:<topic>           one per topic
    producer:<node>:<set>:<replica>  one or more per broker set
    dlq:<node>                       the node's dead-letter queue
    source:files:<node>              the node's file source
    source:http:<node>               the node's HTTP intake
    supervisor                       fleet-wide: breakers, restarts, the fleet
    telemetry                        fleet-wide: the scrape endpoint
    keeper                           fleet-wide: owns the node pipelines' actors

``<node>`` is the node's key: its Ray label ``shipper-node``, else its hostname (see
:func:`node_key`). Keys, topics and broker-set ids hold no ``:``, so a name splits
back into its parts without ambiguity (:func:`parse`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KEEPER",
    "NODE_ROLES",
    "SUPERVISOR",
    "TELEMETRY",
    "ActorName",
    "batcher",
    "dlq",
    "node_key",
    "of_node",
    "parse",
    "producer",
    "role_of",
    "router",
    "source",
]

SUPERVISOR = "supervisor"
TELEMETRY = "telemetry"
KEEPER = "keeper"

#: The roles of a node pipeline's actors, in the order a stop walks them: the
#: entrances first (they stop taking work), then what they feed.
NODE_ROLES = ("source", "router", "batcher", "producer", "dlq")


@dataclass(frozen=True, slots=True)
class ActorName:
    """A name read back: its role, its node ("" for fleet-wide actors) and the rest
    (the topic, ``<set>:<replica>``, or the kind of source)."""

    role: str
    node: str = ""
    detail: str = ""

    def __str__(self) -> str:
        if not self.node:
            return self.role
        if self.role == "source":
            return f"source:{self.detail}:{self.node}"
        return f"{self.role}:{self.node}" + (f":{self.detail}" if self.detail else "")


def router(node: str) -> str:
    return str(ActorName("router", node))


def batcher(node: str, topic: str) -> str:
    return str(ActorName("batcher", node, topic))


def producer(node: str, broker_set: str, replica: int) -> str:
    return str(ActorName("producer", node, f"{broker_set}:{replica}"))


def dlq(node: str) -> str:
    return str(ActorName("dlq", node))


def source(kind: str, node: str) -> str:
    return str(ActorName("source", node, kind))


def parse(name: str) -> ActorName | None:
    """The parts of a shipper actor's name; None for a name this module did not make."""
    parts = name.split(":")
    role = parts[0]
    if len(parts) == 1:
        return ActorName(role) if role in (SUPERVISOR, TELEMETRY, KEEPER) else None
    if role == "source" and len(parts) == 3:
        return ActorName(role, parts[2], parts[1])
    if role in ("router", "dlq") and len(parts) == 2:
        return ActorName(role, parts[1])
    if role == "batcher" and len(parts) == 3:
        return ActorName(role, parts[1], parts[2])
    if role == "producer" and len(parts) == 4:
        return ActorName(role, parts[1], f"{parts[2]}:{parts[3]}")
    return None


def role_of(name: str) -> str:
    """The role of a shipper actor's name; "" for a name this module did not make."""
    parsed = parse(name)
    return parsed.role if parsed is not None else ""


def of_node(names: Iterable[str], key: str, role: str | None = None) -> list[str]:
    """Those of ``names`` that belong to node ``key``'s pipeline (and have ``role``)."""
    out = []
    for name in names:
        p = parse(name)
        if p is not None and p.node == key and (role is None or p.role == role):
            out.append(name)
    return out


def node_key(node_id: str) -> str:
    """The key of Ray node ``node_id`` (label ``shipper-node``, else its hostname)."""
    import ray

    from shipper.fleet import NodeInfo

    for raw in ray.nodes():  # type: ignore[no-untyped-call]
        if raw.get("NodeID") == node_id:
            return NodeInfo.from_ray(raw).key
    return node_id[:12]
