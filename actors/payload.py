"""Large payloads go through Ray's object store once, and actors pass a reference.

A submission's encoded values are written to the shared-memory object store by
whoever has them first (the driver for a blob of input lines, the Router for a
segment it built) and read by whoever needs the bytes (the Router to validate a
blob, the Producer to produce). The Batcher in between only moves a :class:`Stored`
handle: a few dozen bytes instead of megabytes, which on this kind of machine was
the largest single cost of a hop (every Ray call copies and frames its arguments,
at well under a gigabyte per second).

The object is kept as a ``uint8`` numpy array because Ray reads those without a copy
(a view on shared memory). Ray's distributed reference counting keeps the object
alive while any actor holds a ``Stored``; it is lost only with the process that
created it, and then the entries it held cannot be re-sent by anyone (they are
reported as failed, never counted as delivered).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray

from shipper.errors import brief
from shipper.kafka.client import Failure, SendResult
from shipper.outcomes import Reason
from shipper.packed import Packed

__all__ = ["STORE_MIN_BYTES", "Stored", "lost_payload", "resolve", "store"]

#: Payloads at least this large go through the object store; smaller ones ride
#: inside the call (Ray's own inline limit is 100 KiB).
STORE_MIN_BYTES = 64 * 1024


class Stored:
    """A reference to newline-joined values in the object store.

    ``size`` is how many bytes of the object are the values (a blob of input lines
    may end with a newline that is not part of them); ``count`` is the number of
    values, or -1 for raw input whose lines nobody has counted yet (``len()`` then
    raises, so such a blob cannot pass for an empty segment).
    """

    __slots__ = ("count", "ref", "size")

    def __init__(self, ref: Any, count: int, size: int) -> None:
        self.ref = ref
        self.count = count
        self.size = size

    @classmethod
    def put(cls, data: bytes, count: int = -1) -> Stored:
        return cls(ray.put(np.frombuffer(data, dtype=np.uint8)), count, len(data))

    def sized(self, count: int, size: int) -> Stored:
        """The same object, read as ``count`` values in its first ``size`` bytes."""
        return Stored(self.ref, count, size)

    def __len__(self) -> int:
        if self.count < 0:
            raise TypeError("raw input in the object store has no entry count yet")
        return self.count

    def __repr__(self) -> str:
        return f"Stored({self.count} values, {self.size} bytes)"

    async def fetch_bytes(self) -> bytes:
        arr = await self.ref
        return bytes(memoryview(arr)[: self.size])

    async def fetch(self) -> Packed:
        return Packed(await self.fetch_bytes(), self.count)


def store(values: Sequence[bytes]) -> Sequence[bytes] | Stored:
    """``values`` as they should travel: a :class:`Stored` when large and in the lines
    layout, else as they are (a ``Packed`` or a list)."""
    packed = values if isinstance(values, Packed) else None
    if packed is None or packed.lengths is not None or packed.nbytes < STORE_MIN_BYTES:
        return values
    return Stored.put(packed.data, len(packed))


async def resolve(values: Sequence[bytes] | Stored) -> Sequence[bytes]:
    """The values themselves, reading the object store if needed."""
    if isinstance(values, Stored):
        return await values.fetch()
    return values


def lost_payload(
    topic: str, n: int, keys: list[bytes | None] | None, exc: BaseException
) -> SendResult:
    """The result for ``n`` entries whose payload could not be read: reported failures
    with no value (nothing to re-send), reason ``payload_lost``."""
    now = time.time()
    text = f"payload lost before a produce attempt: {brief(exc)}"
    r = SendResult(topic=topic, sent=n, started=now, finished=now)
    r.failures = [
        Failure(None, keys[i] if keys else None, Reason.PAYLOAD_LOST, text) for i in range(n)
    ]
    return r
