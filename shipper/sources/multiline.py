"""Lines into entries: a stack trace, a traceback or a panic becomes one entry.

A :class:`Combiner` takes whole lines (what :class:`~shipper.sources.lines.LineCutter`
hands out) and groups them by a rule (:class:`shipper.config.sources.MultilineConfig`):

- ``start: REGEX``: a line the pattern finds a match in starts an entry; any other
  line continues the one before it;
- ``continue: REGEX``: a line the pattern finds a match in continues the entry before
  it; any other line starts one;
- ``negate: true`` turns "finds a match" into "finds none", for either rule.

An entry is held until the next one starts, or ``timeout`` passes with no new line
(:meth:`Combiner.due`, then :meth:`Combiner.flush`). It is never longer than
``max_lines`` lines or ``max_bytes`` bytes: the line that would pass a limit starts a
new entry, and the entry cut that way is counted (:attr:`Combiner.cut`). Nothing is
dropped.

An entry of one line goes on unchanged (a JSON line stays JSON). An entry of several
lines goes on as one JSON line whose ``message`` is those lines joined by newlines
(invalid UTF-8 replaced by U+FFFD), so the intake sees one entry.

The bytes and lines of the held entry are :attr:`Combiner.pending_bytes` and
:attr:`Combiner.pending_lines`: a file's acknowledged position stops before them, so a
restart reads the held entry again whole, never half of it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shipper.config.sources import MULTILINE_PRESETS as PRESETS
from shipper.config.sources import MultilineConfig

__all__ = ["PRESETS", "Combined", "Combiner", "MultilineRule", "rule_of"]


@dataclass(frozen=True)
class MultilineRule:
    """A compiled rule."""

    pattern: re.Pattern[bytes]
    starts: bool  # True: a match starts an entry; False: a match continues one
    negate: bool = False
    max_lines: int = 500
    max_bytes: int = 1 << 20
    timeout: float = 1.0

    @classmethod
    def of(
        cls,
        start: str | None,
        cont: str | None,
        negate: bool = False,
        max_lines: int = 500,
        max_bytes: int = 1 << 20,
        timeout: float = 1.0,
    ) -> MultilineRule:
        text = start if start is not None else cont
        assert text is not None, "a rule needs start or continue"
        return cls(
            re.compile(text.encode()), start is not None, negate, max_lines, max_bytes, timeout
        )

    def begins(self, line: bytes) -> bool:
        """Whether ``line`` starts a new entry."""
        found = (self.pattern.search(line) is not None) != self.negate
        return found if self.starts else not found


def rule_of(cfg: MultilineConfig) -> MultilineRule:
    """The compiled rule of a ``multiline`` config block."""
    return MultilineRule.of(
        cfg.start, cfg.continue_, cfg.negate, cfg.max_lines, cfg.max_bytes, cfg.timeout
    )


@dataclass(frozen=True, slots=True)
class Combined:
    """What :meth:`Combiner.feed` hands out: entries, one per line of ``data``, made of
    ``lines`` input lines."""

    data: bytes
    lines: int
    #: file bytes each entry was read from (newlines included), in order
    sizes: tuple[int, ...] = ()

    @property
    def entries(self) -> int:
        return self.data.count(b"\n")


def _entry(group: list[bytes], rec: Any = None) -> bytes:
    if rec is not None:
        from shipper.sources.container import record_line

        return record_line(rec, b"\n".join(group))
    if len(group) == 1:
        return group[0] + b"\n"
    text = b"\n".join(group).decode("utf-8", "replace")
    return json.dumps({"message": text}, ensure_ascii=False).encode() + b"\n"


class Combiner:
    """Groups whole lines into entries by a :class:`MultilineRule`. Not thread-safe."""

    def __init__(self, rule: MultilineRule, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self.clock = clock
        self._group: list[bytes] = []
        self._size = 0  # file bytes of the held entry's lines, newlines included
        self._lines = 0  # file lines of the held entry
        self._text = 0  # bytes of the held entry's text (what max_bytes bounds)
        self._rec: Any = None  # the held entry's first container record, if any
        self._last = 0.0
        #: entries cut at max_lines or max_bytes (the rest went on as a new entry)
        self.cut = 0

    @property
    def pending_bytes(self) -> int:
        return self._size

    @property
    def pending_lines(self) -> int:
        return self._lines

    def feed(self, blob: bytes) -> Combined:
        """Take whole lines (``blob`` ends with a newline); the entries they complete."""
        if not blob:
            return Combined(b"", 0)
        return self._take((line, len(line) + 1, 1, None) for line in blob.split(b"\n")[:-1])

    def feed_records(self, records: Iterable[Any]) -> Combined:
        """Take container records (:class:`shipper.sources.container.Record`): their
        messages are grouped, and an entry keeps its first record's timestamp and
        stream."""
        return self._take((r.message, r.size, r.lines, r) for r in records)

    def _take(self, items: Iterable[tuple[bytes, int, int, Any]]) -> Combined:
        out: list[bytes] = []
        sizes: list[int] = []
        done = 0
        rule = self.rule
        for text, size, lines, rec in items:
            if self._group and not rule.begins(text):
                if (
                    len(self._group) < rule.max_lines
                    and self._text + len(text) + 1 <= rule.max_bytes
                ):
                    self._group.append(text)
                    self._size += size
                    self._lines += lines
                    self._text += len(text) + 1
                    continue
                self.cut += 1  # too long: this line starts the next entry
            if self._group:
                out.append(_entry(self._group, self._rec))
                sizes.append(self._size)
                done += self._lines
            self._group = [text]
            self._size, self._lines, self._text, self._rec = size, lines, len(text) + 1, rec
        self._last = self.clock()
        return Combined(b"".join(out), done, tuple(sizes))

    def due(self) -> bool:
        """Whether the held entry has waited ``timeout`` for a next line."""
        return bool(self._group) and self.clock() - self._last >= self.rule.timeout

    def flush(self) -> Combined:
        """The held entry, now."""
        if not self._group:
            return Combined(b"", 0)
        out = Combined(_entry(self._group, self._rec), self._lines, (self._size,))
        self._group, self._size, self._lines, self._text, self._rec = [], 0, 0, 0, None
        return out
