"""The DLQ store seam: the interface, and the in-memory side for unit tests.

:class:`DlqStore` is the interface the DLQ actor, the reprocessor and the CLI use;
:class:`MemoryDlqStore` serves unit tests and :class:`~shipper.dlq.lmdb.LmdbDlqStore`
is the real, durable one. The same contract tests run against both
(``tests/unit/test_dlq_store.py``).

Lifecycle
---------

::

    store = LmdbDlqStore(path)          opens (creates) the environment; may block on
       |                                the LMDB lock file for a moment
       v
    put_batch / fetch / select /        any order, any number of times; thread-safe
    mark_failed / delete / purge /
    count / stats / disk_used
       |
       v
    store.close()                       idempotent; every later call raises
                                        ShutdownError

What blocks: every write (``put_batch``, ``mark_failed``, ``delete``, ``purge``) takes
the single writer lock, so it waits for a writer in another thread or process, and
with ``sync=True`` it waits for the disk flush before returning. Reads (``fetch``,
``select``, ``count``, ``stats``, ``disk_used``) never wait for writers: they see the
last committed snapshot. ``stats`` reads every record, so it costs time proportional
to the queue (see ``bench/bench_dlq.py``); ``count`` does not.

A parked record (out of retries, or refused for a reason of the data itself) is kept,
never deleted by the reprocessor; ``fetch`` skips it unless asked
(``include_parked=True``, e.g. ``shipper dlq replay --parked``).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Self

import msgspec

from shipper.dlq.codec import DlqFilter, DlqRecord, DlqStats, MarkResult, encode_record
from shipper.errors import DlqFullError, ShutdownError

__all__ = ["DlqStore", "MemoryDlqStore"]


class StatsBuilder:
    def __init__(self) -> None:
        self.total = 0
        self.parked = 0
        self.by_reason: dict[str, int] = {}
        self.by_topic: dict[str, int] = {}
        self.oldest: float | None = None
        self.newest: float | None = None

    def add(self, r: DlqRecord) -> None:
        self.total += 1
        self.parked += r.parked
        self.by_reason[r.reason] = self.by_reason.get(r.reason, 0) + 1
        self.by_topic[r.topic] = self.by_topic.get(r.topic, 0) + 1
        if self.oldest is None or r.first_failure < self.oldest:
            self.oldest = r.first_failure
        if self.newest is None or r.first_failure > self.newest:
            self.newest = r.first_failure

    def build(self, disk_used: int, disk_budget: int, file_bytes: int) -> DlqStats:
        return DlqStats(
            total=self.total,
            active=self.total - self.parked,
            parked=self.parked,
            by_reason=dict(sorted(self.by_reason.items())),
            by_topic=dict(sorted(self.by_topic.items())),
            oldest_first_failure=self.oldest,
            newest_first_failure=self.newest,
            disk_used=disk_used,
            disk_budget=disk_budget,
            file_bytes=file_bytes,
        )


def stamp(record: DlqRecord, record_id: int, now: float) -> DlqRecord:
    first = record.first_failure or now
    return msgspec.structs.replace(
        record, id=record_id, first_failure=first, last_failure=record.last_failure or first
    )


def failed_again(record: DlqRecord, error: str, now: float, max_retries: int) -> DlqRecord:
    attempts = record.attempts + 1
    return msgspec.structs.replace(
        record,
        attempts=attempts,
        error=error,
        last_failure=now,
        parked=record.parked or attempts >= max_retries,
    )


class DlqStore(ABC):
    """A durable, bounded queue of :class:`DlqRecord`, oldest first.

    See the module docstring for the lifecycle and what blocks. Implementations are
    thread-safe. Every method raises :class:`~shipper.errors.ShutdownError` after
    :meth:`close`.
    """

    @abstractmethod
    def put_batch(self, records: Sequence[DlqRecord]) -> list[int]:
        """Store ``records`` in one transaction and return their new ids, in order.

        Durable (to the store's sync mode) before it returns. Raises
        :class:`DlqFullError` if the batch does not fit; then nothing was written.
        """

    @abstractmethod
    def select(self, filter: DlqFilter, limit: int) -> list[DlqRecord]:
        """Up to ``limit`` records matching ``filter``, oldest (lowest id) first."""

    def fetch(
        self,
        limit: int,
        *,
        reasons: Iterable[str] | None = None,
        topics: Iterable[str] | None = None,
        include_parked: bool = False,
        ids: Iterable[int] | None = None,
        after: int = 0,
    ) -> list[DlqRecord]:
        """Up to ``limit`` records, oldest first; active ones only unless ``include_parked``.

        ``after`` skips ids up to and including it, so a reprocessing pass can page
        forward past records that just failed again.
        """
        return self.select(
            DlqFilter(
                reasons=None if reasons is None else list(reasons),
                topics=None if topics is None else list(topics),
                ids=None if ids is None else list(ids),
                parked=None if include_parked else False,
                after=after,
            ),
            limit,
        )

    @abstractmethod
    def delete(self, ids: Iterable[int]) -> int:
        """Remove records (delivered ones); unknown ids are ignored. Returns how many."""

    @abstractmethod
    def mark_failed(self, ids: Iterable[int], error: str, max_retries: int) -> MarkResult:
        """Record another failed re-send of ``ids``, in one transaction.

        Increments ``attempts``, sets ``error`` and ``last_failure`` (now); a record
        whose ``attempts`` reaches ``max_retries`` is parked (kept, no longer fetched by
        default). Already parked records stay parked. Unknown ids are ignored.
        """

    @abstractmethod
    def count(self) -> int:
        """Number of records, parked ones included. Cheap (no scan)."""

    @abstractmethod
    def stats(self) -> DlqStats:
        """Counts by reason and topic, parked count, age range, disk use. Scans."""

    @abstractmethod
    def disk_used(self) -> int:
        """Bytes the stored records occupy, as counted against the disk budget."""

    @abstractmethod
    def purge(self, filter: DlqFilter) -> int:
        """Delete every record matching ``filter`` (``DlqFilter()``: all). Returns how many."""

    @abstractmethod
    def close(self) -> None:
        """Release the store. Idempotent. Call it once no other call is in flight:
        closing under a concurrent reader ends that reader with an error."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def check_retries(max_retries: int) -> None:
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")


_MEMORY_OVERHEAD = 16  # per record, roughly what a key and node header cost in LMDB


class MemoryDlqStore(DlqStore):
    """The DLQ in a dict, for unit tests: same contract, nothing survives the process.

    ``disk_used`` counts encoded record bytes plus a small per-record overhead, so the
    budget behaves like the LMDB one without being byte-for-byte equal to it.
    """

    def __init__(
        self, max_disk_bytes: int = 512 << 20, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_disk_bytes = max_disk_bytes
        self._clock = clock
        self._records: dict[int, DlqRecord] = {}  # insertion order == id order
        self._sizes: dict[int, int] = {}
        self._used = 0
        self._next_id = 1
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ShutdownError("the DLQ store is closed; open a new one to use the DLQ")

    def put_batch(self, records: Sequence[DlqRecord]) -> list[int]:
        with self._lock:
            self._check_open()
            now = self._clock()
            stamped = [stamp(r, self._next_id + i, now) for i, r in enumerate(records)]
            sizes = [len(encode_record(r)) + _MEMORY_OVERHEAD for r in stamped]
            needed = sum(sizes)
            if self._used + needed > self.max_disk_bytes:
                raise DlqFullError(self._used, self.max_disk_bytes, needed, "memory")
            for r, size in zip(stamped, sizes, strict=True):
                self._records[r.id] = r
                self._sizes[r.id] = size
            self._used += needed
            self._next_id += len(stamped)
            return [r.id for r in stamped]

    def select(self, filter: DlqFilter, limit: int) -> list[DlqRecord]:
        check_limit(limit)
        with self._lock:
            self._check_open()
            if filter.ids is not None:
                candidates: Iterable[DlqRecord] = (
                    self._records[i] for i in sorted(filter.ids) if i in self._records
                )
            else:
                candidates = list(self._records.values())
            out: list[DlqRecord] = []
            for r in candidates:
                if len(out) >= limit:
                    break
                if filter.matches(r):
                    out.append(r)
            return out

    def _remove(self, record_id: int) -> bool:
        if self._records.pop(record_id, None) is None:
            return False
        self._used -= self._sizes.pop(record_id)
        return True

    def delete(self, ids: Iterable[int]) -> int:
        with self._lock:
            self._check_open()
            return sum(self._remove(i) for i in set(ids))

    def mark_failed(self, ids: Iterable[int], error: str, max_retries: int) -> MarkResult:
        check_retries(max_retries)
        with self._lock:
            self._check_open()
            now = self._clock()
            result = MarkResult([], [])
            for i in sorted(set(ids)):
                old = self._records.get(i)
                if old is None:
                    continue
                new = failed_again(old, error, now, max_retries)
                self._records[i] = new  # same key: keeps its place in id order
                size = len(encode_record(new)) + _MEMORY_OVERHEAD
                self._used += size - self._sizes[i]
                self._sizes[i] = size
                (result.parked if new.parked else result.retried).append(i)
            return result

    def count(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._records)

    def stats(self) -> DlqStats:
        with self._lock:
            self._check_open()
            builder = StatsBuilder()
            for r in self._records.values():
                builder.add(r)
            return builder.build(self._used, self.max_disk_bytes, self._used)

    def disk_used(self) -> int:
        with self._lock:
            self._check_open()
            return self._used

    def purge(self, filter: DlqFilter) -> int:
        with self._lock:
            self._check_open()
            doomed = [i for i, r in self._records.items() if filter.matches(r)]
            for i in doomed:
                self._remove(i)
            return len(doomed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
