"""The file source's policy (shipper.sources.follow), with a fake hand-over and real files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shipper.config.sources import FileGroupConfig, TailConfig
from shipper.outcomes import EntryFailure, Reason, SubmissionResult
from shipper.sources.checkpoints import MemoryCheckpoints
from shipper.sources.files import Block, FileTailer
from shipper.sources.follow import FileFollower
from shipper.telemetry import MetricsRecorder


def follower(
    tmp_path: Path,
    send: Any,
    store: MemoryCheckpoints | None = None,
    max_lines: int = 1000,
    **tail: Any,
) -> FileFollower:
    opts: dict[str, Any] = {"poll_interval": 0.05, "watch": False, **tail}
    group = FileGroupConfig(paths=[str(tmp_path / "*.log")])
    tailer = FileTailer([group], store or MemoryCheckpoints(), TailConfig(**opts))
    return FileFollower(
        tailer, send, MetricsRecorder("test"), max_inflight_lines=max_lines, resend_seconds=0.05
    )


def write(path: Path, n: int, start: int = 0) -> None:
    with path.open("ab") as fh:
        fh.write(b"".join(b"line %d\n" % i for i in range(start, start + n)))


def delivered(n: int) -> SubmissionResult:
    return SubmissionResult(submitted=n, delivered_by_topic={"logs": n})


def refused(n: int) -> SubmissionResult:
    # Kafka refused them and the DLQ was full: each is a failure the DLQ refused.
    failures = [EntryFailure(Reason.ERROR, "refused", "logs")] * n
    return SubmissionResult(submitted=n, dlq_refused=n, failures=failures)


async def follow_until(f: FileFollower, done: Any, limit: float = 5.0) -> None:
    task = asyncio.get_running_loop().create_task(f.run())
    async with asyncio.timeout(limit):
        while not done():
            await asyncio.sleep(0.01)
    f.stop_intake()
    await task


def test_every_line_is_delivered_acknowledged_and_checkpointed(tmp_path: Path) -> None:
    write(tmp_path / "a.log", 50)
    got: list[bytes] = []

    async def send(b: Block) -> SubmissionResult:
        got.extend(b.data.splitlines())
        return delivered(b.lines)

    async def main() -> None:
        store = MemoryCheckpoints()
        f = follower(tmp_path, send, store)
        await follow_until(f, lambda: f.counts["lines"] == 50)
        assert await f.drain(1.0) == 0
        counts = f.close()
        assert counts["lines"] == 50 and counts["resends"] == 0
        assert f.stats.delivered == 50
        assert [c.offset for c in store.data.values()] == [(tmp_path / "a.log").stat().st_size]

    asyncio.run(main())
    assert got == [b"line %d" % i for i in range(50)]


def test_a_refused_block_goes_again_until_it_is_taken(tmp_path: Path) -> None:
    write(tmp_path / "a.log", 10)
    calls: list[int] = []

    async def send(b: Block) -> SubmissionResult:
        calls.append(b.lines)
        if len(calls) == 1:
            return refused(b.lines)  # Kafka down and the DLQ full
        if len(calls) == 2:
            raise RuntimeError("batcher restarting")
        return delivered(b.lines)

    async def main() -> FileFollower:
        f = follower(tmp_path, send)
        await follow_until(f, lambda: f.counts["lines"] == 10)
        return f

    f = asyncio.run(main())
    assert calls == [10, 10, 10]
    assert f.counts["resends"] == 2
    assert f.stats.delivered == 10 and f.stats.failed == 0
    problems = f.rec.snapshot()["counters"]["log_capturer_source_problems_total"]
    assert sum(v for k, v in problems.items() if "resend" in k) == 2


def test_reading_waits_for_room_in_the_budget(tmp_path: Path) -> None:
    write(tmp_path / "a.log", 100)
    gate = asyncio.Event()
    peak = 0

    async def main() -> None:
        f: FileFollower

        async def send(b: Block) -> SubmissionResult:
            nonlocal peak
            peak = max(peak, f.inflight_lines)
            await gate.wait()
            return delivered(b.lines)

        f = follower(tmp_path, send, max_lines=30, read_bytes=4096)
        task = asyncio.get_running_loop().create_task(f.run())
        await asyncio.sleep(0.3)
        assert 0 < f.inflight_lines <= 30  # read up to the budget, then waited
        assert f.counts["lines"] == 0
        gate.set()
        async with asyncio.timeout(5):
            while f.counts["lines"] < 100:
                await asyncio.sleep(0.01)
        f.stop_intake()
        await task

    asyncio.run(main())
    assert peak <= 30


def test_a_block_refused_after_the_stop_is_left_for_the_next_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    write(log, 5)
    store = MemoryCheckpoints()
    release = asyncio.Event()

    async def main() -> FileFollower:
        async def send(b: Block) -> SubmissionResult:
            await release.wait()
            return refused(b.lines)

        f = follower(tmp_path, send, store)
        task = asyncio.get_running_loop().create_task(f.run())
        async with asyncio.timeout(5):
            while not f.inflight:
                await asyncio.sleep(0.01)
        f.stop_intake()
        await task
        release.set()
        assert await f.drain(2.0) == 0
        f.close()
        return f

    f = asyncio.run(main())
    assert f.counts["lines"] == 0 and f.counts["resends"] == 0
    assert f.stats.failed == 5  # counted for this run...
    # ...and not acknowledged: the next start reads the same lines again.
    again: list[bytes] = []

    async def send_ok(b: Block) -> SubmissionResult:
        again.extend(b.data.splitlines())
        return delivered(b.lines)

    async def second() -> None:
        f2 = follower(tmp_path, send_ok, store)
        await follow_until(f2, lambda: f2.counts["lines"] == 5)
        f2.close()

    asyncio.run(second())
    assert again == [b"line %d" % i for i in range(5)]


def test_blocks_are_handed_over_in_the_order_they_were_read(tmp_path: Path) -> None:
    write(tmp_path / "a.log", 3000)
    firsts: list[int] = []

    async def send(b: Block) -> SubmissionResult:
        firsts.append(b.first_line)  # before the first await: the hand-over's start
        await asyncio.sleep(0.01 * (len(firsts) % 3))
        return delivered(b.lines)

    async def main() -> None:
        f = follower(tmp_path, send, read_bytes=4096, max_inflight_bytes=1 << 20)
        await follow_until(f, lambda: f.counts["lines"] == 3000)
        f.close()

    asyncio.run(main())
    assert firsts == sorted(firsts) and len(firsts) > 1
