"""What a DLQ record is, and how it is stored: the record, its filters and its codec.

A record keeps the encoded entry, its topic, key and headers, why it is here (a
:class:`~shipper.outcomes.Reason`), the last error, how often a re-send failed
(``attempts``) and the first and last failure times (wall clock, so they mean
something after a restart). Ids are per store, monotonic and never reused.

On disk a record is one version byte (:data:`FORMAT_VERSION`) followed by a msgpack
array of its fields in declaration order; new fields are appended with a default, or
the version is bumped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from typing import NamedTuple

import msgspec

from shipper.errors import DlqFormatError
from shipper.outcomes import Reason

__all__ = [
    "FORMAT_VERSION",
    "DlqFilter",
    "DlqRecord",
    "DlqStats",
    "MarkResult",
    "decode_record",
    "encode_record",
]

FORMAT_VERSION = 1
"""The leading byte of every encoded record; bump it when the record layout changes."""


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
    reason: Reason
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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DlqRecord)
VERSION_PREFIX = bytes([FORMAT_VERSION])


def encode_record(record: DlqRecord) -> bytes:
    """``FORMAT_VERSION`` byte + msgpack array of the record's fields."""
    return VERSION_PREFIX + _encoder.encode(record)


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


def _reason_set(reasons: Iterable[str] | None) -> frozenset[str] | None:
    if reasons is None:
        return None
    out = set()
    for r in reasons:
        try:
            out.add(str(Reason(r)))
        except ValueError:
            known = ", ".join(m.value for m in Reason)
            raise ValueError(f"unknown reason {r!r}; expected one of {known}") from None
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
