"""What one Ray actor call costs on this machine, by argument size and by how the
payload travels: inline in the call, or through the object store as a reference.

Usage: ``python bench/bench_transport.py [--calls N]``

For each case a source actor makes N sequential calls to a sink actor; the table
gives wall time per call and the CPU time per call of the source, the sink and Ray's
daemons (raylet, GCS). The shipper's payload design (``actors/payload.py``) follows
from these figures: a call costs about a millisecond of CPU on each side whatever it
carries, and every megabyte carried inline costs a few more.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

import numpy as np
import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from contenders import descendants


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@ray.remote(num_cpus=0)
class Sink:
    def cpu(self) -> float:
        return _cpu()

    async def take(self, x: Any) -> int:
        if isinstance(x, list):  # a reference: read it (zero-copy for numpy)
            x = await x[0]
        return len(memoryview(x))


@ray.remote(num_cpus=0)
class Source:
    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.kept: list[Any] = []

    def cpu(self) -> float:
        return _cpu()

    def keep(self, size: int) -> None:
        self.kept = [ray.put(np.zeros(size, dtype=np.uint8))]

    async def run(self, mode: str, size: int, n: int) -> None:
        blob = b"x" * size
        for _ in range(n):
            if mode == "inline bytes":
                arg: Any = blob
            elif mode == "put + reference":
                arg = [ray.put(np.frombuffer(blob, dtype=np.uint8))]
            else:  # "forward a reference"
                arg = self.kept
            await self.sink.take.remote(arg)


def _daemons_cpu() -> float:
    total = 0.0
    hz = os.sysconf("SC_CLK_TCK")
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if b"raylet" not in cmd and b"gcs_server" not in cmd:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz
        except OSError:
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=100)
    args = p.parse_args(argv)
    ray.init(include_dashboard=False, logging_level="ERROR")
    sink = Sink.remote()  # type: ignore[attr-defined]
    src = Source.remote(sink)  # type: ignore[attr-defined]
    print("| payload | how | wall ms/call | source CPU ms | sink CPU ms | raylet+GCS CPU ms |")
    print("|---|---|---|---|---|---|")
    cases = [(1_000, "inline bytes"), (160_000, "inline bytes"), (1_600_000, "inline bytes")]
    cases += [(1_600_000, "put + reference"), (1_600_000, "forward a reference")]
    for size, mode in cases:
        ray.get(src.keep.remote(size))
        ray.get(src.run.remote(mode, size, 5))  # warm up
        a = ray.get([src.cpu.remote(), sink.cpu.remote()])
        d0, t0 = _daemons_cpu(), time.perf_counter()
        ray.get(src.run.remote(mode, size, args.calls))
        t1, d1 = time.perf_counter(), _daemons_cpu()
        b = ray.get([src.cpu.remote(), sink.cpu.remote()])
        n = args.calls
        print(
            f"| {size:,} B | {mode} | {(t1 - t0) / n * 1e3:.2f} | {(b[0] - a[0]) / n * 1e3:.2f} "
            f"| {(b[1] - a[1]) / n * 1e3:.2f} | {(d1 - d0) / n * 1e3:.2f} |"
        )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
