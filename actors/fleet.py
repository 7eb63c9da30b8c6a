"""One node pipeline: its actors started together on a node, found and stopped by name.

A node pipeline is the Producers of the broker set, the DLQ on the node's disk, the
Router, the default topic's Batcher, and, once sources are on, the file source and
the HTTP intake: all pinned to the node (``Wiring.placement``), all named after it
(``Wiring``). The supervisor starts one per selected node
(:class:`shipper.fleet.FleetPlan`) and owns them: they live as long as the fleet.
"""

from __future__ import annotations

import logging
from typing import Any

from .dlq import start_dlq
from .producer import start_producer
from .router import start_router
from .sources import start_file_source, start_http_source
from .wiring import Wiring

__all__ = ["node_actor_names", "start_node_pipeline", "start_node_sources"]

log = logging.getLogger("shipper.fleet")


def node_actor_names(names: list[str], key: str) -> list[str]:
    """Those of ``names`` that belong to node ``key``'s pipeline."""
    out = []
    for name in names:
        parts = name.split(":")
        if parts[0] in ("router", "batcher", "producer", "dlq") and len(parts) > 1:
            if parts[1] == key:
                out.append(name)
        elif parts[0] == "source" and len(parts) > 2 and parts[2] == key:
            out.append(name)
    return out


async def start_node_pipeline(w: Wiring) -> dict[str, Any]:
    """Start (or find) node ``w.node``'s pipeline and wait until it answers. ``w``
    keeps the handles: its holder must keep it as long as the pipeline should live."""
    producers = [
        w.keep(w.producer_name(i), start_producer(w, i))
        for i in range(w.config.pipeline.producer_replicas)
    ]
    dlq = w.keep(w.dlq_name(), start_dlq(w)) if w.sink.dlq_config.enabled else None
    router = w.keep(w.router_name(), start_router(w))
    # The default topic's Batcher starts with the pipeline: the first submission or
    # DLQ replay does not wait for a process to start.
    batcher = w.batcher(w.sink.topic)
    for p in producers:
        await p.health.remote()
    await router.stats.remote()
    await batcher.start.remote()
    if dlq is not None:
        # Whatever an earlier run (or this node's last life) left in the DLQ replays.
        await dlq.kick.remote()
    return {"node_id": w.node_id, "router": w.router_name()}


async def start_node_sources(w: Wiring, env: dict[str, str] | None = None) -> dict[str, str]:
    """Start node ``w.node``'s sources (the config's files and HTTP intake); ``env``
    (the HTTP token's variable, from the driver) reaches the intake's process."""
    src = w.config.sources
    out: dict[str, str] = {}
    if src.files:
        files = w.keep(w.source_name("files"), start_file_source(w))
        await files.start.remote()
        out["files"] = ", ".join(p for g in src.files for p in g.paths)
    if src.http.enabled:
        http = w.keep(w.source_name("http"), start_http_source(w, env))
        out["http"] = f"{await http.start.remote()}/v1/logs"
    return out
