"""Settings for a Ray the shipper starts itself, applied before Ray is imported.

Ray 2.60 turns token authentication on by default for a new local cluster and says so
on stderr each time ("Token authentication is enabled for this Ray cluster...").
That is the secure default, so the shipper keeps it, but asks for it explicitly
through Ray's documented ``RAY_AUTH_MODE`` variable, which Ray then takes without
the notice. A mode the user set is left alone. When joining a cluster (an address is
given), nothing is changed: the cluster's own mode applies.

Ray reads the variable when it is imported, so :func:`prepare` must run before the
first ``import ray`` in the process (the command line and the demo call it first).
"""

from __future__ import annotations

import os
import sys

__all__ = ["join_ray", "prepare"]


def prepare(address: str | None = None) -> None:
    """Ask for Ray's token authentication explicitly when a local Ray will start."""
    address = address or os.environ.get("RAY_ADDRESS")
    if (address and address != "local") or "ray" in sys.modules:
        # Joining a cluster: its mode applies. Ray already imported: it has read its
        # settings, and a mode set now would contradict them (ray.init then fails).
        return
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def join_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``), or start a local Ray
    of the shipper's own; nothing when this process is connected already."""
    import logging

    import ray

    if ray.is_initialized():
        return
    ray.init(
        # "local" starts a Ray of our own; a bare ray.init() would try to join
        # whatever cluster an earlier session recorded, even a dead one.
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        log_to_driver=True,
        logging_level=logging.WARNING,
    )
