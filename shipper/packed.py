"""Encoded values carried between actors as one buffer instead of a list of objects.

A segment of 5,000 entries is 5,000 small ``bytes`` objects; pickling such a list
for every actor hop (Router -> Batcher -> Producer) cost more than the produce call
itself. :class:`Packed` holds the same values joined into one ``bytes``, which Ray
copies as a single buffer, and splits them again only where they are needed (the
Producer, or a rare DLQ path). Two layouts:

- *lines*: values joined with ``\\n``. Valid whenever no value holds a newline, which
  is the normal case: compact JSON never holds a raw newline, and input lines were
  split on it. Splitting is one C call.
- *framed*: values concatenated, with a table of lengths, for values that do hold a
  newline (a DLQ record of arbitrary bytes, say).

A ``Packed`` behaves as a read-only sequence of ``bytes``; the split list is cached in
the process that asked for it and never pickled.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

__all__ = ["Packed", "as_list"]


class Packed(Sequence[bytes]):
    __slots__ = ("_count", "_data", "_lengths", "_values")

    def __init__(
        self,
        data: bytes,
        count: int,
        values: list[bytes] | None = None,
        lengths: bytes | None = None,
    ) -> None:
        """``data`` holds ``count`` values: newline-joined, or, when ``lengths`` (an
        ``array('I')`` as bytes) is given, concatenated. ``values``, if known, must be
        the same values already split (it saves the split in this process)."""
        self._data = data
        self._count = count
        self._values = values
        self._lengths = lengths

    @classmethod
    def of(cls, values: Iterable[bytes]) -> Packed:
        """Pack ``values`` (a ``Packed`` is returned as it is)."""
        if isinstance(values, Packed):
            return values
        vals = values if isinstance(values, list) else list(values)
        if not vals:
            return cls(b"", 0, vals)
        joined = b"\n".join(vals)
        # As many newlines as separators: no value holds one, so splitting is exact.
        if joined.count(b"\n") == len(vals) - 1:
            return cls(joined, len(vals), vals)
        return cls(b"".join(vals), len(vals), vals, array("I", map(len, vals)).tobytes())

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def lengths(self) -> bytes | None:
        """The length table of the framed layout (None for the lines layout)."""
        return self._lengths

    @property
    def nbytes(self) -> int:
        """Payload bytes (separators included in the lines layout)."""
        return len(self._data)

    def values(self) -> list[bytes]:
        """The values as a list (split once per process, then cached)."""
        vals = self._values
        if vals is None:
            if self._count == 0:
                vals = []
            elif self._lengths is None:
                vals = self._data.split(b"\n")
            else:
                vals = []
                data = self._data
                pos = 0
                for n in array("I", self._lengths):
                    vals.append(data[pos : pos + n])
                    pos += n
            if len(vals) != self._count:
                raise ValueError(f"packed values: expected {self._count}, found {len(vals)}")
            self._values = vals
        return vals

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        return self.values()[i]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.values())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Packed):
            return self.values() == other.values()
        if isinstance(other, list):
            return self.values() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # never the payload: it may hold anything
        return f"Packed({self._count} values, {len(self._data)} bytes)"

    def __reduce__(self) -> tuple[Any, ...]:
        # Only the buffer travels; the receiver splits it when (if) it needs to.
        return (Packed, (self._data, self._count, None, self._lengths))


def as_list(values: Sequence[bytes]) -> list[bytes]:
    """``values`` as a plain list (no copy for a list or an already split ``Packed``)."""
    if isinstance(values, Packed):
        return values.values()
    return values if isinstance(values, list) else list(values)
