"""Read positions of followed files: what is acknowledged, what was handed over.

A position is kept per file *identity* (see :mod:`shipper.sources.files`), with two
marks:

- ``offset``/``line``: everything before it is acknowledged (in Kafka or in the DLQ,
  or a counted rejection). A restart resumes here, so nothing is lost.
- ``sent_offset``/``sent_line``: everything before it was handed to the pipeline. It
  is written *before* the hand-over, so after a crash the lines between the two marks
  are exactly the ones that may be in Kafka already: they are sent again and counted
  as possible duplicates.

:class:`AckTracker` turns out-of-order acknowledgements of a file's blocks into the
acknowledged prefix. :class:`CheckpointStore` is the seam: :class:`MemoryCheckpoints`
for unit tests, :class:`LmdbCheckpoints` on disk.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import lmdb
import msgspec

__all__ = [
    "AckTracker",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "LmdbCheckpoints",
    "MemoryCheckpoints",
]


class Checkpoint(msgspec.Struct, array_like=True, frozen=True):
    """One file's positions; ``fp`` fingerprints its first ``fp_len`` bytes."""

    path: str
    fp_len: int
    fp: str
    offset: int = 0
    line: int = 0
    sent_offset: int = 0
    sent_line: int = 0
    updated: float = 0.0


class CheckpointError(Exception):
    """The checkpoint store cannot be written (full) or read (damaged)."""


class CheckpointStore(ABC):
    """Positions by file identity. Thread-safe."""

    @abstractmethod
    def load(self) -> dict[str, Checkpoint]:
        """Every stored position."""

    @abstractmethod
    def save(self, changes: Mapping[str, Checkpoint], gone: Iterable[str] = ()) -> None:
        """Store ``changes`` and forget ``gone`` in one transaction (durable on return).
        Raises :class:`CheckpointError` when the store is full or unusable."""

    @abstractmethod
    def close(self) -> None:
        """Release the store."""


class MemoryCheckpoints(CheckpointStore):
    def __init__(self) -> None:
        self.data: dict[str, Checkpoint] = {}
        self.saves = 0

    def load(self) -> dict[str, Checkpoint]:
        return dict(self.data)

    def save(self, changes: Mapping[str, Checkpoint], gone: Iterable[str] = ()) -> None:
        self.saves += 1
        self.data.update(changes)
        for key in gone:
            self.data.pop(key, None)

    def close(self) -> None:
        pass


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Checkpoint)


class LmdbCheckpoints(CheckpointStore):
    """Positions in an LMDB environment at ``path`` (one small record per file).

    Writes are synced: a position on disk is never ahead of what was acknowledged.
    A damaged record is skipped and reported in :attr:`damaged` (its file is then read
    from its beginning again: duplicates, not loss).
    """

    def __init__(self, path: str, map_size: int = 64 << 20) -> None:
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=2, subdir=True)
        self._db = self._env.open_db(b"positions")
        self._lock = threading.Lock()
        self.damaged: list[str] = []

    def load(self) -> dict[str, Checkpoint]:
        out: dict[str, Checkpoint] = {}
        with self._env.begin() as txn:
            for k, v in txn.cursor(self._db):
                key = bytes(k).decode("utf-8", "replace")
                try:
                    out[key] = _decoder.decode(v)
                except msgspec.DecodeError:
                    self.damaged.append(key)
        return out

    def save(self, changes: Mapping[str, Checkpoint], gone: Iterable[str] = ()) -> None:
        with self._lock:
            try:
                with self._env.begin(write=True, db=self._db) as txn:
                    for key, cp in changes.items():
                        txn.put(key.encode(), _encoder.encode(cp))
                    for key in gone:
                        txn.delete(key.encode())
            except lmdb.MapFullError as exc:
                raise CheckpointError(
                    f"checkpoint store at {self.path} is full (raise "
                    "sources.checkpoints.map_size_bytes); positions are kept in memory "
                    "until it has room"
                ) from exc
            except lmdb.Error as exc:
                raise CheckpointError(f"checkpoint store at {self.path}: {exc}") from exc

    def close(self) -> None:
        self._env.close()


def open_checkpoints(path: str, map_size: int) -> tuple[CheckpointStore, str | None]:
    """The store at ``path``; a store that cannot be opened (damaged files) is moved
    aside and a new one made, with the reason returned for the caller to report."""
    try:
        return LmdbCheckpoints(path, map_size), None
    except lmdb.Error as exc:
        aside = f"{path}.damaged-{int(time.time())}"
        try:
            os.replace(path, aside)
            note = f"moved to {aside}"
        except OSError as move_exc:
            return MemoryCheckpoints(), (
                f"checkpoint store at {path} cannot be opened ({exc}) nor moved aside "
                f"({move_exc}); positions are kept in memory only"
            )
        return LmdbCheckpoints(path, map_size), (
            f"checkpoint store at {path} could not be opened ({exc}); {note}, files are "
            "read again from their last known state"
        )


@dataclass
class _Blocks:
    # (end offset, end line) of each handed-over block, in file order, and which of
    # them are acknowledged.
    ends: deque[tuple[int, int]] = field(default_factory=deque)
    acked: set[int] = field(default_factory=set)
    first: int = 0  # sequence number of ends[0]
    next: int = 0


class AckTracker:
    """Acknowledged prefixes of each file, from blocks acknowledged in any order."""

    def __init__(self) -> None:
        self._files: dict[str, _Blocks] = {}

    def sent(self, key: str, end: int, end_line: int) -> int:
        """A block of file ``key`` ending at ``end`` was handed over; returns its number."""
        f = self._files.setdefault(key, _Blocks())
        n = f.next
        f.next += 1
        f.ends.append((end, end_line))
        return n

    def acked(self, key: str, n: int) -> tuple[int, int] | None:
        """Block ``n`` of ``key`` is acknowledged; returns the new acknowledged
        ``(offset, line)`` when the prefix grew, else None."""
        f = self._files.get(key)
        if f is None or n < f.first:
            return None
        f.acked.add(n)
        moved: tuple[int, int] | None = None
        while f.ends and f.first in f.acked:
            f.acked.discard(f.first)
            moved = f.ends.popleft()
            f.first += 1
        return moved

    def outstanding(self, key: str) -> int:
        f = self._files.get(key)
        return len(f.ends) if f is not None else 0

    def forget(self, key: str) -> None:
        self._files.pop(key, None)
