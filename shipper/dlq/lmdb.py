"""The durable DLQ store: one LMDB environment per directory.

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
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lmdb

from shipper.dlq.codec import (
    FORMAT_VERSION,
    VERSION_PREFIX,
    DlqFilter,
    DlqRecord,
    DlqStats,
    MarkResult,
    decode_record,
    encode_record,
)
from shipper.dlq.store import (
    DlqStore,
    StatsBuilder,
    check_limit,
    check_retries,
    failed_again,
    stamp,
)
from shipper.errors import DlqError, DlqFormatError, DlqFullError, ShutdownError

__all__ = ["LmdbDlqStore"]


def _id_key(record_id: int) -> bytes:
    # Big-endian so LMDB's bytewise key order is numeric order.
    return record_id.to_bytes(8, "big")


def _only_paging(f: DlqFilter) -> bool:
    return f.reasons is None and f.topics is None and f.ids is None and f.before is None


def _key_id(key: bytes) -> int:
    return int.from_bytes(key, "big")


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
                    txn.put(_META_FORMAT, VERSION_PREFIX, db=self._meta)
                elif fmt != VERSION_PREFIX:
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
                        stamped = stamp(r, first_id + i, now)
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
                # A replayed page is a run of consecutive ids: after a delete the cursor
                # already stands on the next record, so most keys cost no tree search.
                cursor = txn.cursor(self._records)
                for k in keys:
                    if cursor.key() == k or cursor.set_key(k):
                        n += cursor.delete()
                    else:
                        n += txn.delete(k, db=self._parked)
            return n

    def mark_failed(self, ids: Iterable[int], error: str, max_retries: int) -> MarkResult:
        check_retries(max_retries)
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
                    new = failed_again(decode_record(raw), error, now, max_retries)
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
        after = max(filter.after, 0)
        if len(dbs) == 1 and _only_paging(filter):
            # The reprocessor's page: one tree, no condition but the cursor. Read the
            # values in one go and decode them, with no per-record filter call.
            cursor = txn.cursor(dbs[0])
            if not cursor.set_range(_id_key(after + 1)):
                return out
            raws = itertools.islice(cursor.iternext(keys=False, values=True), limit)
            return [decode_record(raw) for raw in raws]
        # Both trees are in id order; merging them yields the whole queue in id order.
        streams = [self._iter_db(txn, db, after) for db in dbs]
        for _, raw in heapq.merge(*streams):
            r = decode_record(raw)
            if filter.matches(r):
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    def select(self, filter: DlqFilter, limit: int) -> list[DlqRecord]:
        check_limit(limit)
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
        builder = StatsBuilder()
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
