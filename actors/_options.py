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
from typing import Any

import ray

from .wiring import SUPERVISOR

log = logging.getLogger("shipper.actors")


def named_actor(cls: type, name: str, namespace: str, max_concurrency: int, **extra: Any) -> Any:
    """``ray.remote(cls).options(...)`` with the shared options plus ``extra``."""
    return ray.remote(cls).options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        max_concurrency=max_concurrency,
        max_restarts=-1,
        num_cpus=0,
        **extra,
    )


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


def was_restarted() -> bool:
    """Whether the calling actor is a restart (Ray re-ran its constructor after its
    process died); False outside an actor (unit tests build actor classes directly)."""
    try:
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return False


def announce_restart(namespace: str, component: str, name: str) -> bool:
    """Tell the supervisor when this actor is a restart; the supervisor counts it and
    rewires what depended on the old instance. Returns whether it was a restart."""
    if not was_restarted():
        return False
    log.warning("%s %s was restarted by Ray", component, name)
    try:
        ray.get_actor(SUPERVISOR, namespace=namespace).started.remote(component, name, True)
    except Exception as exc:  # no supervisor (being shut down): nothing to rewire
        log.info("could not tell the supervisor about the restart of %s: %s", name, exc)
    return True
