"""Reading the configuration file again, without Ray: is the new one usable, and what
changed.

:func:`check_reload` loads the file the way a start does (the same validation, the
same file checks) and compares it with the running configuration. A file that does
not validate is refused with its problems, and the running configuration stays; an
unchanged one needs nothing; otherwise the caller switches over (``actors.reload``).
:func:`changes` names what differs, section by section, for the log line and the
command's message (secrets are compared, never shown).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shipper.config import ShipperConfig, check_files, load_config
from shipper.errors import ConfigError

__all__ = ["RELOAD_RESULTS", "ReloadCheck", "changes", "check_reload", "resumed"]

#: The values of ``log_capturer_config_reloads_total``'s ``result`` label.
RELOAD_RESULTS = ("applied", "unchanged", "refused", "failed")

# Sections compared one level deeper than the top, so a message can say
# "sinks.kafka.headers" rather than "sinks".
_DEEP = ("sinks", "sources")


@dataclass
class ReloadCheck:
    """What reading the file gave: the new config (None when refused), its problems,
    and the dotted names of the settings that differ from the running ones."""

    config: ShipperConfig | None
    problems: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.config is None

    @property
    def unchanged(self) -> bool:
        return self.config is not None and not self.changed


def _leaves(data: Any, prefix: str, depth: int) -> dict[str, Any]:
    if isinstance(data, Mapping) and depth > 0:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k), depth - 1))
        return out
    return {prefix: data}


def changes(old: ShipperConfig, new: ShipperConfig) -> list[str]:
    """The settings that differ: ``sinks.kafka.headers``, ``sources.files``, ``metrics``
    (a whole section below ``sinks``/``sources``' children, or a top-level one)."""
    # (Python mode: secrets compare by their values, and are never shown.)
    a = old.model_dump(by_alias=True)
    b = new.model_dump(by_alias=True)
    out: list[str] = []
    for top in sorted(set(a) | set(b)):
        depth = 2 if top in _DEEP else 0
        left = _leaves(a.get(top), top, depth)
        right = _leaves(b.get(top), top, depth)
        out += [k for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)]
    return out


def check_reload(path: str | os.PathLike[str], running: ShipperConfig) -> ReloadCheck:
    """Load ``path`` as a start would and compare it with ``running``."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        return ReloadCheck(None, list(exc.problems))
    except OSError as exc:
        return ReloadCheck(None, [f"cannot read {path}: {exc.strerror or exc}"])
    if not new.sinks.kafka.enabled:
        return ReloadCheck(None, ["sinks.kafka.enabled: the Kafka sink is disabled"])
    problems = check_files(new)
    if problems:
        return ReloadCheck(None, list(problems))
    return ReloadCheck(new, [], changes(running, new))


def resumed(old: ShipperConfig, new: ShipperConfig) -> ShipperConfig:
    """``new`` as the pipelines that take over from ``old``'s must run it: a file group
    that was followed already (the same ``paths``) starts files without a checkpoint
    at their beginning, whatever its ``start_at``. Such a file appeared after the
    first start (a rotation's new file, one created during the switch-over, one that
    was empty): its lines are all new. A group the reload adds keeps its ``start_at``."""
    before = {tuple(g.paths) for g in old.sources.files}
    groups = [
        g.model_copy(update={"start_at": "beginning"})
        if g.start_at == "end" and tuple(g.paths) in before
        else g
        for g in new.sources.files
    ]
    if groups == list(new.sources.files):
        return new
    sources = new.sources.model_copy(update={"files": groups})
    return new.model_copy(update={"sources": sources})
