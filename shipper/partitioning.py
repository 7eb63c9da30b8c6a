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

:class:`PartitionCountCache` keeps each topic's partition count from broker metadata
and re-reads it every ``refresh_interval`` seconds, so added partitions get used.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from shipper.entries import LogEntry

__all__ = [
    "HashPartitioner",
    "PartitionCountCache",
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
        # Build from whole rotated cycles rather than a per-entry modulo.
        cycle = list(range(start, num_partitions)) + list(range(start))
        out = (cycle * (count // num_partitions + 1))[:count]
        self._next = (start + count) % num_partitions
        return out


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


class PartitionCountCache:
    """topic -> partition count, as read from broker metadata, re-read when stale.

    ``fetch(topic)`` returns the current count (a Kafka client's metadata call); it is
    called when a topic is first seen and whenever its count is older than
    ``refresh_interval`` seconds. A failed re-read keeps the last known count, because
    a slightly stale count is better than stopping the pipeline; a failed *first* read
    raises.
    """

    def __init__(
        self,
        refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_interval < 0:
            raise ValueError("refresh_interval must not be negative")
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._read_at: dict[str, float] = {}

    def __contains__(self, topic: object) -> bool:
        return topic in self._counts

    def topics(self) -> list[str]:
        return list(self._counts)

    def get(self, topic: str) -> int | None:
        """The last known count (possibly stale), or ``None`` if never read."""
        return self._counts.get(topic)

    def put(self, topic: str, count: int) -> bool:
        """Record a count read now; returns whether it differs from the previous one."""
        if count <= 0:
            raise ValueError(f"topic {topic!r} has no partitions (count {count})")
        previous = self._counts.get(topic)
        self._counts[topic] = count
        self._read_at[topic] = self._clock()
        return previous is not None and previous != count

    def is_stale(self, topic: str) -> bool:
        read_at = self._read_at.get(topic)
        return read_at is None or self._clock() - read_at >= self.refresh_interval

    def forget(self, topic: str) -> None:
        self._counts.pop(topic, None)
        self._read_at.pop(topic, None)

    def count(self, topic: str, fetch: Callable[[str], int]) -> int:
        """The count for ``topic``, fetched first if unknown or stale."""
        known = self._counts.get(topic)
        if known is not None and not self.is_stale(topic):
            return known
        try:
            fresh = fetch(topic)
        except Exception:
            if known is None:
                raise
            return known
        self.put(topic, fresh)
        return fresh

    def refresh(self, fetch: Callable[[str], int], force: bool = False) -> dict[str, int]:
        """Re-read every known topic that is stale (all with ``force``).

        Returns ``{topic: new_count}`` for the topics whose count changed. A topic whose
        read fails keeps its count and is retried on the next call.
        """
        changed: dict[str, int] = {}
        for topic in list(self._counts):
            if not force and not self.is_stale(topic):
                continue
            try:
                fresh = fetch(topic)
                if self.put(topic, fresh):
                    changed[topic] = fresh
            except Exception:
                continue
        return changed
