"""The stop protocol, without Ray: its steps, the order of the roles, what each answered.

Every actor of a node pipeline speaks the same four verbs, and a stop is one loop:
each step, over the roles in order (the entrances first, then what they feed)::

    stop_intake()     take no new work (a source stops reading, an intake serving)
    drain(seconds)    finish what is in flight, up to ``seconds``; answers what is left
    park()            what is left goes to the DLQ (reason ``shutdown``); answers how many
    close()           release files, stores and clients; answers the actor's figures

:class:`StopRecord` keeps every answer, and every actor that did not answer as a
problem that names it: an actor that cannot answer ``drain`` is never taken for one
with nothing left, and a close with a problem is not a clean one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ROLES", "STEPS", "StopRecord"]

STEPS = ("stop_intake", "drain", "park", "close")
#: The order a step walks the roles of a node pipeline.
ROLES = ("source", "router", "batcher", "producer", "dlq")


@dataclass
class StopRecord:
    """What each actor answered to each step, and who did not answer."""

    #: step -> actor name -> (its role, its answer)
    answers: dict[str, dict[str, tuple[str, Any]]] = field(default_factory=dict)
    #: one line per actor and step that got no answer
    problems: list[str] = field(default_factory=list)
    _failed: set[tuple[str, str]] = field(default_factory=set)

    def answered(self, step: str, role: str, actor: str, answer: Any) -> None:
        self.answers.setdefault(step, {})[actor] = (role, answer)

    def failed(self, step: str, actor: str, why: str) -> str:
        """Record that ``actor`` gave no answer to ``step``; the problem's line."""
        line = f"{actor} did not answer {step}: {why}"
        self._failed.add((step, actor))
        self.problems.append(line)
        return line

    def total(self, step: str, role: str | None = None) -> int:
        """The sum of the whole-number answers to ``step`` (of actors of ``role``)."""
        out = 0
        for of, answer in self.answers.get(step, {}).values():
            if isinstance(answer, int) and (role is None or of == role):
                out += answer
        return out

    def settled(self, step: str) -> bool:
        """Every actor answered ``step``, and nothing is left (answers all 0)."""
        return not any(s == step for s, _ in self._failed) and self.total(step) == 0

    def closed(self, role: str) -> list[dict[str, Any]]:
        """The answers to ``close`` of the actors of ``role``, by name order."""
        got = self.answers.get("close", {})
        return [got[n][1] for n in sorted(got) if got[n][0] == role]
