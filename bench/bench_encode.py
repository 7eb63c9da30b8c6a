"""Decode and encode cost of the entry hot path, in microseconds per 1,000 entries.

Uses :func:`bench.datagen.generate` lines (about 300 bytes of JSON each) and reports
the median of repeated runs for: ``decode_lines`` on bytes lines, ``from_objects`` on
dicts, ``encode_entries``, routing and hash-partition key extraction plus assignment.
The issue's target is encode under 1,000 µs per 1,000 entries on the project machine.

Usage: ``python bench/bench_encode.py [--n 1000] [--repeats 200]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from datagen import generate

from shipper.entries import decode_lines, encode_entries, from_objects
from shipper.packed import Packed
from shipper.partitioning import HashPartitioner
from shipper.routing import TopicRouter


def median_us(fn: Callable[[], object], repeats: int, per: int, n: int) -> float:
    """Median wall time of ``fn`` in µs, scaled to ``per`` entries out of ``n``."""
    fn()  # warm caches and lazily built state
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6 * per / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="entries per batch")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    n, repeats = args.n, args.repeats
    lines = generate(n)
    dicts = [msgspec.json.decode(x) for x in lines]
    entries, errors = decode_lines(lines)
    assert not errors and len(entries) == n
    values = encode_entries(entries)
    router = TopicRouter("logs")
    hasher = HashPartitioner("tenant_id")
    keys = hasher.keys_for(entries)
    avg = sum(map(len, values)) / n

    cases: list[tuple[str, Callable[[], object]]] = [
        ("decode_lines (bytes JSON lines)", lambda: decode_lines(lines)),
        ("from_objects (dicts)", lambda: from_objects(dicts)),
        ("encode_entries", lambda: encode_entries(entries)),
        ("route (label > level > default)", lambda: router.route(entries)),
        ("hash keys_for (tenant_id)", lambda: hasher.keys_for(entries)),
        ("hash assign (12 partitions)", lambda: hasher.assign(keys, 12)),
        ("Packed.of (one buffer for transport)", lambda: Packed.of(values)),
    ]
    print(f"{n} entries per batch, {avg:.0f} bytes average value, median of {repeats} runs")
    for name, fn in cases:
        us = median_us(fn, repeats, 1000, n)
        print(f"  {name:<34} {us:8.1f} µs per 1000 entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
