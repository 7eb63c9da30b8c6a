"""The dead-letter queue store: where entries go when Kafka cannot take them.

An entry the pipeline accepted is either acknowledged by Kafka or committed here; the
DLQ actor owns one store per node and reprocesses it when Kafka recovers. This module
is the seam: :class:`DlqStore` is the interface, :class:`MemoryDlqStore` serves unit
tests, :class:`LmdbDlqStore` is the real, durable one. The same contract tests run
against both (``tests/unit/test_dlq_store.py``).

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
the single LMDB writer lock, so it waits for a writer in another thread or process,
and with ``sync=True`` it waits for the disk flush before returning. Reads
(``fetch``, ``select``, ``count``, ``stats``, ``disk_used``) never wait for writers:
LMDB readers see the last committed snapshot. ``stats`` reads every record, so it
costs time proportional to the queue (see ``bench/bench_dlq.py``); ``count`` does not.

Records and the reprocessing loop
---------------------------------

A record keeps the encoded entry, its topic, key and headers, why it is here
(:class:`DlqReason`), the last error, how often a re-send failed (``attempts``) and the
first and last failure times (wall clock, so they mean something after a restart).
Ids are per store, monotonic and never reused; they are the LMDB keys in big-endian,
so iteration order is arrival order. The reprocessor does::

    batch = store.fetch(n, after=last_id)        oldest active records first
    ... re-send through the Router ...
    store.delete(delivered_ids)
    store.mark_failed(failed_ids, error, max_retries)   parks the ones out of retries

A parked record is kept, never deleted by the reprocessor; ``fetch`` skips it unless
asked (``include_parked=True``, e.g. ``shipper dlq replay --parked``).

LMDB layout and durability
--------------------------

One environment per directory with three named databases: ``records`` (active
records), ``parked`` (records out of retries; a separate tree so the reprocessor never
walks over them) and ``meta`` (the id counter and the record format version). Each
call is one write transaction, so a batch is all-or-nothing.

The durability knobs are LMDB's own:

- ``sync=True, metasync=True`` (default): each commit flushes the data pages and then
  the meta page; when ``put_batch`` returns, the batch survives a process kill, an OS
  crash and a power cut. Costs two ``fdatasync`` per batch, which is why writes are
  batched: the flush cost is paid once per thousand entries, not per entry.
- ``sync=True, metasync=False``: one flush per commit; an OS crash or power cut may
  undo the last committed batch, but never corrupts the file.
- ``sync=False``: no flush; the kernel writes the pages back later. A killed process
  loses nothing (its writes are already in the page cache), an OS crash or power cut
  loses the batches of the last seconds. Not "durable" in the design's sense.

``bench/bench_dlq.py`` measures the three modes. On the development VM (ext4,
``fdatasync`` of 4 KiB about 0.1 ms), batches of 1000 x 300-byte entries wrote at
360k-590k entries/s durable and 520k-640k entries/s without sync; encoding and the
B-tree work dominate there. On a disk whose flush takes F ms, a durable batch costs
about 2 ms + 2F (1 ms + F without metasync), so the batch size, not the mode, is what
keeps the durable rate high.

Disk budget
-----------

``max_disk_bytes`` bounds the pages the databases occupy. ``put_batch`` writes the
batch, measures the pages in use inside its transaction, and aborts the whole
transaction with :class:`DlqFullError` (a ``BackpressureError``) if the budget would be
exceeded; an LMDB map-full error is turned into the same error. Nothing of a refused
batch is written. The map must be larger than the budget (at least 10 % larger; twice
is better) because LMDB copies pages on write: even deleting records needs free pages,
and a map filled to the last page could not be drained.

Processes
---------

LMDB lets several processes share one directory (the DLQ actor writes while the CLI
reads; their writers take turns on the LMDB lock), but a process must not open the
same directory twice: LMDB's locks are per process, so a second handle would share,
and on close release, the first one's locks. The store refuses a second open in one
process. Keep the directory on a local disk; LMDB's locking does not work over NFS.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from types import TracebackType
from typing import Any, NamedTuple, Self

import lmdb
import msgspec

from shipper.errors import BackpressureError, ShipperError, ShutdownError

__all__ = [
    "FORMAT_VERSION",
    "DlqError",
    "DlqFilter",
    "DlqFormatError",
    "DlqFullError",
    "DlqReason",
    "DlqRecord",
    "DlqStats",
    "DlqStore",
    "LmdbDlqStore",
    "MarkResult",
    "MemoryDlqStore",
    "decode_record",
    "encode_record",
]

FORMAT_VERSION = 1
"""The leading byte of every encoded record; bump it when the record layout changes."""


class DlqReason(StrEnum):
    """Why an entry is in the DLQ (the ``reason`` label of the DLQ metrics)."""

    ERROR = "error"
    TIMEOUT = "timeout"
    MESSAGE_TOO_LARGE = "message_too_large"
    SERIALIZATION_ERROR = "serialization_error"
    CIRCUIT_OPEN = "circuit_open"
    EMERGENCY_BACKPRESSURE = "emergency_backpressure"
    AUTH_FAILURE = "auth_failure"


class DlqRecord(msgspec.Struct, kw_only=True, frozen=True, array_like=True):
    """One entry in the DLQ.

    ``id`` is assigned by the store (``put_batch`` ignores the one passed in).
    Times are wall-clock seconds; ``put_batch`` fills ``first_failure`` and
    ``last_failure`` with the store's clock when they are left at 0.
    """

    # array_like: the field order *is* the stored layout. Append new fields at the end
    # with a default, or bump FORMAT_VERSION.
    id: int = 0
    value: bytes
    topic: str
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
    reason: DlqReason
    error: str = ""
    attempts: int = 0
    first_failure: float = 0.0
    last_failure: float = 0.0
    parked: bool = False


class DlqStats(msgspec.Struct, kw_only=True, frozen=True):
    """What ``shipper dlq stats`` shows; counts include parked records."""

    total: int
    active: int
    parked: int
    by_reason: dict[str, int]
    by_topic: dict[str, int]
    oldest_first_failure: float | None
    newest_first_failure: float | None
    disk_used: int  # bytes of pages (or, in memory, of encoded records) in use
    disk_budget: int
    file_bytes: int  # size of the file on disk (LMDB files grow, never shrink)


class MarkResult(NamedTuple):
    """Outcome of :meth:`DlqStore.mark_failed`: ids still retried, and ids now parked."""

    retried: list[int]
    parked: list[int]


class DlqError(ShipperError):
    """The DLQ store cannot be used as asked (opened twice, unreadable data)."""


class DlqFormatError(DlqError):
    """A stored record cannot be decoded (unknown format version or damaged bytes)."""


class DlqFullError(BackpressureError):
    """The DLQ's disk budget (or LMDB map) has no room for a batch; nothing was written."""

    def __init__(
        self, used: int, limit: int, needed: int, where: str, limit_name: str = "max_disk_bytes"
    ) -> None:
        self.used = used
        self.limit = limit
        self.needed = needed
        self.where = where
        self.limit_name = limit_name
        super().__init__(used, limit, needed, where, limit_name)

    def __str__(self) -> str:
        return (
            f"DLQ at {self.where} is full: {self.used} bytes in use, the batch needs about "
            f"{self.needed} more and {self.limit_name} is {self.limit} bytes; nothing of the "
            "batch was written. Let the DLQ drain once Kafka is reachable (`shipper dlq "
            "replay`), remove records you do not need (`shipper dlq purge`), or raise "
            "dlq_config.max_disk_bytes (and map_size_bytes, which must stay larger)"
        )


# -- codec ---------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DlqRecord)
_VERSION_PREFIX = bytes([FORMAT_VERSION])


def encode_record(record: DlqRecord) -> bytes:
    """``FORMAT_VERSION`` byte + msgpack array of the record's fields."""
    return _VERSION_PREFIX + _encoder.encode(record)


def decode_record(data: bytes | memoryview) -> DlqRecord:
    """Inverse of :func:`encode_record`; raises :class:`DlqFormatError` on bad input."""
    view = memoryview(data)
    if len(view) == 0:
        raise DlqFormatError("empty DLQ record")
    if view[0] != FORMAT_VERSION:
        raise DlqFormatError(
            f"DLQ record has format version {view[0]}, this shipper reads version "
            f"{FORMAT_VERSION}; open the DLQ with the shipper version that wrote it"
        )
    try:
        return _decoder.decode(view[1:])
    except msgspec.DecodeError as exc:
        raise DlqFormatError(f"damaged DLQ record: {exc}") from exc


def _id_key(record_id: int) -> bytes:
    # Big-endian so LMDB's bytewise key order is numeric order.
    return record_id.to_bytes(8, "big")


def _key_id(key: bytes) -> int:
    return int.from_bytes(key, "big")


# -- filters ---------------------------------------------------------------------------


def _reason_set(reasons: Iterable[str] | None) -> frozenset[str] | None:
    if reasons is None:
        return None
    out = set()
    for r in reasons:
        try:
            out.add(str(DlqReason(r)))
        except ValueError:
            known = ", ".join(m.value for m in DlqReason)
            raise ValueError(f"unknown DLQ reason {r!r}; expected one of {known}") from None
    return frozenset(out)


@dataclasses.dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which records a ``select`` or ``purge`` touches. Every condition must hold.

    ``parked``: ``None`` both kinds, ``False`` only active records, ``True`` only parked
    ones. ``before``: ``first_failure`` strictly older than this wall-clock time.
    ``after``: ids strictly greater (for paging through the queue). ``DlqFilter()``
    matches every record.
    """

    reasons: Collection[str] | None = None
    topics: Collection[str] | None = None
    ids: Collection[int] | None = None
    parked: bool | None = None
    before: float | None = None
    after: int = 0

    def __post_init__(self) -> None:
        # Frozen dataclass: normalize through object.__setattr__ so lookups are O(1)
        # and a typo in a reason fails loudly instead of matching nothing.
        object.__setattr__(self, "reasons", _reason_set(self.reasons))
        if self.topics is not None:
            object.__setattr__(self, "topics", frozenset(self.topics))
        if self.ids is not None:
            object.__setattr__(self, "ids", frozenset(self.ids))

    @property
    def matches_everything(self) -> bool:
        return (
            self.reasons is None
            and self.topics is None
            and self.ids is None
            and self.parked is None
            and self.before is None
            and self.after <= 0
        )

    def matches(self, record: DlqRecord) -> bool:
        return (
            record.id > self.after
            and (self.parked is None or record.parked == self.parked)
            and (self.ids is None or record.id in self.ids)
            and (self.reasons is None or record.reason in self.reasons)
            and (self.topics is None or record.topic in self.topics)
            and (self.before is None or record.first_failure < self.before)
        )


class _StatsBuilder:
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


def _stamp(record: DlqRecord, record_id: int, now: float) -> DlqRecord:
    first = record.first_failure or now
    return msgspec.structs.replace(
        record, id=record_id, first_failure=first, last_failure=record.last_failure or first
    )


def _failed_again(record: DlqRecord, error: str, now: float, max_retries: int) -> DlqRecord:
    attempts = record.attempts + 1
    return msgspec.structs.replace(
        record,
        attempts=attempts,
        error=error,
        last_failure=now,
        parked=record.parked or attempts >= max_retries,
    )


# -- the interface ----------------------------------------------------------------------


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


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def _check_retries(max_retries: int) -> None:
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")


# -- in memory ------------------------------------------------------------------------------

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
            stamped = [_stamp(r, self._next_id + i, now) for i, r in enumerate(records)]
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
        _check_limit(limit)
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
        _check_retries(max_retries)
        with self._lock:
            self._check_open()
            now = self._clock()
            result = MarkResult([], [])
            for i in sorted(set(ids)):
                old = self._records.get(i)
                if old is None:
                    continue
                new = _failed_again(old, error, now, max_retries)
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
            builder = _StatsBuilder()
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


# -- LMDB -----------------------------------------------------------------------------------

_OPEN_DIRS: set[str] = set()
_OPEN_DIRS_LOCK = threading.Lock()

_META_NEXT_ID = b"next_id"
_META_FORMAT = b"format"
_PURGE_CHUNK = 10_000  # records per write transaction, so a huge purge stays small


class _BudgetExceeded(Exception):
    """Internal: raised inside a write transaction so the context manager aborts it."""

    def __init__(self, used: int) -> None:
        super().__init__(used)
        self.used = used


class LmdbDlqStore(DlqStore):
    """The durable DLQ: an LMDB environment in directory ``path``.

    ``map_size`` is the most the file may ever grow to (LMDB reserves that much
    address space, not disk); ``max_disk_bytes`` is the budget ``put_batch`` enforces
    and must be at most 90 % of ``map_size``. ``sync`` / ``metasync`` choose the
    durability mode (see the module docstring). ``clock`` gives wall-clock seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int = 1 << 30,
        max_disk_bytes: int = 512 << 20,
        sync: bool = True,
        metasync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_disk_bytes <= 0:
            raise ValueError(f"max_disk_bytes must be > 0, got {max_disk_bytes}")
        if max_disk_bytes > map_size * 0.9:
            raise ValueError(
                f"max_disk_bytes ({max_disk_bytes}) must be at most 90% of map_size "
                f"({map_size}): LMDB needs free pages even to delete records; make "
                "map_size at least twice max_disk_bytes"
            )
        self.path = os.path.realpath(os.fspath(path))
        self.map_size = map_size
        self.max_disk_bytes = max_disk_bytes
        self.sync = sync
        self.metasync = metasync
        self._clock = clock
        self._write_lock = threading.Lock()
        self._closed = False

        with _OPEN_DIRS_LOCK:
            if self.path in _OPEN_DIRS:
                raise DlqError(
                    f"the DLQ at {self.path} is already open in this process; share that "
                    "store object instead of opening the directory twice (LMDB locks are "
                    "per process)"
                )
            _OPEN_DIRS.add(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                subdir=True,
                max_dbs=3,
                sync=sync,
                metasync=metasync,
                lock=True,
            )
            # A process killed with SIGKILL leaves its reader slot behind; clearing stale
            # slots now keeps LMDB from holding old pages for a reader that is gone.
            self._env.reader_check()
            self._records = self._env.open_db(b"records")
            self._parked = self._env.open_db(b"parked")
            self._meta = self._env.open_db(b"meta")
            with self._env.begin(write=True) as txn:
                fmt = txn.get(_META_FORMAT, db=self._meta)
                if fmt is None:
                    txn.put(_META_FORMAT, _VERSION_PREFIX, db=self._meta)
                elif fmt != _VERSION_PREFIX:
                    raise DlqFormatError(
                        f"the DLQ at {self.path} was written in format version {fmt[0]}; "
                        f"this shipper reads version {FORMAT_VERSION}"
                    )
        except BaseException:
            env = getattr(self, "_env", None)
            if env is not None:
                env.close()
            with _OPEN_DIRS_LOCK:
                _OPEN_DIRS.discard(self.path)
            raise

    def __repr__(self) -> str:
        # getattr: a store whose constructor refused its arguments has no state yet.
        state = "closed" if getattr(self, "_closed", True) else "open"
        path, sync = getattr(self, "path", "?"), getattr(self, "sync", "?")
        return f"LmdbDlqStore({path!r}, {state}, sync={sync})"

    def _check_open(self) -> None:
        if self._closed:
            raise ShutdownError(
                f"the DLQ store at {self.path} is closed; open a new one to use the DLQ"
            )

    def _pages_bytes(self, txn: lmdb.Transaction[Any]) -> int:
        total = 0
        for db in (None, self._records, self._parked, self._meta):
            s = txn.stat(db)
            total += (s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]) * s["psize"]
        return total

    @contextmanager
    def _write_txn(self) -> Iterator[lmdb.Transaction[bytes]]:
        """One write transaction: committed on success, aborted on any exception.

        The caller holds ``_write_lock``. A full map surfaces as :class:`DlqFullError`
        whichever write hit it (LMDB copies pages on write, so even a delete can).
        """
        try:
            with self._env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError:
            info = self._env.info()
            file_used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
            raise DlqFullError(file_used, info["map_size"], 0, self.path, "map_size") from None

    # -- writes

    def put_batch(self, records: Sequence[DlqRecord]) -> list[int]:
        if not records:
            self._check_open()
            return []
        with self._write_lock:
            self._check_open()
            now = self._clock()
            needed = 0
            try:
                with self._write_txn() as txn:
                    used_before = self._pages_bytes(txn)
                    raw = txn.get(_META_NEXT_ID, db=self._meta)
                    first_id = 1 if raw is None else _key_id(raw)
                    items: list[tuple[bytes, bytes]] = []
                    parked: list[tuple[bytes, bytes]] = []
                    for i, r in enumerate(records):
                        stamped = _stamp(r, first_id + i, now)
                        item = (_id_key(stamped.id), encode_record(stamped))
                        needed += len(item[1]) + 16  # + key; a lower bound of the pages
                        (parked if stamped.parked else items).append(item)
                    # Cheap early refusal before touching any page.
                    if used_before + needed > self.max_disk_bytes:
                        raise _BudgetExceeded(used_before)
                    # Ids only grow, so every key goes at the end of its tree: append
                    # mode skips the search and fills pages completely.
                    for db, batch in ((self._records, items), (self._parked, parked)):
                        if batch:
                            added = txn.cursor(db).putmulti(batch, append=True)[1]
                            if added != len(batch):
                                raise DlqError(
                                    f"DLQ at {self.path}: id counter behind existing keys"
                                )
                    txn.put(_META_NEXT_ID, _id_key(first_id + len(records)), db=self._meta)
                    # The exact check: pages really in use with the batch written.
                    if self._pages_bytes(txn) > self.max_disk_bytes:
                        raise _BudgetExceeded(used_before)
            except _BudgetExceeded as exc:
                raise DlqFullError(exc.used, self.max_disk_bytes, needed, self.path) from None
            except DlqFullError as exc:
                # Map full: report the batch size too (known only once it was encoded).
                raise DlqFullError(exc.used, exc.limit, needed, exc.where, exc.limit_name) from None
            return list(range(first_id, first_id + len(records)))

    def delete(self, ids: Iterable[int]) -> int:
        keys = sorted({_id_key(i) for i in ids})
        with self._write_lock:
            self._check_open()
            n = 0
            with self._write_txn() as txn:
                for k in keys:
                    n += txn.delete(k, db=self._records) or txn.delete(k, db=self._parked)
            return n

    def mark_failed(self, ids: Iterable[int], error: str, max_retries: int) -> MarkResult:
        _check_retries(max_retries)
        wanted = sorted(set(ids))
        with self._write_lock:
            self._check_open()
            now = self._clock()
            result = MarkResult([], [])
            with self._write_txn() as txn:
                for i in wanted:
                    k = _id_key(i)
                    db = self._records
                    raw = txn.get(k, db=db)
                    if raw is None:
                        db = self._parked
                        raw = txn.get(k, db=db)
                        if raw is None:
                            continue
                    new = _failed_again(decode_record(raw), error, now, max_retries)
                    if new.parked and db is self._records:
                        txn.delete(k, db=self._records)
                        db = self._parked
                    txn.put(k, encode_record(new), db=db)
                    (result.parked if new.parked else result.retried).append(i)
            return result

    def purge(self, filter: DlqFilter) -> int:
        with self._write_lock:
            self._check_open()
            if filter.matches_everything:
                with self._write_txn() as txn:
                    n = self._count(txn)
                    txn.drop(self._records, delete=False)
                    txn.drop(self._parked, delete=False)
                return n
            # Chunked: one transaction per _PURGE_CHUNK deletions keeps the dirty-page
            # list small. Purge is not atomic as a whole, and need not be.
            total = 0
            page = filter
            while True:
                with self._write_txn() as txn:
                    chunk = self._select(txn, page, _PURGE_CHUNK)
                    for r in chunk:
                        txn.delete(_id_key(r.id), db=self._parked if r.parked else self._records)
                total += len(chunk)
                if len(chunk) < _PURGE_CHUNK:
                    return total
                page = dataclasses.replace(filter, after=chunk[-1].id)

    # -- reads

    def _iter_db(
        self, txn: lmdb.Transaction[bytes], db: Any, after: int
    ) -> Iterator[tuple[bytes, bytes]]:
        cursor = txn.cursor(db)
        if cursor.set_range(_id_key(after + 1)):
            yield from cursor

    def _select(
        self, txn: lmdb.Transaction[bytes], filter: DlqFilter, limit: int
    ) -> list[DlqRecord]:
        out: list[DlqRecord] = []
        if limit == 0:
            return out
        dbs = []
        if filter.parked is not True:
            dbs.append(self._records)
        if filter.parked is not False:
            dbs.append(self._parked)
        if filter.ids is not None:
            for i in sorted(filter.ids):
                if i <= filter.after:
                    continue
                for db in dbs:
                    raw = txn.get(_id_key(i), db=db)
                    if raw is not None:
                        r = decode_record(raw)
                        if filter.matches(r):
                            out.append(r)
                            if len(out) >= limit:
                                return out
                        break
            return out
        # Both trees are in id order; merging them yields the whole queue in id order.
        streams = [self._iter_db(txn, db, max(filter.after, 0)) for db in dbs]
        for _, raw in heapq.merge(*streams):
            r = decode_record(raw)
            if filter.matches(r):
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    def select(self, filter: DlqFilter, limit: int) -> list[DlqRecord]:
        _check_limit(limit)
        self._check_open()
        with self._env.begin() as txn:
            return self._select(txn, filter, limit)

    def _count(self, txn: lmdb.Transaction[Any]) -> int:
        return txn.stat(self._records)["entries"] + txn.stat(self._parked)["entries"]

    def count(self) -> int:
        self._check_open()
        with self._env.begin() as txn:
            return self._count(txn)

    def disk_used(self) -> int:
        self._check_open()
        with self._env.begin() as txn:
            return self._pages_bytes(txn)

    def file_bytes(self) -> int:
        """Size of ``data.mdb``: the high-water mark, since LMDB files never shrink."""
        try:
            return os.path.getsize(os.path.join(self.path, "data.mdb"))
        except OSError:
            return 0

    def stats(self) -> DlqStats:
        self._check_open()
        builder = _StatsBuilder()
        with self._env.begin() as txn:
            for db in (self._records, self._parked):
                for _, raw in txn.cursor(db):
                    builder.add(decode_record(raw))
            used = self._pages_bytes(txn)
        return builder.build(used, self.max_disk_bytes, self.file_bytes())

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._env.close()
            with _OPEN_DIRS_LOCK:
                _OPEN_DIRS.discard(self.path)
