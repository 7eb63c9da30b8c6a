"""Kafka headers of a message, and the stable entry id, without Ray.

``sinks.kafka`` names three kinds of header: ``headers`` (the same on every message),
``headers_from_labels`` (an entry's label value under the label's name) and
``entry_id_header`` (an id that is the same every time the same entry is sent
again). :class:`HeaderMaker` builds the list of ``(name, value)`` pairs for each
entry of a segment; the intake calls it once per topic segment, so the Batchers,
the Producers and the DLQ only carry the lists along.

The entry id, in order of precedence:

1. the entry's own label of that name (a caller that knows its ids sets them; a
   source's label of that name is shared by all its entries and is no id);
2. for a line read from a file: a digest of the file's identity, the position the
   entry starts at and the entry's bytes (:func:`file_entry_ids`), so the same line
   read again after a crash gets the same id, and new content written at the same
   position after a truncation does not;
3. else a digest of the encoded entry: the same entry sent again (an API caller's
   retry, an HTTP client's resend) gets the same id. Two different events that
   encode to the same bytes (no timestamp, same message) share an id too: give such
   entries a timestamp or an id label.

Digests are sha256 (never ``hash()``), cut to 16 bytes, written as 32 hex digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["HeaderMaker", "HeaderTable", "Headers", "entry_digest", "file_entry_ids"]

#: One message's headers, in the order Kafka gets them.
Headers = list[tuple[str, bytes]]


def entry_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest()[:32].encode()


def file_entry_ids(
    identity: str, start: int, data: bytes, sizes: Sequence[int] | None = None
) -> list[bytes]:
    """The ids of the entries of a block read from a file: ``data`` holds one entry
    per line and starts at file offset ``start``; ``sizes`` are the file bytes each
    entry was read from (when they differ from the lines themselves: multiline,
    container formats)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prefix = identity.encode() + b"\0"
    out = []
    pos = start
    for i, line in enumerate(lines):
        out.append(entry_digest(prefix + str(pos).encode() + b"\0" + line))
        pos += sizes[i] if sizes is not None else len(line) + 1
    return out


class HeaderTable:
    """Each message's headers, kept by column so that thousands of them cross Ray's
    hops as a few lists of bytes, not one list of pairs per message: the pairs every
    message has (``static``), and for each other name its value per message (None:
    that message has no such header). ``table[i]`` is message ``i``'s list of
    pairs; a slice or :meth:`take` is a table of those messages."""

    __slots__ = ("columns", "n", "names", "static")

    def __init__(
        self,
        n: int,
        static: Sequence[tuple[str, bytes]] = (),
        names: Sequence[str] = (),
        columns: Sequence[Sequence[bytes | None]] = (),
    ) -> None:
        self.n = n
        self.static = tuple(static)
        self.names = tuple(names)
        self.columns = [list(c) for c in columns]

    @classmethod
    def of_rows(cls, rows: Sequence[Headers]) -> HeaderTable:
        """A table of messages given as lists of pairs (a DLQ replay's records)."""
        names: list[str] = []
        for row in rows:
            names.extend(k for k, _ in row if k not in names)
        columns: list[list[bytes | None]] = [[None] * len(rows) for _ in names]
        at = {k: j for j, k in enumerate(names)}
        for i, row in enumerate(rows):
            for k, v in row:
                columns[at[k]][i] = v
        return cls(len(rows), (), names, columns)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Headers:
        row = list(self.static)
        for name, col in zip(self.names, self.columns, strict=True):
            v = col[i]
            if v is not None:
                row.append((name, v))
        return row

    def __iter__(self) -> Iterator[Headers]:
        return iter(self.rows())

    def slice(self, start: int, stop: int) -> HeaderTable:
        cols = [c[start:stop] for c in self.columns]
        return HeaderTable(
            len(range(*slice(start, stop).indices(self.n))), self.static, self.names, cols
        )

    def take(self, idx: Sequence[int]) -> HeaderTable:
        cols = [[c[i] for i in idx] for c in self.columns]
        return HeaderTable(len(idx), self.static, self.names, cols)

    def rows(self) -> list[Headers]:
        return [self[i] for i in range(self.n)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeaderTable) and self.rows() == other.rows()

    def __repr__(self) -> str:
        return f"HeaderTable({self.n} messages, names {[*dict(self.static), *self.names]})"


class HeaderMaker:
    """Builds each message's headers from a sink config's three header settings."""

    def __init__(
        self,
        static: Mapping[str, str],
        from_labels: Sequence[str],
        id_header: str | None,
    ) -> None:
        self.static: Headers = [(k, v.encode()) for k, v in static.items()]
        self.from_labels = list(from_labels)
        self.id_header = id_header
        self.enabled = bool(self.static or self.from_labels or id_header)
        #: label names an entry's headers read (a source label of such a name must be
        #: seen merged with the entry's own)
        self.label_names = {*self.from_labels, *([id_header] if id_header else [])}

    @classmethod
    def of(cls, sink: Any) -> HeaderMaker:
        return cls(sink.headers, sink.headers_from_labels, sink.entry_id_header)

    def make(
        self,
        labels: Sequence[Mapping[str, str]],
        values: Sequence[bytes],
        ids: Sequence[bytes | None] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> HeaderTable:
        """Headers for each entry: ``labels`` are the entries' own, ``source`` labels
        apply where an entry has none of that name, ``ids`` are the file ids (or
        None), ``values`` the encoded entries (for the digest)."""
        src = source or {}
        names: list[str] = []
        columns: list[list[bytes | None]] = []
        for name in self.from_labels:
            fallback = src.get(name)
            col: list[bytes | None] = []
            for own in labels:
                v = own.get(name, fallback)
                col.append(None if v is None else v.encode("utf-8", "surrogatepass"))
            names.append(name)
            columns.append(col)
        if self.id_header is not None:
            name = self.id_header
            shared = src.get(name)
            out: list[bytes | None] = []
            for i, own in enumerate(labels):
                given = own.get(name)
                if given is not None and given != shared:
                    out.append(given.encode("utf-8", "surrogatepass"))
                elif ids is not None and ids[i] is not None:
                    out.append(ids[i])
                else:
                    # (a source's label of this name is shared by all its entries: no id)
                    out.append(entry_digest(values[i]))
            names.append(name)
            columns.append(out)
        return HeaderTable(len(labels), self.static, names, columns)
