"""Topic routing: which Kafka topic each entry goes to.

Precedence, first match wins:

1. the entry's ``kafka_topic`` label (the label name is configurable), when present
   and non-empty;
2. level routing, when enabled: ``error``/``fatal``/``critical`` go to the high-priority
   topic (``logs-high-priority``), ``debug``/``trace`` to the low-priority topic
   (``logs-low-priority``); both lists and both names are configurable;
3. the default topic, or, when ``topic`` is a template (``logs-{labels.service}``),
   the name rendered from the entry; ``topic_default`` when a placeholder has no
   value in the entry, when the rendered name is not a legal topic, or when this
   router has met ``max_topics`` distinct rendered names already (each case counted,
   never dropped).

A template's placeholders are ``{level}``, ``{labels.NAME}`` and ``{fields.NAME}``
(:class:`TopicTemplate`); ``{{`` and ``}}`` are literal braces.

Topic names follow Kafka's rules: 1 to 249 characters from ``[a-zA-Z0-9._-]``, and not
``.`` or ``..``. A ``kafka_topic`` label that breaks them is not silently redirected
elsewhere (the sender asked for a specific topic; guessing would hide the mistake):
the entry is rejected with an :class:`~shipper.errors.EntryError` whose reason is
``invalid_topic``, and it goes to the DLQ path like any other bad entry. An empty label
counts as absent. Invalid configured topics raise :class:`~shipper.errors.ConfigError`
when the router is built.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final

from shipper.entries import LogEntry, normalize_level
from shipper.errors import ConfigError, EntryError
from shipper.outcomes import Reason

__all__ = [
    "DEFAULT_HIGH_LEVELS",
    "DEFAULT_HIGH_TOPIC",
    "DEFAULT_LOW_LEVELS",
    "DEFAULT_LOW_TOPIC",
    "INVALID_TOPIC",
    "MAX_TOPIC_LENGTH",
    "TopicRouter",
    "TopicTemplate",
    "is_template",
    "topic_problem",
]

DEFAULT_HIGH_TOPIC: Final = "logs-high-priority"
DEFAULT_LOW_TOPIC: Final = "logs-low-priority"
DEFAULT_HIGH_LEVELS: Final = ("error", "fatal", "critical")
DEFAULT_LOW_LEVELS: Final = ("debug", "trace")
MAX_TOPIC_LENGTH: Final = 249
INVALID_TOPIC: Final = Reason.INVALID_TOPIC

_LEGAL: Final = re.compile(r"[a-zA-Z0-9._-]+")
# Label topics seen so far and whether they are legal; bounded so a stream of distinct
# bad names cannot grow memory without limit.
_CACHE_LIMIT: Final = 4096


def topic_problem(name: str) -> str | None:
    """Why ``name`` is not a legal Kafka topic name, or ``None`` when it is."""
    if not name:
        return "a topic name cannot be empty"
    if name in (".", ".."):
        return f"{name!r} is not allowed as a topic name"
    if len(name) > MAX_TOPIC_LENGTH:
        return f"topic name is {len(name)} characters long, the limit is {MAX_TOPIC_LENGTH}"
    if not _LEGAL.fullmatch(name):
        return f"topic name {name[:80]!r} has characters outside [a-zA-Z0-9._-]"
    return None


_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def is_template(topic: str) -> bool:
    """Whether ``topic`` has placeholders (``{...}``)."""
    return "{" in topic or "}" in topic


class TopicTemplate:
    """A topic name with placeholders, rendered per entry (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: literal text, or (source, name): ("level", ""), ("labels", NAME), ("fields", NAME)
        self.parts: list[str | tuple[str, str]] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            self.parts.append(text[pos : m.start()])
            pos = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                self.parts.append(token[0])
                continue
            if m.group(1) is None:
                raise ValueError(f"unbalanced {token!r} in topic template {text!r}")
            self.parts.append(_placeholder(m.group(1).strip(), text))
        self.parts.append(text[pos:])
        self.parts = [p for p in self.parts if p != ""]
        self.uses_fields = any(isinstance(p, tuple) and p[0] == "fields" for p in self.parts)

    def label_names(self) -> set[str]:
        """The labels the template reads."""
        return {p[1] for p in self.parts if isinstance(p, tuple) and p[0] == "labels"}

    def render(self, entry: Any) -> str | None:
        """The name for ``entry``; None when a placeholder has no value in it."""
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            where, name = p
            if where == "level":
                value: Any = entry.level
            elif where == "labels":
                value = entry.labels.get(name) if entry.labels else None
            else:
                fields = entry.fields
                value = fields.get(name) if isinstance(fields, dict) else None
            if value is None or value == "" or isinstance(value, dict | list):
                return None
            out.append(value if isinstance(value, str) else str(value))
        return "".join(out)


def _placeholder(body: str, text: str) -> tuple[str, str]:
    if body == "level":
        return ("level", "")
    where, _, name = body.partition(".")
    if where in ("labels", "fields") and name:
        return (where, name)
    raise ValueError(
        f"unknown placeholder {{{body}}} in topic template {text!r}; use {{level}}, "
        "{labels.NAME} or {fields.NAME}"
    )


class TopicRouter:
    """Picks a topic per entry; :meth:`route` does a whole batch.

    ``rejected`` holds the errors of the last :meth:`route` call (entries whose topic
    label is invalid); they are absent from its result.
    """

    def __init__(
        self,
        default_topic: str,
        routing_enabled: bool = True,
        high_topic: str = DEFAULT_HIGH_TOPIC,
        low_topic: str = DEFAULT_LOW_TOPIC,
        high_levels: Iterable[str] = DEFAULT_HIGH_LEVELS,
        low_levels: Iterable[str] = DEFAULT_LOW_LEVELS,
        topic_label: str = "kafka_topic",
        topic_default: str | None = None,
        max_topics: int = 100,
    ) -> None:
        problems = []
        self.template = TopicTemplate(default_topic) if is_template(default_topic) else None
        if self.template is not None:
            if topic_default is None:
                problems.append("topic_default: is required when topic is a template")
            default_topic = topic_default or "logs"
        names = [("topic_default" if self.template else "topic", default_topic)]
        if routing_enabled:
            names += [("high_priority_topic", high_topic), ("low_priority_topic", low_topic)]
        for what, name in names:
            why = topic_problem(name)
            if why is not None:
                problems.append(f"{what}: {why}")
        if problems:
            raise ConfigError(problems)
        self.default_topic = default_topic
        self.routing_enabled = routing_enabled
        self.high_topic = high_topic
        self.low_topic = low_topic
        self.topic_label = topic_label
        self.high_levels = tuple(normalize_level(x) for x in high_levels)
        self.low_levels = tuple(normalize_level(x) for x in low_levels)
        # level -> topic in one dict, so routing is one lookup; high wins on overlap.
        self._by_level: dict[str, str] = {}
        if routing_enabled:
            for lvl in self.low_levels:
                self._by_level[lvl] = low_topic
            for lvl in self.high_levels:
                self._by_level[lvl] = high_topic
        self._label_ok: dict[str, str | None] = {}
        self.rejected: list[EntryError] = []
        self.max_topics = max_topics
        #: distinct names rendered from the template so far (at most max_topics)
        self.rendered: set[str] = set()
        self._render_ok: dict[str, str | None] = {}
        #: entries of the last route call sent to topic_default, by why
        self.fallbacks: Counter[str] = Counter()

    def _from_template(self, entry: Any) -> str:
        assert self.template is not None
        name = self.template.render(entry)
        if name is None:
            self.fallbacks["missing_field"] += 1
            return self.default_topic
        if name in self.rendered:
            return name
        why = self._render_ok.get(name, "")
        if why == "":
            why = topic_problem(name)
            if len(self._render_ok) >= _CACHE_LIMIT:
                self._render_ok.clear()
            self._render_ok[name] = why
        if why is not None:
            self.fallbacks["invalid_name"] += 1
            return self.default_topic
        if len(self.rendered) >= self.max_topics:
            self.fallbacks["max_topics"] += 1
            return self.default_topic
        self.rendered.add(name)
        return name

    def _check_label(self, name: str) -> str | None:
        why = self._label_ok.get(name, "")
        if why == "":
            why = topic_problem(name)
            if len(self._label_ok) >= _CACHE_LIMIT:
                self._label_ok.clear()
            self._label_ok[name] = why
        return why

    def _invalid(self, name: str, why: str) -> EntryError:
        return EntryError(
            INVALID_TOPIC,
            f"label {self.topic_label}={name[:80]!r} is not a valid Kafka topic: {why}",
        )

    def topic_for(self, entry: LogEntry) -> str:
        """The topic of one entry; raises ``EntryError`` (``invalid_topic``) for a bad label."""
        name = entry.labels.get(self.topic_label) if entry.labels else None
        if name:
            why = self._check_label(name)
            if why is not None:
                raise self._invalid(name, why)
            return name
        topic = self._by_level.get(entry.level)
        if topic is not None:
            return topic
        return self._from_template(entry) if self.template else self.default_topic

    def route(self, entries: Sequence[LogEntry]) -> dict[str, list[int]]:
        """Group ``entries`` by topic: topic -> indices into ``entries``, in order.

        Entries with an invalid topic label are left out; their errors are in
        ``self.rejected`` (replaced on every call).
        """
        groups: dict[str, list[int]] = {}
        rejected: list[EntryError] = []
        label = self.topic_label
        by_level = self._by_level.get
        default = self.default_topic
        checked = self._label_ok
        template = self.template
        self.fallbacks = Counter()
        for i, entry in enumerate(entries):
            labels = entry.labels
            name = labels.get(label) if labels else None
            if name:
                why = checked.get(name, "")
                if why == "":
                    why = self._check_label(name)
                if why is not None:
                    rejected.append(self._invalid(name, why))
                    continue
                topic = name
            elif template is None:
                topic = by_level(entry.level, default)
            else:
                topic = by_level(entry.level) or self._from_template(entry)
            group = groups.get(topic)
            if group is None:
                groups[topic] = [i]
            else:
                group.append(i)
        self.rejected = rejected
        return groups

    def route_with_errors(
        self, entries: Sequence[LogEntry]
    ) -> tuple[dict[str, list[int]], list[tuple[int, EntryError]]]:
        """Like :meth:`route`, and also returns ``(index, error)`` for each rejected entry."""
        groups = self.route(entries)
        if not self.rejected:
            return groups, []
        kept = {i for idx in groups.values() for i in idx}
        missing = [i for i in range(len(entries)) if i not in kept]
        return groups, list(zip(missing, self.rejected, strict=True))
