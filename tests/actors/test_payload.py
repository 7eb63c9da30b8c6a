"""Payloads through the object store: what one actor stores, another reads back."""

from __future__ import annotations

import asyncio
import gc

import pytest
import ray

from actors.payload import STORE_MIN_BYTES, Stored, resolve, store
from shipper.packed import Packed

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


@ray.remote(num_cpus=0)
class Reader:
    async def read(self, box: list[Stored]) -> list[bytes]:
        # Nested in a list, so Ray hands over the reference, not the value.
        return list(await resolve(box[0]))


def test_a_stored_blob_reads_back_in_another_actor_with_its_final_newline_cut() -> None:
    lines = [b'{"message":"m%d"}' % i for i in range(10_000)]
    blob = b"\n".join(lines) + b"\n"
    stored = Stored.put(blob)
    assert stored.size == len(blob)
    sized = stored.sized(len(lines), len(blob) - 1)
    reader = Reader.remote()  # type: ignore[attr-defined]
    assert ray.get(reader.read.remote([sized])) == lines
    assert repr(sized) == f"Stored({len(lines)} values, {len(blob) - 1} bytes)"


def test_the_object_outlives_the_writers_handle_while_a_reader_holds_it() -> None:
    lines = [b"x" * 100] * 2000
    box = [store(Packed.of(lines))]
    assert isinstance(box[0], Stored)
    reader = Reader.remote()  # type: ignore[attr-defined]
    ref = reader.read.remote(box)
    del box
    gc.collect()
    assert ray.get(ref) == lines


def test_small_or_framed_payloads_stay_inline() -> None:
    small = Packed.of([b"a", b"b"])
    assert store(small) is small
    framed = Packed.of([b"has\nnewline" * 10_000, b"x"])
    assert framed.nbytes >= STORE_MIN_BYTES and store(framed) is framed
    plain = [b"a"] * 10
    assert store(plain) is plain
    assert asyncio.run(resolve(plain)) is plain


class _Lost(Stored):
    """A payload that can no longer be read (as when its owner process died)."""

    async def fetch(self) -> Packed:
        raise ray.exceptions.OwnerDiedError("object owner died")  # type: ignore[call-arg]


def test_a_payload_that_cannot_be_read_fails_only_its_own_part() -> None:
    from actors.producer import ProducerActor
    from actors.wiring import Wiring
    from shipper.config import load_config
    from shipper.kafka.client import MemoryProducerClient

    lost = _Lost(None, 3, 10)
    cfg = load_config(
        {
            "sinks": {"kafka": {"enabled": True, "brokers": ["127.0.0.1:1"], "topic": "t"}},
            "metrics": {"enabled": False},
        }
    )
    client = MemoryProducerClient()
    producer = ProducerActor(Wiring("test", cfg), 0, client=client)
    good = Packed.of([b"a", b"b"])
    results = asyncio.run(
        producer.produce("t", [(lost, [b"k", None, b"k"], None, None), (good, None, None, None)])
    )
    assert results[0].delivered == 0 and len(results[0].failures) == 3
    assert {(f.reason, f.value) for f in results[0].failures} == {("payload_lost", None)}
    assert [f.key for f in results[0].failures] == [b"k", None, b"k"]
    assert "payload lost" in results[0].failures[0].error
    assert results[1].delivered == 2 and not results[1].failures
    assert [v for _p, _k, v in client.topics["t"]] == [b"a", b"b"]
