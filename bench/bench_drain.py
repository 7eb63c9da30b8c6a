"""How fast the shipper drains its DLQ into Kafka once the broker is back.

Writes N records (datagen entries, ~300 bytes) for a fresh topic into an LMDB DLQ as
if an outage had parked them, starts a Shipper on that DLQ (it replays on start, with
its paced steps), and times until the DLQ is empty; then checks the topic holds N.

    .venv/bin/python bench/bench_drain.py [--entries 100000] [--batch-size 50]

Needs the local broker (scripts/kafka-local up).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datagen import generate

from actors.pipeline import Shipper
from shipper.dlq import DlqRecord, LmdbDlqStore
from shipper.outcomes import Reason
from shipper.testing import LocalKafka, consume_all, create_topic, delete_topic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=50, help="reprocessing_config.batch_size")
    args = ap.parse_args()
    kafka = LocalKafka.ensure_up()
    topic = create_topic(kafka.client_config(), partitions=6)
    dlq = tempfile.mkdtemp(prefix="drain-dlq-")
    now = time.time()
    values = generate(args.entries)
    with LmdbDlqStore(dlq) as store:
        for i in range(0, len(values), 1000):
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
                    for v in values[i : i + 1000]
                ]
            )
    cfg = {
        "sinks": {
            "kafka": {
                "enabled": True,
                "brokers": [kafka.bootstrap],
                "topic": topic,
                "compression": "snappy",
                "batch_timeout": "20ms",
                "dlq_config": {
                    "path": dlq,
                    "reprocessing_config": {"batch_size": args.batch_size, "interval": "5m"},
                },
            }
        },
        "metrics": {"enabled": False},
    }
    try:
        t0 = time.monotonic()
        with Shipper(cfg) as s:  # replays on start
            while s.dlq_count() > 0:
                time.sleep(0.1)
            took = time.monotonic() - t0
        got = len(consume_all(kafka.client_config(), topic, expected=args.entries, timeout=120))
    finally:
        delete_topic(kafka.client_config(), topic)
    print(
        f"drained {args.entries:,} DLQ records into Kafka in {took:.2f}s "
        f"({args.entries / took:,.0f} entries/s, start-up of the Shipper included); "
        f"topic holds {got:,}"
    )
    return 0 if got >= args.entries else 1


if __name__ == "__main__":
    sys.exit(main())
