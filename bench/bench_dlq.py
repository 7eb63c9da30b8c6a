"""DLQ write and drain rates on the real LMDB store.

Writes ``--batches`` batches of ``--batch-size`` entries of ``--value-bytes`` bytes in
each durability mode (see ``shipper/dlq.py``), then reads the durable store back
(fetch only), drains it the way the reprocessor does (fetch + delete, durable), and
times a ``stats()`` scan. Prints one table.

    .venv/bin/python bench/bench_dlq.py                    # 100 x 1000 x 300 B
    .venv/bin/python bench/bench_dlq.py --batches 300 --dir /var/tmp

Put ``--dir`` on the disk the DLQ will live on: the durable figures are mostly the
cost of that disk's flush.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shipper.dlq import DlqRecord, LmdbDlqStore
from shipper.outcomes import Reason


@dataclass
class Row:
    what: str
    entries: int
    seconds: float
    payload_bytes: int
    per_batch_ms: list[float]

    def cells(self) -> list[str]:
        rate = self.entries / self.seconds if self.seconds else float("inf")
        mbs = self.payload_bytes / self.seconds / 1e6 if self.seconds else float("inf")
        if self.per_batch_ms:
            ms = sorted(self.per_batch_ms)
            p50 = f"{statistics.median(ms):.2f}"
            p99 = f"{ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.2f}"
        else:
            p50 = p99 = "-"
        return [
            self.what,
            f"{self.entries:,}",
            f"{self.seconds:.3f}",
            f"{rate:,.0f}",
            f"{mbs:.1f}",
            p50,
            p99,
        ]


def make_batch(batch_no: int, size: int, value_bytes: int) -> list[DlqRecord]:
    # Varied bytes (not a repeated pattern) so nothing along the way gets it for free.
    seed = os.urandom(value_bytes)
    return [
        DlqRecord(
            value=seed[i % value_bytes :] + seed[: i % value_bytes],
            topic=f"bench-{batch_no % 4}",
            key=f"k{i}".encode(),
            reason=Reason.CIRCUIT_OPEN,
            error="Failed to connect to Kafka broker",
        )
        for i in range(size)
    ]


def bench_writes(
    path: Path, label: str, sync: bool, metasync: bool, args: argparse.Namespace
) -> Row:
    batches = [make_batch(b, args.batch_size, args.value_bytes) for b in range(args.batches)]
    times: list[float] = []
    with LmdbDlqStore(
        path,
        map_size=args.map_size,
        max_disk_bytes=args.map_size // 2,
        sync=sync,
        metasync=metasync,
    ) as store:
        start = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            store.put_batch(batch)
            times.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - start
    n = args.batches * args.batch_size
    return Row(label, n, elapsed, n * args.value_bytes, times)


def bench_read(path: Path, args: argparse.Namespace) -> Row:
    times: list[float] = []
    n = 0
    with LmdbDlqStore(path, map_size=args.map_size, max_disk_bytes=args.map_size // 2) as store:
        start = time.perf_counter()
        after = 0
        while True:
            t0 = time.perf_counter()
            got = store.fetch(args.batch_size, after=after)
            if not got:
                break
            times.append((time.perf_counter() - t0) * 1000)
            n += len(got)
            after = got[-1].id
        elapsed = time.perf_counter() - start
    return Row("read (fetch pages)", n, elapsed, n * args.value_bytes, times)


def bench_stats(path: Path, args: argparse.Namespace) -> Row:
    with LmdbDlqStore(path, map_size=args.map_size, max_disk_bytes=args.map_size // 2) as store:
        start = time.perf_counter()
        s = store.stats()
        elapsed = time.perf_counter() - start
    return Row("stats() scan", s.total, elapsed, s.total * args.value_bytes, [])


def bench_drain(path: Path, args: argparse.Namespace) -> Row:
    times: list[float] = []
    n = 0
    with LmdbDlqStore(path, map_size=args.map_size, max_disk_bytes=args.map_size // 2) as store:
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            got = store.fetch(args.batch_size)
            if not got:
                break
            store.delete([r.id for r in got])
            times.append((time.perf_counter() - t0) * 1000)
            n += len(got)
        elapsed = time.perf_counter() - start
        assert store.count() == 0
    return Row("drain (fetch+delete, durable)", n, elapsed, n * args.value_bytes, times)


def fsync_ms(directory: Path, rounds: int = 50) -> float:
    """Median cost of a 4 KiB write + fdatasync here: what one durable commit waits for."""
    path = directory / "fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(rounds):
            os.pwrite(fd, os.urandom(4096), (i % 16) * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--value-bytes", type=int, default=300)
    ap.add_argument("--map-size", type=int, default=4 << 30)
    ap.add_argument("--dir", default=None, help="parent directory for the LMDB files")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-dlq-", dir=args.dir))
    rows: list[Row] = []
    try:
        flush = fsync_ms(root)
        modes = [
            ("write sync+metasync (durable)", True, True, "durable"),
            ("write sync, no metasync", True, False, "nometa"),
            ("write no sync", False, False, "nosync"),
        ]
        for label, sync, metasync, sub in modes:
            rows.append(bench_writes(root / sub, label, sync, metasync, args))
        rows.append(bench_read(root / "durable", args))
        rows.append(bench_stats(root / "durable", args))
        rows.append(bench_drain(root / "durable", args))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    head = ["operation", "entries", "seconds", "entries/s", "MB/s", "ms/batch p50", "p99"]
    table = [head] + [r.cells() for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print(
        f"DLQ on LMDB: {args.batches} batches x {args.batch_size} entries x "
        f"{args.value_bytes} B values, dir {args.dir or tempfile.gettempdir()}, "
        f"fdatasync of 4 KiB there: {flush:.3f} ms (median)"
    )
    for j, row in enumerate(table):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
