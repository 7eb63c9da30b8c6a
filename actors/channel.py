"""The supervisor's one way to tell other actors something.

Every push the supervisor makes (a breaker state to the Batchers, a kick to the
DLQs, health to the telemetry actor, a restarted actor's rewiring) goes through
:class:`Channel`: by name, fire and forget. With ``until_taken`` the call is sent
again while Ray reports the actor as restarting (an actor announces itself from its
constructor, before Ray lets calls through; seen under load), up to a minute.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shipper.errors import brief

from .wiring import Wiring

__all__ = ["Channel"]

log = logging.getLogger("shipper.supervisor")

#: Tries of a call sent ``until_taken`` (about a minute in all).
TRIES = 60


class Channel:
    """Calls by actor name from an actor's event loop (see the module's docstring)."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, name: str, method: str, *args: Any, until_taken: bool = False) -> bool:
        """Call ``method(*args)`` on actor ``name``; False when no such actor lives (it
        left with its node: the caller forgets it)."""
        if until_taken:
            self._spawn(self._until_taken(name, method, args))
            return True
        try:
            handle = self.wiring._get(name)
        except ValueError:
            self.wiring.forget(name)
            return False
        except Exception as exc:  # e.g. the GCS slow to answer: the next push
            log.warning("could not send %s to %s: %s", method, name, brief(exc))
            return True
        try:
            getattr(handle, method).remote(*args)
        except Exception as exc:
            log.info("could not send %s to %s: %s", method, name, brief(exc))
        return True

    def to_role(self, role: str, method: str, *args: Any) -> None:
        """``method(*args)`` on every live actor of ``role`` (every DLQ, ...)."""
        for name in self.wiring.named(role):
            self.send(name, method, *args)

    async def _until_taken(self, name: str, method: str, args: tuple[Any, ...]) -> None:
        import ray

        for attempt in range(1, TRIES + 1):
            try:
                await getattr(self.wiring._get(name), method).remote(*args)
                return
            except ray.exceptions.ActorUnavailableError:
                await asyncio.sleep(min(2.0, 0.2 * attempt))
            except Exception as exc:  # died again, or gone for good
                log.warning("could not %s %s: %s", method, name, brief(exc))
                return
        log.warning("%s did not take %s after %d tries", name, method, TRIES)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
