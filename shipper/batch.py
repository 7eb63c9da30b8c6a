"""``EncodedBatch``: the compact form entries take between actors.

A Ray call pickles its arguments. A list of 1,000 ``bytes`` values pickles as 1,000
objects (opcodes, lengths, memo entries) and unpickles into 1,000 allocations; here a
batch for ONE topic is a handful of flat buffers instead:

- ``values``: every encoded value back to back, ``ends``: each value's end offset;
- ``key_data``/``key_ends``/``key_mask``: the message keys the same way, with a mask
  byte per entry (1 = has a key) only when some entries have none; all three are
  ``None`` when no entry has a key;
- ``levels``: one byte per entry, a code from :data:`LEVEL_CODES`;
- ``partitions``: an explicit partition per entry (``-1`` = let the producer's
  partitioner choose, which is librdkafka's "unassigned"), or ``None``;
- ``spans``: which submission each run of entries came from, for acknowledgements:
  flat triples ``(submission_id, first_index, count)`` in ``span_ids`` plus each span's
  wall-clock submit time in ``span_ts``. Entries are in span order.

So the pickle is about the payload plus a constant. Batches are immutable; ``split``,
``concat``, ``select`` and ``with_partitions`` build new ones.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Final, NamedTuple

__all__ = ["LEVEL_CODES", "LEVEL_NAMES", "OTHER_LEVEL", "EncodedBatch", "Span", "level_codes"]

#: Byte code per canonical level; anything else is ``OTHER_LEVEL``. The order is the
#: severity order, so ``code >= LEVEL_CODES["error"]`` means "error or worse".
LEVEL_CODES: Final[dict[str, int]] = {
    "trace": 0,
    "debug": 1,
    "info": 2,
    "warn": 3,
    "error": 4,
    "fatal": 5,
    "critical": 6,
}
OTHER_LEVEL: Final = 7
LEVEL_NAMES: Final = (*LEVEL_CODES, "other")


class _Codes(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return OTHER_LEVEL


_CODES: Final = _Codes(LEVEL_CODES)


def level_codes(levels: Iterable[str]) -> bytes:
    """One code byte per level name."""
    return bytes(map(_CODES.__getitem__, levels))


class Span(NamedTuple):
    """``size`` entries of submission ``submission``, from its index ``first``."""

    submission: int
    first: int
    size: int
    submitted_at: float


def _pack(parts: Sequence[bytes]) -> tuple[bytes, array[int]]:
    return b"".join(parts), array("I", accumulate(map(len, parts)))


def _unpack(data: bytes, ends: array[int]) -> list[bytes]:
    starts = [0, *ends]
    return [data[a:b] for a, b in zip(starts, ends)]  # noqa: B905 - starts is one longer


@dataclass(frozen=True, slots=True, eq=False)
class EncodedBatch:
    """Encoded entries for one topic, in flat buffers (see the module docstring)."""

    topic: str
    values: bytes
    ends: array[int]
    levels: bytes
    span_ids: array[int]
    span_ts: array[float]
    key_data: bytes | None = None
    key_ends: array[int] | None = None
    key_mask: bytes | None = None
    partitions: array[int] | None = None

    # -- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None = None,
        levels: Sequence[str] | bytes | None = None,
        partitions: Sequence[int] | None = None,
        submission: int = 0,
        first: int = 0,
        submitted_at: float = 0.0,
    ) -> EncodedBatch:
        """A batch of ``values`` (one submission's entries ``first .. first+len-1``).

        ``levels`` are names (coded here) or already-coded bytes; default all ``info``.
        """
        n = len(values)
        data, ends = _pack(values)
        if levels is None:
            codes = bytes([LEVEL_CODES["info"]]) * n
        elif isinstance(levels, bytes | bytearray):
            codes = bytes(levels)
        else:
            codes = level_codes(levels)
        _same_length("levels", len(codes), n)
        key_data, key_ends, key_mask = _pack_keys(keys, n)
        parts = None
        if partitions is not None:
            _same_length("partitions", len(partitions), n)
            parts = array("i", partitions)
        span_ids = array("q", (submission, first, n) if n else ())
        span_ts = array("d", (submitted_at,) if n else ())
        return cls(topic, data, ends, codes, span_ids, span_ts, key_data, key_ends, key_mask, parts)

    @classmethod
    def empty(cls, topic: str) -> EncodedBatch:
        return cls.build(topic, [])

    # -- reading --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ends)

    def __iter__(self) -> Iterator[memoryview]:
        """Each value as a zero-copy ``memoryview`` slice of ``values``."""
        view = memoryview(self.values)
        start = 0
        for end in self.ends:
            yield view[start:end]
            start = end

    def __repr__(self) -> str:
        return (
            f"EncodedBatch(topic={self.topic!r}, entries={len(self)}, "
            f"bytes={len(self.values)}, spans={len(self.span_ts)})"
        )

    @property
    def nbytes(self) -> int:
        """Bytes of encoded values."""
        return len(self.values)

    def value(self, i: int) -> bytes:
        start = self.ends[i - 1] if i > 0 else 0
        return self.values[start : self.ends[i]]

    def value_list(self) -> list[bytes]:
        """Every value as ``bytes`` (what a Kafka client's ``produce`` takes)."""
        return _unpack(self.values, self.ends)

    def value_sizes(self) -> list[int]:
        ends = self.ends
        return [e - s for s, e in zip([0, *ends], ends)]  # noqa: B905

    def keys(self) -> list[bytes | None] | None:
        """The message keys, or ``None`` when no entry has one."""
        if self.key_data is None or self.key_ends is None:
            return None
        present = _unpack(self.key_data, self.key_ends)
        if self.key_mask is None:
            return list(present)
        it = iter(present)
        return [next(it) if m else None for m in self.key_mask]

    def level_names(self) -> list[str]:
        return [LEVEL_NAMES[c] for c in self.levels]

    def partition_list(self) -> list[int] | None:
        return None if self.partitions is None else self.partitions.tolist()

    def spans(self) -> list[Span]:
        ids = self.span_ids
        return [
            Span(ids[3 * j], ids[3 * j + 1], ids[3 * j + 2], self.span_ts[j])
            for j in range(len(self.span_ts))
        ]

    def entry_ids(self) -> list[tuple[int, int]]:
        """``(submission, index)`` of every entry, in order."""
        out: list[tuple[int, int]] = []
        for sp in self.spans():
            out.extend((sp.submission, sp.first + k) for k in range(sp.size))
        return out

    # -- deriving -------------------------------------------------------------------

    def with_partitions(self, partitions: Sequence[int] | None) -> EncodedBatch:
        if partitions is None:
            return replace(self, partitions=None)
        _same_length("partitions", len(partitions), len(self))
        return replace(self, partitions=array("i", partitions))

    def slice(self, start: int, stop: int) -> EncodedBatch:
        """Entries ``start .. stop-1`` (clamped like a list slice)."""
        n = len(self)
        start, stop, _ = slice(start, stop).indices(n)
        stop = max(start, stop)
        if start == 0 and stop == n:
            return self
        base = self.ends[start - 1] if start > 0 else 0
        values = self.values[base : self.ends[stop - 1]] if stop > start else b""
        ends = array("I", (e - base for e in self.ends[start:stop]))
        keys = self.keys()
        key_data, key_ends, key_mask = _pack_keys(
            None if keys is None else keys[start:stop], stop - start
        )
        parts = None if self.partitions is None else self.partitions[start:stop]
        span_ids, span_ts = _cut_spans(self.span_ids, self.span_ts, start, stop)
        return EncodedBatch(
            self.topic,
            values,
            ends,
            self.levels[start:stop],
            span_ids,
            span_ts,
            key_data,
            key_ends,
            key_mask,
            parts,
        )

    def split(self, size: int) -> list[EncodedBatch]:
        """Consecutive pieces of at most ``size`` entries (one piece if it fits)."""
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        n = len(self)
        if n <= size:
            return [self]
        return [self.slice(i, i + size) for i in range(0, n, size)]

    def select(self, indices: Sequence[int]) -> EncodedBatch:
        """The entries at ``indices``, in that order (e.g. the ones to retry)."""
        n = len(self)
        values = self.value_list()
        keys = self.keys()
        picked_ids: list[tuple[int, int]] = []
        ids = self.entry_ids()
        span_of = _span_index(self)
        for i in indices:
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for a batch of {n}")
            picked_ids.append(ids[i])
        idx = [i % n for i in indices] if any(i < 0 for i in indices) else list(indices)
        data, ends = _pack([values[i] for i in idx])
        key_data, key_ends, key_mask = _pack_keys(
            None if keys is None else [keys[i] for i in idx], len(idx)
        )
        parts = None if self.partitions is None else array("i", (self.partitions[i] for i in idx))
        span_ids, span_ts = _runs(picked_ids, [self.span_ts[span_of[i]] for i in idx])
        return EncodedBatch(
            self.topic,
            data,
            ends,
            bytes(self.levels[i] for i in idx),
            span_ids,
            span_ts,
            key_data,
            key_ends,
            key_mask,
            parts,
        )

    @staticmethod
    def concat(batches: Sequence[EncodedBatch]) -> EncodedBatch:
        """One batch of all entries of ``batches`` (same topic), in order."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        topic = batches[0].topic
        if any(b.topic != topic for b in batches):
            raise ValueError("concat: batches are for different topics")
        if len(batches) == 1:
            return batches[0]
        ends = array("I")
        base = 0
        for b in batches:
            if base:
                ends.extend(e + base for e in b.ends)
            else:
                ends.extend(b.ends)
            base += len(b.values)
        key_data = key_ends = key_mask = None
        if any(b.key_data is not None for b in batches):
            keys: list[bytes | None] = []
            for b in batches:
                ks = b.keys()
                keys.extend(ks if ks is not None else [None] * len(b))
            key_data, key_ends, key_mask = _pack_keys(keys, len(keys))
        parts = None
        if any(b.partitions is not None for b in batches):
            parts = array("i")
            for b in batches:
                if b.partitions is not None:
                    parts.extend(b.partitions)
                else:
                    parts.extend([-1] * len(b))
        span_ids = array("q")
        span_ts = array("d")
        for b in batches:
            span_ids.extend(b.span_ids)
            span_ts.extend(b.span_ts)
        return EncodedBatch(
            topic,
            b"".join(b.values for b in batches),
            ends,
            b"".join(b.levels for b in batches),
            span_ids,
            span_ts,
            key_data,
            key_ends,
            key_mask,
            parts,
        )


def _same_length(what: str, got: int, n: int) -> None:
    if got != n:
        raise ValueError(f"{what} has {got} items for {n} values")


def _pack_keys(
    keys: Sequence[bytes | None] | None, n: int
) -> tuple[bytes | None, array[int] | None, bytes | None]:
    if keys is None:
        return None, None, None
    _same_length("keys", len(keys), n)
    present = [k for k in keys if k is not None]
    if not present:
        return None, None, None
    data, ends = _pack(present)
    mask = None if len(present) == n else bytes(k is not None for k in keys)
    return data, ends, mask


def _cut_spans(
    span_ids: array[int], span_ts: array[float], start: int, stop: int
) -> tuple[array[int], array[float]]:
    """The spans covering entries ``start .. stop-1``, trimmed to that range."""
    out_ids = array("q")
    out_ts = array("d")
    pos = 0
    for j in range(len(span_ts)):
        sub, first, count = span_ids[3 * j], span_ids[3 * j + 1], span_ids[3 * j + 2]
        lo, hi = max(pos, start), min(pos + count, stop)
        if lo < hi:
            out_ids.extend((sub, first + (lo - pos), hi - lo))
            out_ts.append(span_ts[j])
        pos += count
        if pos >= stop:
            break
    return out_ids, out_ts


def _span_index(batch: EncodedBatch) -> list[int]:
    """For each entry, the index of its span."""
    out: list[int] = []
    for j in range(len(batch.span_ts)):
        out.extend([j] * batch.span_ids[3 * j + 2])
    return out


def _runs(ids: list[tuple[int, int]], ts: list[float]) -> tuple[array[int], array[float]]:
    """Collapse per-entry ``(submission, index)`` into runs of consecutive indices."""
    out_ids = array("q")
    out_ts = array("d")
    for (sub, idx), t in zip(ids, ts, strict=True):
        n = len(out_ts)
        if n and out_ids[3 * n - 3] == sub and out_ids[3 * n - 2] + out_ids[3 * n - 1] == idx:
            out_ids[3 * n - 1] += 1
        else:
            out_ids.extend((sub, idx, 1))
            out_ts.append(t)
    return out_ids, out_ts
