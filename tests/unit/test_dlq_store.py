"""DLQ store contract: the same tests against MemoryDlqStore and the real LmdbDlqStore.

The LMDB store runs on ``tmp_path`` (real files, real fsync). LMDB-only tests at the
end cover reopening, the per-process open guard, map-full, and a writer killed with
SIGKILL in mid-stream.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.dlq import (
    FORMAT_VERSION,
    DlqFilter,
    DlqRecord,
    DlqStore,
    LmdbDlqStore,
    MemoryDlqStore,
    decode_record,
    encode_record,
)
from shipper.errors import (
    BackpressureError,
    DlqError,
    DlqFormatError,
    DlqFullError,
    ShipperError,
    ShutdownError,
)
from shipper.outcomes import Reason

REPO = Path(__file__).resolve().parents[2]


class WallClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[..., DlqStore]


@pytest.fixture(params=["memory", "lmdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made: list[DlqStore] = []

    def factory(
        max_disk_bytes: int = 64 << 20, clock: Callable[[], float] | None = None
    ) -> DlqStore:
        kwargs: dict[str, Any] = {"max_disk_bytes": max_disk_bytes}
        if clock is not None:
            kwargs["clock"] = clock
        store: DlqStore
        if request.param == "memory":
            store = MemoryDlqStore(**kwargs)
        else:
            store = LmdbDlqStore(
                tmp_path / "dlq", map_size=max(4 * max_disk_bytes, 1 << 20), **kwargs
            )
        made.append(store)
        return store

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def store(make_store: StoreFactory, clock: WallClock) -> DlqStore:
    return make_store(clock=clock)


def rec(
    n: int = 0,
    topic: str = "logs",
    reason: Reason = Reason.TIMEOUT,
    size: int = 20,
    **kw: Any,
) -> DlqRecord:
    value = (f"entry-{n}-".encode() * size)[:size]
    return DlqRecord(value=value, topic=topic, reason=reason, **kw)


# -- codec ------------------------------------------------------------------------------

records = st.builds(
    DlqRecord,
    id=st.integers(0, 2**64 - 1),
    value=st.binary(max_size=2000),
    topic=st.text(max_size=50),
    key=st.none() | st.binary(max_size=100),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=5),
    reason=st.sampled_from(Reason),
    error=st.text(max_size=200),
    attempts=st.integers(0, 1000),
    first_failure=st.floats(allow_nan=False),
    last_failure=st.floats(allow_nan=False),
    parked=st.booleans(),
)


@given(records)
def test_codec_round_trips_every_record(r: DlqRecord) -> None:
    data = encode_record(r)
    assert data[0] == FORMAT_VERSION
    assert decode_record(data) == r
    assert decode_record(memoryview(data)) == r


def test_codec_refuses_other_versions_and_damage() -> None:
    data = encode_record(rec())
    with pytest.raises(DlqFormatError, match="format version 2"):
        decode_record(bytes([2]) + data[1:])
    with pytest.raises(DlqFormatError, match="damaged"):
        decode_record(data[:-3])
    with pytest.raises(DlqFormatError):
        decode_record(b"")


def test_reasons_cover_the_specs() -> None:
    # The spec's DLQ situations (broker down, too large, serialization, timeout) and
    # ours (breaker open, shed, auth); a record keeps any reason an entry can fail with.
    assert {r.value for r in Reason} >= {
        "error",
        "timeout",
        "message_too_large",
        "serialization_error",
        "circuit_open",
        "emergency_backpressure",
        "auth_failure",
    }


def test_dlq_full_error_is_backpressure_pickles_and_says_what_to_do() -> None:
    err = DlqFullError(900, 1000, 200, "/var/lib/shipper/dlq")
    assert isinstance(err, BackpressureError) and isinstance(err, ShipperError)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err)
    assert (back.used, back.limit, back.needed) == (900, 1000, 200)
    assert "shipper dlq replay" in str(err) and "max_disk_bytes" in str(err)
    assert "nothing of the batch was written" in str(err)


def test_filter_rejects_unknown_reasons() -> None:
    with pytest.raises(ValueError, match="unknown reason 'oops'"):
        DlqFilter(reasons=["oops"])


# -- contract -------------------------------------------------------------------------------


def test_put_assigns_increasing_ids_and_stamps_times(store: DlqStore, clock: WallClock) -> None:
    assert store.put_batch([]) == []
    ids = store.put_batch([rec(0), rec(1), rec(2)])
    assert ids == sorted(ids) and len(set(ids)) == 3 and ids[0] >= 1
    clock.now += 10
    more = store.put_batch([rec(3, first_failure=5.0)])
    assert more[0] > ids[-1]
    got = store.fetch(10)
    assert [r.id for r in got] == [*ids, *more]
    assert got[0].first_failure == got[0].last_failure == clock.now - 10
    assert (got[3].first_failure, got[3].last_failure) == (5.0, 5.0)  # kept as given
    assert store.count() == 4


def test_every_field_survives_the_store(store: DlqStore) -> None:
    r = DlqRecord(
        id=999,  # ignored: the store assigns ids
        value=bytes(range(256)),
        topic="app-logs",
        key=b"\x00user-17",
        headers=[("trace", b"abc"), ("bin", b"\xff\x00")],
        reason=Reason.MESSAGE_TOO_LARGE,
        error="Message size exceeds max_message_bytes",
        attempts=2,
        first_failure=100.5,
        last_failure=200.25,
    )
    [i] = store.put_batch([r])
    [got] = store.fetch(1)
    assert got == msgspec.structs.replace(r, id=i)


def test_fetch_is_oldest_first_with_limit_and_paging(store: DlqStore) -> None:
    ids = store.put_batch([rec(i) for i in range(25)])
    assert [r.id for r in store.fetch(10)] == ids[:10]
    assert [r.id for r in store.fetch(10, after=ids[9])] == ids[10:20]
    assert [r.id for r in store.fetch(100, after=ids[19])] == ids[20:]
    assert store.fetch(0) == []
    with pytest.raises(ValueError):
        store.fetch(-1)


def test_fetch_filters_by_reason_topic_and_id(store: DlqStore) -> None:
    ids = store.put_batch(
        [
            rec(0, topic="a", reason=Reason.TIMEOUT),
            rec(1, topic="b", reason=Reason.CIRCUIT_OPEN),
            rec(2, topic="a", reason=Reason.CIRCUIT_OPEN),
            rec(3, topic="c", reason=Reason.AUTH_FAILURE),
        ]
    )
    assert [r.id for r in store.fetch(10, reasons=["circuit_open"])] == [ids[1], ids[2]]
    assert [r.id for r in store.fetch(10, topics={"a"})] == [ids[0], ids[2]]
    assert [r.id for r in store.fetch(10, reasons=[Reason.CIRCUIT_OPEN], topics=["a"])] == [ids[2]]
    assert [r.id for r in store.fetch(10, ids=[ids[3], ids[0], 10_000])] == [ids[0], ids[3]]
    assert store.fetch(10, topics=[]) == []


def test_delete_removes_and_ids_are_never_reused(store: DlqStore) -> None:
    ids = store.put_batch([rec(i) for i in range(5)])
    assert store.delete([ids[1], ids[3], 123_456]) == 2
    assert store.delete([ids[1]]) == 0
    assert [r.id for r in store.fetch(10)] == [ids[0], ids[2], ids[4]]
    store.delete(ids)
    assert store.count() == 0
    [again] = store.put_batch([rec(9)])
    assert again > ids[-1]


def test_mark_failed_counts_attempts_then_parks(store: DlqStore, clock: WallClock) -> None:
    ids = store.put_batch([rec(i) for i in range(3)])
    clock.now += 60
    res = store.mark_failed([ids[0], ids[1], 777], "Local: Message timed out", max_retries=2)
    assert res.retried == [ids[0], ids[1]] and res.parked == []
    r0 = store.fetch(1)[0]
    assert (r0.attempts, r0.error, r0.last_failure) == (1, "Local: Message timed out", clock.now)
    assert r0.first_failure == clock.now - 60
    clock.now += 60
    retried, parked = store.mark_failed([ids[0]], "broker down", max_retries=2)
    assert (retried, parked) == ([], [ids[0]])
    # Parked: kept, but no longer fetched by default.
    assert store.count() == 3
    assert [r.id for r in store.fetch(10)] == [ids[1], ids[2]]
    everything = store.fetch(10, include_parked=True)
    assert [r.id for r in everything] == ids  # id order across active and parked
    assert everything[0].parked and everything[0].attempts == 2
    # A parked record that fails again (a manual replay) stays parked.
    assert store.mark_failed([ids[0]], "still down", max_retries=5).parked == [ids[0]]
    assert store.fetch(1, include_parked=True)[0].attempts == 3
    with pytest.raises(ValueError):
        store.mark_failed(ids, "x", max_retries=-1)


def test_max_retries_zero_parks_on_first_failure(store: DlqStore) -> None:
    ids = store.put_batch([rec(0)])
    assert store.mark_failed(ids, "x", max_retries=0).parked == ids


def test_parked_records_can_be_deleted_and_selected(store: DlqStore) -> None:
    ids = store.put_batch([rec(i) for i in range(4)])
    store.mark_failed(ids[:2], "x", max_retries=1)
    assert [r.id for r in store.select(DlqFilter(parked=True), 10)] == ids[:2]
    assert [r.id for r in store.select(DlqFilter(parked=False), 10)] == ids[2:]
    assert store.delete([ids[0]]) == 1
    assert [r.id for r in store.fetch(10, include_parked=True)] == ids[1:]


def test_stats_counts_by_reason_topic_parked_and_age(store: DlqStore, clock: WallClock) -> None:
    empty = store.stats()
    assert (empty.total, empty.oldest_first_failure, empty.by_reason) == (0, None, {})
    store.put_batch([rec(0, topic="a", reason=Reason.TIMEOUT)])
    clock.now += 100
    ids = store.put_batch(
        [rec(1, topic="b", reason=Reason.ERROR), rec(2, topic="a", reason=Reason.ERROR)]
    )
    store.mark_failed([ids[0]], "x", max_retries=1)
    s = store.stats()
    assert (s.total, s.active, s.parked) == (3, 2, 1)
    assert s.by_reason == {"error": 2, "timeout": 1}
    assert s.by_topic == {"a": 2, "b": 1}
    assert (s.oldest_first_failure, s.newest_first_failure) == (clock.now - 100, clock.now)
    assert 0 < s.disk_used <= s.disk_budget and s.file_bytes > 0
    assert s.disk_used == store.disk_used()
    assert msgspec.json.decode(msgspec.json.encode(s))["total"] == 3  # CLI --json


def test_purge_by_filter_and_everything(store: DlqStore, clock: WallClock) -> None:
    ids = store.put_batch(
        [rec(i, reason=Reason.CIRCUIT_OPEN if i % 2 else Reason.TIMEOUT) for i in range(10)]
    )
    store.mark_failed([ids[0]], "x", max_retries=1)
    assert store.purge(DlqFilter(reasons=["circuit_open"])) == 5
    assert store.purge(DlqFilter(parked=True)) == 1
    assert store.purge(DlqFilter(before=clock.now)) == 0  # first_failure == now: not older
    assert store.count() == 4
    assert store.purge(DlqFilter()) == 4
    assert store.count() == 0 and store.fetch(10, include_parked=True) == []
    [after] = store.put_batch([rec(0)])
    assert after > ids[-1]


def test_disk_used_grows_and_shrinks(store: DlqStore) -> None:
    base = store.disk_used()
    ids = store.put_batch([rec(i, size=300) for i in range(500)])
    grown = store.disk_used()
    assert grown >= base + 500 * 300
    store.delete(ids)
    assert store.disk_used() < grown


def test_a_batch_over_the_budget_is_refused_whole(make_store: StoreFactory) -> None:
    store = make_store(max_disk_bytes=200_000)
    ids = store.put_batch([rec(i, size=300) for i in range(100)])  # ~35 kB
    used = store.disk_used()
    with pytest.raises(DlqFullError) as info:
        store.put_batch([rec(i, size=300) for i in range(1000)])  # ~330 kB
    assert info.value.limit == 200_000 and info.value.needed > 0
    assert "max_disk_bytes" in str(info.value)
    # Nothing of the refused batch is there, and the id counter did not move.
    assert store.count() == 100 and store.disk_used() == used
    # Draining makes room again.
    store.delete(ids)
    more = store.put_batch([rec(i, size=300) for i in range(200)])
    assert more[0] == ids[-1] + 1 and store.count() == 200


def test_filling_up_to_the_budget_then_refusing(make_store: StoreFactory) -> None:
    store = make_store(max_disk_bytes=300_000)
    accepted = 0
    with pytest.raises(DlqFullError):
        for _ in range(1000):
            store.put_batch([rec(i, size=300) for i in range(50)])
            accepted += 50
    assert accepted > 0 and store.count() == accepted
    assert store.disk_used() <= 300_000


def test_closed_store_refuses_everything(store: DlqStore) -> None:
    store.put_batch([rec(0)])
    store.close()
    store.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: store.put_batch([rec(1)]),
        lambda: store.fetch(1),
        lambda: store.delete([1]),
        lambda: store.mark_failed([1], "x", 3),
        store.count,
        store.stats,
        store.disk_used,
        lambda: store.purge(DlqFilter()),
    ]
    for call in calls:
        with pytest.raises(ShutdownError, match="closed"):
            call()


def test_context_manager_closes(make_store: StoreFactory) -> None:
    with make_store() as store:
        store.put_batch([rec(0)])
    with pytest.raises(ShutdownError):
        store.count()


def test_concurrent_writers_get_distinct_ids(store: DlqStore) -> None:
    def writer(w: int) -> list[int]:
        out: list[int] = []
        for b in range(10):
            out += store.put_batch([rec(w * 1000 + b * 10 + i) for i in range(10)])
            if b % 3 == 0:
                store.fetch(5)
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(writer, range(4)))
    every = [i for ids in results for i in ids]
    assert len(set(every)) == 400 and store.count() == 400
    for ids in results:  # each batch got a contiguous, increasing run
        assert ids == sorted(ids)


# -- the two stores agree -----------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.sampled_from(Reason), max_size=8)),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 40), max_size=5)),
        st.tuples(st.just("fail"), st.lists(st.integers(0, 40), max_size=5)),
        st.tuples(st.just("purge"), st.sampled_from(list(Reason))),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_lmdb_store_behaves_like_the_memory_store(steps: list[tuple[str, Any]]) -> None:
    clock = WallClock()
    with tempfile.TemporaryDirectory() as tmp:
        memory = MemoryDlqStore(clock=clock)
        real = LmdbDlqStore(
            Path(tmp) / "dlq", map_size=1 << 22, max_disk_bytes=1 << 21, sync=False, clock=clock
        )
        try:
            for n, (op, arg) in enumerate(steps):
                clock.now += 1
                if op == "put":
                    batch = [rec(n, topic=f"t{j % 3}", reason=r) for j, r in enumerate(arg)]
                    assert memory.put_batch(batch) == real.put_batch(batch)
                elif op == "delete":
                    assert memory.delete(arg) == real.delete(arg)
                elif op == "fail":
                    assert memory.mark_failed(arg, f"e{n}", 2) == real.mark_failed(arg, f"e{n}", 2)
                else:
                    f = DlqFilter(reasons=[arg])
                    assert memory.purge(f) == real.purge(f)
                assert memory.fetch(100, include_parked=True) == real.fetch(
                    100, include_parked=True
                )
                assert memory.fetch(7, after=3) == real.fetch(7, after=3)
                assert memory.count() == real.count()
            m, r = memory.stats(), real.stats()
            assert (m.total, m.parked, m.by_reason, m.by_topic) == (
                r.total,
                r.parked,
                r.by_reason,
                r.by_topic,
            )
        finally:
            real.close()


# -- LMDB only ----------------------------------------------------------------------------


def test_lmdb_reopens_with_records_and_counter(tmp_path: Path) -> None:
    path = tmp_path / "dlq"
    with LmdbDlqStore(path, map_size=1 << 24, max_disk_bytes=1 << 22) as store:
        ids = store.put_batch([rec(i) for i in range(10)])
        store.mark_failed(ids[:2], "x", max_retries=1)
        store.delete(ids[-3:])
    with LmdbDlqStore(path, map_size=1 << 24, max_disk_bytes=1 << 22) as store:
        assert [r.id for r in store.fetch(100, include_parked=True)] == ids[:7]
        assert [r.id for r in store.fetch(100)] == ids[2:7]
        [new] = store.put_batch([rec(99)])
        assert new == ids[-1] + 1


def test_lmdb_refuses_a_second_open_in_one_process(tmp_path: Path) -> None:
    first = LmdbDlqStore(tmp_path / "dlq", map_size=1 << 24, max_disk_bytes=1 << 22)
    with pytest.raises(DlqError, match="already open in this process"):
        LmdbDlqStore(tmp_path / "dlq" / ".." / "dlq", map_size=1 << 24, max_disk_bytes=1 << 22)
    first.close()
    LmdbDlqStore(tmp_path / "dlq", map_size=1 << 24, max_disk_bytes=1 << 22).close()


def test_lmdb_budget_must_leave_room_in_the_map(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most 90% of map_size"):
        LmdbDlqStore(tmp_path / "dlq", map_size=1 << 20, max_disk_bytes=1 << 20)
    with pytest.raises(ValueError):
        LmdbDlqStore(tmp_path / "dlq", max_disk_bytes=0)
    # A refused open leaves nothing locked behind.
    LmdbDlqStore(tmp_path / "dlq", map_size=1 << 24, max_disk_bytes=1 << 22).close()


def test_lmdb_refuses_a_directory_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "dlq"
    LmdbDlqStore(path, map_size=1 << 24, max_disk_bytes=1 << 22).close()
    env = lmdb.open(str(path), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(b"format", bytes([FORMAT_VERSION + 1]), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(DlqFormatError, match="format version 2"):
        LmdbDlqStore(path, map_size=1 << 24, max_disk_bytes=1 << 22)
    env = lmdb.open(str(path), max_dbs=3)  # the failed open released the directory
    env.close()


def test_lmdb_map_full_is_a_dlq_full_error_and_writes_nothing(tmp_path: Path) -> None:
    # A reader that never finishes pins old pages, so churn grows the file until the
    # map is full even though the live data stays under the budget.
    store = LmdbDlqStore(tmp_path / "dlq", map_size=1 << 20, max_disk_bytes=900_000, sync=False)
    pinned = store._env.begin()  # reaching in to simulate a reader that never finishes
    try:
        before = 0
        with pytest.raises(DlqFullError) as info:
            for _ in range(1000):
                ids = store.put_batch([rec(i, size=300) for i in range(100)])
                before = store.count()
                store.delete(ids)
                before = store.count()
        assert info.value.limit_name == "map_size"
        assert "map_size" in str(info.value)
        assert store.count() == before  # the failed transaction left nothing behind
    finally:
        pinned.abort()
    # With the reader gone the pages come back and writes succeed again.
    store.put_batch([rec(0)])
    store.close()


CHILD = textwrap.dedent(
    """
    import sys
    from shipper.dlq import DlqRecord, LmdbDlqStore
    from shipper.outcomes import Reason

    store = LmdbDlqStore(sys.argv[1], map_size=1 << 28, max_disk_bytes=1 << 27, sync=True)
    b = 0
    while True:
        batch = [
            DlqRecord(value=f"{b}:{i};".encode() * 10, topic=f"t{b % 3}",
                      reason=Reason.CIRCUIT_OPEN, key=str(i).encode())
            for i in range(200)
        ]
        ids = store.put_batch(batch)
        print(f"ACK {b} {ids[0]} {ids[-1]}", flush=True)
        b += 1
    """
)


@pytest.mark.parametrize("kill_after", [1, 7, 30])
def test_lmdb_survives_sigkill_mid_stream(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "dlq"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, cwd=REPO
    )
    assert child.stdout is not None
    pattern = re.compile(rb"ACK (\d+) (\d+) (\d+)")
    lines: list[bytes] = []
    while len(lines) < kill_after:
        line = child.stdout.readline()
        assert line.endswith(b"\n"), f"writer exited early with {child.wait()}"
        lines.append(line[:-1])
    os.kill(child.pid, signal.SIGKILL)  # while it is busy writing the next batches
    assert child.wait() == -signal.SIGKILL
    # Acks printed before the kill; only complete lines count, the kill may cut one.
    lines += child.stdout.read().split(b"\n")[:-1]
    child.stdout.close()
    acked = [
        (int(m[1]), int(m[2]), int(m[3])) for m in map(pattern.fullmatch, lines) if m is not None
    ]
    assert len(acked) >= kill_after

    with LmdbDlqStore(path, map_size=1 << 28, max_disk_bytes=1 << 27) as store:
        assert store.count() >= len(acked) * 200
        for b, first, last in acked:
            got = store.fetch(200, ids=range(first, last + 1))
            assert [r.id for r in got] == list(range(first, last + 1))
            assert all(r.value == f"{b}:{i};".encode() * 10 for i, r in enumerate(got))
        # Batches committed after the last printed ACK are whole or absent, never torn.
        assert store.count() % 200 == 0
        [new] = store.put_batch([rec(0)])
        assert new == store.count()
