"""What every shipper actor shares: Ray options, start-up chores, the restart notice.

Each actor is a named actor in the Shipper's namespace (found again with
``get_if_exists``, so several callers share it), restarted forever by Ray, and
reserves no CPU: on a 2-core machine a CPU per actor would leave room for two actors.
Its constructor takes only plain data (see :mod:`actors.wiring`), so a restart
rebuilds it from arguments Ray keeps inline with the actor's definition.
"""

from __future__ import annotations

import gc
import logging
import uuid
from typing import Any

import ray

from .names import SUPERVISOR, node_key

log = logging.getLogger("shipper.actors")


def named_actor(cls: type, name: str, namespace: str, max_concurrency: int, **extra: Any) -> Any:
    """``ray.remote(cls).options(...)`` with the shared options plus ``extra``."""
    options: dict[str, Any] = {"num_cpus": 0, **extra}
    return ray.remote(cls).options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        max_concurrency=max_concurrency,
        max_restarts=-1,
        **options,
    )


def actor_logs(wiring: Any) -> None:
    """Route this actor process's ``shipper`` log lines to the node's ``logging.file``
    (not to the driver's terminal; see :mod:`shipper.logs`)."""
    from shipper.logs import route_shipper_logs

    if not wiring.node:  # a fleet-wide actor (supervisor, keeper): its own node's file
        node_id = ray.get_runtime_context().get_node_id()
        wiring = wiring.on_node(node_key(node_id), node_id)
    route_shipper_logs(wiring.log_file())


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap in an actor on the data path.

    Such an actor allocates thousands of short-lived containers per call, which
    triggers collections, and a full collection walks everything Ray and the shipper
    imported. Freezing what exists at start-up takes that out of every later
    collection, and larger thresholds make collections rarer (the data path makes
    no reference cycles; garbage is freed by reference counting).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def announce_start(namespace: str, component: str, name: str) -> None:
    """Tell the supervisor that this actor (re)started. The supervisor knows which
    names it has seen: a second start of a name is Ray restarting that actor after
    its process died, and the supervisor counts it and rewires what depended on the
    old instance. Fire and forget; before the supervisor exists there is nothing to
    rewire (it learns the actors already running when it starts)."""
    instance = uuid.uuid4().hex
    try:
        ray.get_actor(SUPERVISOR, namespace=namespace).started.remote(component, name, instance)
    except Exception as exc:
        log.debug("no supervisor to tell about %s: %s", name, exc)
