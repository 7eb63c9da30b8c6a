"""One node pipeline: its actors started together on a node, found and stopped by name.

A node pipeline is the Producers of the broker set, the DLQ on the node's disk, the
Router, the default topic's Batcher, and, once sources are on, the file source and
the HTTP intake: all pinned to the node (``Wiring.placement``), all named after it
(``Wiring``). The supervisor starts one per selected node
(:class:`shipper.fleet.FleetPlan`) through the *keeper*.

An actor lives as long as a handle held by its creator, and dies with its creator's
process. The keeper (:class:`FleetKeeperActor`, one per shipper, on the driver's node)
creates every node pipeline's actors and holds their handles, and does nothing else:
so a supervisor that crashes and is restarted by Ray finds the pipelines still running
(it asks the keeper which), and the pipelines end with the driver, which owns the
keeper, as a Ray job's actors should.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._options import actor_logs
from .batcher import start_batcher
from .dlq import start_dlq
from .file_source import start_file_source
from .http_source import start_http_source
from .names import KEEPER
from .producer import start_producer
from .router import start_router
from .wiring import Wiring

__all__ = [
    "FleetKeeperActor",
    "start_keeper",
    "start_node_pipeline",
    "start_node_sources",
]

log = logging.getLogger("shipper.fleet")


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
    first = w.sink.first_topic
    batcher = w.keep(w.batcher_name(first), start_batcher(w, first))
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


class FleetKeeperActor:
    """Creates and holds the node pipelines (see the module's docstring)."""

    def __init__(self, wiring: Wiring) -> None:
        actor_logs(wiring)
        self.wiring = wiring
        #: key -> the wiring that holds the handles of that node's actors
        self.held: dict[str, Wiring] = {}
        self.sources: dict[str, dict[str, str]] = {}
        self.sources_on = False
        self._env: dict[str, str] | None = None
        self._reload = False  # `shipper reload` asked; the driver takes it (actors.reload)

    async def start_node(self, key: str, node_id: str) -> dict[str, Any]:
        """Start (or find) node ``key``'s pipeline, with its sources once they are on."""
        w = self.held.get(key)
        if w is None or w.node_id != node_id:
            w = self.wiring.on_node(key, node_id)
            self.sources.pop(key, None)
        # Bounded: a node that cannot place the actors (too few resources) must not
        # leave a call waiting here for every reconcile round.
        info = await asyncio.wait_for(
            start_node_pipeline(w), self.wiring.config.fleet.start_timeout
        )
        self.held[key] = w
        if self.sources_on and key not in self.sources:
            self.sources[key] = await start_node_sources(w, self._env)
        return {**info, "sources": self.sources.get(key, {})}

    async def start_sources(self, env: dict[str, str] | None) -> dict[str, dict[str, str]]:
        """Start the sources on every held pipeline (and on those started later)."""
        self.sources_on = True
        self._env = env
        for key, w in list(self.held.items()):
            if key not in self.sources:
                self.sources[key] = await start_node_sources(w, env)
        return dict(self.sources)

    def batcher(self, key: str, topic: str) -> Any:
        """Node ``key``'s Batcher of ``topic``, made now if it has none. Every Batcher
        is made here, so it has one owner that outlives the entrances feeding it."""
        w = self.held.get(key)
        if w is None:
            raise ValueError(f"no pipeline runs on node {key}")
        name = w.batcher_name(topic)
        try:
            return w._get(name)
        except ValueError:
            return w.keep(name, start_batcher(w, topic))

    def stop_sources(self) -> None:
        """Pipelines started from now on get no sources (the driver stops the others)."""
        self.sources_on = False

    def request_reload(self) -> None:
        """``shipper reload``: the driver reads its configuration again (it looks here
        every second)."""
        self._reload = True

    def take_reload(self) -> bool:
        """Whether a reload was asked since the last look (and clear it)."""
        asked, self._reload = self._reload, False
        return asked

    def drop(self, key: str) -> None:
        """Let node ``key``'s actors go (its node left)."""
        self.held.pop(key, None)
        self.sources.pop(key, None)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """The pipelines held: key -> node id, Router name, sources."""
        return {
            key: {
                "node_id": w.node_id,
                "router": w.router_name(),
                "sources": self.sources.get(key, {}),
            }
            for key, w in sorted(self.held.items())
        }


def start_keeper(wiring: Wiring, driver_node_id: str) -> Any:
    """Create (or find) the shipper's keeper on the driver's node. Not restarted: the
    pipelines it held died with it, and their callers see that."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return (
        ray.remote(FleetKeeperActor)
        .options(
            name=KEEPER,
            namespace=wiring.namespace,
            get_if_exists=True,
            max_concurrency=64,
            max_restarts=0,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node_id, soft=False),
        )
        .remote(wiring)
    )
