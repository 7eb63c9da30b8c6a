"""The Ray options every shipper actor shares, in one place.

Each actor is a named actor in the Shipper's namespace (found again with
``get_if_exists``, so several callers share it), restarted forever by Ray, and
reserves no CPU: on a 2-core machine a CPU per actor would leave room for two actors.
"""

from __future__ import annotations

from typing import Any

import ray


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
