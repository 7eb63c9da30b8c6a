"""confluent-kafka's two ways in, on the local broker: a produce() call per message
against one produce_batch() call per 1,000, each with a delivery callback per message
(what the shipper needs to know every message's fate) and without.

Usage: ``python bench/bench_produce.py [--entries N] [--codec snappy]``

The Producer actor uses produce_batch; this shows what that choice is worth.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datagen

from shipper.testing import LocalKafka, create_topic


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(bootstrap: str, codec: str, values: list[bytes], mode: str, callbacks: bool) -> str:
    from confluent_kafka import Producer

    topic = f"bench-produce-{time.time_ns()}"
    create_topic({"bootstrap.servers": bootstrap}, topic, partitions=6)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": 1,
            "batch.num.messages": 1000,
            "acks": "1",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    p.produce(topic, b"warm-up")
    p.flush(30)
    acked = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked[0] += 1

    cb = on_delivery if callbacks else None
    n = len(values)
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(0, n, 1000):
        part = values[i : i + 1000]
        if mode == "produce":
            for v in part:
                if cb is None:
                    p.produce(topic, v)
                else:
                    p.produce(topic, v, on_delivery=cb)
        else:
            msgs = [{"value": v} for v in part]
            if cb is None:
                p.produce_batch(topic, msgs)
            else:
                p.produce_batch(topic, msgs, on_delivery=cb)
        p.poll(0)
    left = p.flush(120)
    t1, c1 = time.perf_counter(), _cpu()
    assert left == 0
    return (
        f"| {mode} | {'yes' if callbacks else 'no'} | {n / (t1 - t0):,.0f} | "
        f"{(c1 - c0) / n * 1e6:.2f} | {acked[0] if callbacks else '-'} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--codec", default="snappy")
    args = p.parse_args(argv)
    bootstrap = LocalKafka.ensure_up().bootstrap
    values = datagen.generate(args.entries)
    print(f"{args.entries:,} entries, {args.codec}, broker {bootstrap}")
    print("| call | callback per message | msg/s | CPU us per message | acked |")
    print("|---|---|---|---|---|")
    for mode in ("produce", "produce_batch"):
        for callbacks in (True, False):
            print(run(bootstrap, args.codec, values, mode, callbacks), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
