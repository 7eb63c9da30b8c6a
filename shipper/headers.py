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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["HeaderMaker", "Headers", "entry_digest", "file_entry_ids"]

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
        labels: Iterable[Mapping[str, str]],
        values: Sequence[bytes],
        ids: Sequence[bytes | None] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> list[Headers]:
        """Headers for each entry: ``labels`` are the entries' own, ``source`` labels
        apply where an entry has none of that name, ``ids`` are the file ids (or
        None), ``values`` the encoded entries (for the digest)."""
        src = source or {}
        out: list[Headers] = []
        for i, own in enumerate(labels):
            h = list(self.static)
            for name in self.from_labels:
                v = own.get(name, src.get(name))
                if v is not None:
                    h.append((name, v.encode("utf-8", "surrogatepass")))
            if self.id_header is not None:
                given = own.get(self.id_header)
                if given is not None and given == src.get(self.id_header):
                    given = None  # a source's label, shared by all its entries: no id
                if given is not None:
                    ident = given.encode("utf-8", "surrogatepass")
                elif ids is not None and ids[i] is not None:
                    ident = ids[i]  # type: ignore[assignment]
                else:
                    ident = entry_digest(values[i])
                h.append((self.id_header, ident))
            out.append(h)
        return out
