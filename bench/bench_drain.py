"""How fast the DLQ drains into Kafka once the broker is back, against the pipeline.

In one run, on the same data, broker and machine:

1. **pipeline**: N datagen lines (~300 bytes) through ``Shipper.submit_lines`` in
   blobs of 5,000 (the API path), timed from the first submit to the last ack;
2. **drain**: the same N lines written into an LMDB DLQ as if an outage had parked
   them, then a Shipper started on that DLQ (it replays on start, with the paced
   ramp), timed from the Shipper being up until the DLQ is empty; the first steps'
   sizes are printed so the ramp can be seen.

Both use the spec's defaults (batch_size 1000, batch_timeout 5s, reprocessing
batch_size 50) with snappy. Both topics are read back and must hold N. The ratio
drain/pipeline is the figure the design holds to (at least 0.5).

    .venv/bin/python bench/bench_drain.py [--entries 200000] [--batch-size 50]

Needs the local broker (scripts/kafka-local up).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datagen import generate

from actors import local_ray

local_ray.prepare()

from actors.pipeline import Shipper  # noqa: E402
from shipper.dlq import DlqRecord, LmdbDlqStore  # noqa: E402
from shipper.outcomes import Reason  # noqa: E402
from shipper.testing import LocalKafka, consume_all, create_topic, delete_topic  # noqa: E402


def config(kafka: LocalKafka, topic: str, dlq: str, batch_size: int) -> dict[str, Any]:
    return {
        "sinks": {
            "kafka": {
                "enabled": True,
                "brokers": [kafka.bootstrap],
                "topic": topic,
                "compression": "snappy",
                "routing": {"enabled": False},
                "dlq_config": {
                    "path": dlq,
                    "reprocessing_config": {"batch_size": batch_size, "interval": "5m"},
                },
            }
        },
        "metrics": {"enabled": False},
    }


def pipeline(kafka: LocalKafka, topic: str, values: list[bytes], batch_size: int) -> float:
    blobs = [b"\n".join(values[i : i + 5000]) for i in range(0, len(values), 5000)]
    with (
        tempfile.TemporaryDirectory(prefix="drain-pipe-") as dlq,
        Shipper(config(kafka, topic, dlq, batch_size)) as s,
    ):
        s.submit_lines(b'{"message":"warm-up"}').result(60)
        t0 = time.monotonic()
        acks = [s.submit_lines(b) for b in blobs]
        s.flush(timeout=600)
        took = time.monotonic() - t0
        delivered = sum(a.result().delivered for a in acks)
    assert delivered == len(values), f"pipeline delivered {delivered} of {len(values)}"
    return took


def drain(
    kafka: LocalKafka, topic: str, values: list[bytes], batch_size: int
) -> tuple[float, float]:
    dlq = tempfile.mkdtemp(prefix="drain-dlq-")
    now = time.time()
    with LmdbDlqStore(dlq, map_size=4 << 30, max_disk_bytes=2 << 30) as store:
        for i in range(0, len(values), 10_000):
            store.put_batch(
                [
                    DlqRecord(
                        value=v,
                        topic=topic,
                        reason=Reason.TIMEOUT,
                        error="outage",
                        first_failure=now,
                        last_failure=now,
                    )
                    for v in values[i : i + 10_000]
                ]
            )
    cfg = config(kafka, topic, dlq, batch_size)
    cfg["sinks"]["kafka"]["dlq_config"].update(map_size_bytes=4 << 30, max_disk_bytes=2 << 30)
    t0 = time.monotonic()
    with Shipper(cfg) as s:  # replays on start
        up = time.monotonic()
        while s.dlq_count() > 0:
            time.sleep(0.05)
        done = time.monotonic()
    return done - up, up - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=50, help="reprocessing_config.batch_size")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    kafka = LocalKafka.ensure_up()
    admin = kafka.client_config()
    values = generate(args.entries)
    topics = [create_topic(admin, partitions=6) for _ in range(2)]
    try:
        took_pipe = pipeline(kafka, topics[0], values, args.batch_size)
        took_drain, startup = drain(kafka, topics[1], values, args.batch_size)
        # The pipeline's topic also holds its warm-up entry.
        got = [
            len(consume_all(admin, t, expected=args.entries + extra, timeout=180)) - extra
            for t, extra in zip(topics, (1, 0), strict=True)
        ]
    finally:
        for t in topics:
            delete_topic(admin, t)
    pipe_rate = args.entries / took_pipe
    drain_rate = args.entries / took_drain
    figures = {
        "entries": args.entries,
        "pipeline_s": round(took_pipe, 3),
        "pipeline_per_s": round(pipe_rate),
        "drain_s": round(took_drain, 3),
        "drain_per_s": round(drain_rate),
        "drain_over_pipeline": round(drain_rate / pipe_rate, 3),
        "shipper_startup_s": round(startup, 3),
        "topics_hold": got,
    }
    print(
        f"pipeline: {args.entries:,} entries in {took_pipe:.2f}s ({pipe_rate:,.0f}/s)\n"
        f"drain:    {args.entries:,} DLQ records in {took_drain:.2f}s ({drain_rate:,.0f}/s) "
        f"after a {startup:.2f}s start-up\n"
        f"drain / pipeline = {drain_rate / pipe_rate:.2f}; topics hold {got}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if got == [args.entries, args.entries] else 1


if __name__ == "__main__":
    sys.exit(main())
