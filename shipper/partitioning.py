"""Partition assignment: Kafka-compatible hashing, round-robin, random.

Hashing is Kafka's murmur2 as the Java client's ``Utils.murmur2`` computes it (seed
``0x9747b28c``), and a key's partition is ``(murmur2(key) & 0x7fffffff) % partitions``
as in the Java ``DefaultPartitioner`` and librdkafka's ``murmur2``/``murmur2_random``
partitioners. So a key lands where every Kafka client puts it, on every process and
after every restart. Python's ``hash()`` is never used: it is salted per process.

Strategies share one interface, made for whole batches:

- ``key_for(entry)`` / ``keys_for(entries)``: the message key of an entry, the value of
  ``key_field`` looked up in ``entry.fields`` then ``entry.labels`` (a null counts as
  absent), turned into text with ``str()`` and encoded as UTF-8; ``None`` without one.
- ``assign(keys, num_partitions)``: one partition per key.

``HashPartitioner`` hashes keys; an entry *without* a key falls back to round-robin over
all partitions, continuing across batches, so keyless entries spread evenly instead of
piling onto one partition. ``RoundRobinPartitioner`` ignores keys and spreads a batch
evenly (counts differ by at most one), continuing where the previous batch stopped.
``RandomPartitioner`` draws from an injected ``random.Random``.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import Final, Protocol

from shipper.entries import LogEntry

__all__ = [
    "HashPartitioner",
    "Partitioner",
    "RandomPartitioner",
    "RoundRobinPartitioner",
    "kafka_partition",
    "make_partitioner",
    "murmur2",
    "murmur2_positive",
]

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
# Hashes of recently seen keys. Keys repeat a lot in logs (tenants, services), and a
# dict hit is far cheaper than the pure-Python hash; the cap bounds memory.
_CACHE_LIMIT: Final = 65536


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data``, as the signed 32-bit int the Java client returns."""
    n = len(data)
    h = (_SEED ^ n) & _MASK
    n4 = n >> 2
    if n4:
        for k in struct.unpack_from(f"<{n4}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rem = n & 3
    if rem:
        tail = n - rem
        if rem == 3:
            h ^= data[tail + 2] << 16
        if rem >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def murmur2_positive(data: bytes) -> int:
    """``toPositive(murmur2(data))``: the hash with the sign bit cleared."""
    return murmur2(data) & 0x7FFFFFFF


def kafka_partition(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's Java client (and librdkafka's murmur2) picks for ``key``."""
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def rotation(start: int, num_partitions: int, count: int) -> list[int]:
    """``count`` partitions round-robin from ``start``, built from whole rotated cycles
    rather than a per-entry modulo."""
    cycle = list(range(start, num_partitions)) + list(range(start))
    return (cycle * (count // num_partitions + 1))[:count]


class Partitioner(Protocol):
    """What every strategy offers."""

    key_field: str | None

    def key_for(self, entry: LogEntry) -> bytes | None: ...

    def keys_for(self, entries: Sequence[LogEntry]) -> list[bytes | None]: ...

    def assign(self, keys: Sequence[bytes | None], num_partitions: int) -> list[int]: ...


def _check(num_partitions: int) -> None:
    if num_partitions <= 0:
        raise ValueError(f"num_partitions must be positive, got {num_partitions}")


class _KeyedBase:
    """Key extraction shared by the strategies."""

    def __init__(self, key_field: str | None = None) -> None:
        self.key_field = key_field

    def key_for(self, entry: LogEntry) -> bytes | None:
        field = self.key_field
        if field is None:
            return None
        value = entry.fields.get(field) if entry.fields else None
        if value is None:
            value = entry.labels.get(field) if entry.labels else None
            if value is None:
                return None
        text = value if type(value) is str else str(value)
        # surrogatepass: a str built in Python may hold lone surrogates; a key must
        # still come out rather than fail the batch.
        return text.encode("utf-8", "surrogatepass")

    def keys_for(self, entries: Sequence[LogEntry]) -> list[bytes | None]:
        if self.key_field is None:
            return [None] * len(entries)
        key_for = self.key_for
        return [key_for(e) for e in entries]


class HashPartitioner(_KeyedBase):
    """murmur2 of the key, modulo the partition count; keyless entries round-robin."""

    def __init__(self, key_field: str | None) -> None:
        super().__init__(key_field)
        self._hashes: dict[bytes, int] = {}
        self._next = 0  # round-robin position for keyless entries

    def assign_keyless(
        self, keys: Sequence[bytes | None] | None, n: int, num_partitions: int
    ) -> list[int]:
        """What the pipeline sends: ``-1`` (librdkafka's murmur2 partitioner, the same
        function as :meth:`assign`) for keyed entries, and the round-robin fallback for
        keyless ones, sharing :meth:`assign`'s rotation. ``keys`` None: all keyless."""
        _check(num_partitions)
        start = self._next % num_partitions
        if keys is None:
            self._next = (start + n) % num_partitions
            return rotation(start, num_partitions, n)
        out: list[int] = []
        append = out.append
        rr = start
        for key in keys:
            if key is None:
                append(rr % num_partitions)
                rr += 1
            else:
                append(-1)
        self._next = rr % num_partitions
        return out

    def assign(self, keys: Sequence[bytes | None], num_partitions: int) -> list[int]:
        _check(num_partitions)
        cache = self._hashes
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        get = cache.get
        n = num_partitions
        rr = self._next
        out: list[int] = []
        append = out.append
        for key in keys:
            if key is None:
                append(rr % n)
                rr += 1
                continue
            h = get(key)
            if h is None:
                h = murmur2(key) & 0x7FFFFFFF
                cache[key] = h
            append(h % n)
        self._next = rr % n
        return out


class RoundRobinPartitioner(_KeyedBase):
    """Consecutive partitions, continuing across batches; keys are carried, not used."""

    def __init__(self, key_field: str | None = None) -> None:
        super().__init__(key_field)
        self._next = 0

    def assign(self, keys: Sequence[bytes | None], num_partitions: int) -> list[int]:
        _check(num_partitions)
        count = len(keys)
        start = self._next % num_partitions
        self._next = (start + count) % num_partitions
        return rotation(start, num_partitions, count)


class RandomPartitioner(_KeyedBase):
    """A uniformly random partition per entry, from the injected ``rng``."""

    def __init__(self, rng: random.Random | None = None, key_field: str | None = None) -> None:
        super().__init__(key_field)
        self.rng = rng if rng is not None else random.Random()

    def assign(self, keys: Sequence[bytes | None], num_partitions: int) -> list[int]:
        _check(num_partitions)
        return self.rng.choices(range(num_partitions), k=len(keys))


_STRATEGIES: Final = {
    "hash": "hash",
    "round-robin": "round-robin",
    "round_robin": "round-robin",
    "roundrobin": "round-robin",
    "random": "random",
}


def make_partitioner(
    strategy: str, key_field: str | None = None, rng: random.Random | None = None
) -> HashPartitioner | RoundRobinPartitioner | RandomPartitioner:
    """The partitioner for a config's ``partitioning.strategy`` and ``key_field``.

    ``hash`` without a ``key_field`` is allowed: every entry is keyless and follows the
    round-robin fallback.
    """
    kind = _STRATEGIES.get(strategy.strip().lower())
    if kind == "hash":
        return HashPartitioner(key_field)
    if kind == "round-robin":
        return RoundRobinPartitioner(key_field)
    if kind == "random":
        return RandomPartitioner(rng, key_field)
    raise ValueError(f"unknown partitioning strategy {strategy!r}: use hash, round-robin, random")
