"""``make demo``: the shipper's main job end to end on local Kafka and local Ray.

Generates realistic sample logs (mixed levels, 100 tenants, some with a
``kafka_topic`` label, a few oversized), ships them with snappy compression and hash
partitioning on ``tenant_id``, reads every topic back and prints what arrived where,
per-tenant partition placement and the rate.

    python -m actors.demo [--entries 200000] [--keep-topics]

It expects the broker of ``scripts/kafka-local up`` (``make demo`` starts it).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from shipper.testing import LocalKafka, consume_all, create_topic, delete_topic

DEFAULT_TOPIC = "logs"
HIGH = "logs-high-priority"
LOW = "logs-low-priority"
AUDIT = "audit-logs"  # reached only through the kafka_topic label
TOPICS = {DEFAULT_TOPIC: 6, HIGH: 3, LOW: 3, AUDIT: 1}
MAX_MESSAGE_BYTES = 64 * 1024

LEVELS = (
    ["debug"] * 15
    + ["info"] * 55
    + ["warn"] * 15
    + ["error"] * 10
    + ["trace"] * 3
    + ["fatal", "critical"]
)
SERVICES = ["api", "billing", "auth", "search", "worker", "gateway"]
ACTIONS = ["GET /v1/orders", "POST /v1/payments", "login", "reindex", "sync", "export"]


def sample_lines(n: int, seed: int = 7) -> list[bytes]:
    """``n`` JSON log lines; about 1 in 20 carries the audit label, 3 are oversized."""
    rng = random.Random(seed)
    oversized = set(rng.sample(range(n), 3)) if n >= 3 else set()
    base = 1_764_000_000.0
    out = []
    for i in range(n):
        service = rng.choice(SERVICES)
        entry: dict[str, Any] = {
            "message": f"{rng.choice(ACTIONS)} took {rng.randint(1, 900)}ms "
            f"status={rng.choice([200, 200, 200, 201, 404, 500])} "
            f"request_id={rng.getrandbits(48):012x}",
            "level": rng.choice(LEVELS),
            "timestamp": base + i * 0.001,
            "labels": {"service": service, "host": f"{service}-{rng.randint(1, 4)}", "env": "demo"},
            "fields": {"tenant_id": f"tenant-{rng.randint(1, 100):03d}", "seq": i},
        }
        if rng.random() < 0.05:
            entry["labels"]["kafka_topic"] = AUDIT
        if i in oversized:
            entry["fields"]["payload"] = "x" * (MAX_MESSAGE_BYTES + 1000)
        out.append(json.dumps(entry, separators=(",", ":")).encode())
    return out


def config(kafka: LocalKafka) -> dict[str, Any]:
    return {
        "sinks": {
            "kafka": {
                "enabled": True,
                "brokers": [kafka.bootstrap],
                "topic": DEFAULT_TOPIC,
                "compression": "snappy",
                "batch_size": 2000,
                "batch_timeout": "50ms",
                "max_message_bytes": MAX_MESSAGE_BYTES,
                "partitioning": {"enabled": True, "strategy": "hash", "key_field": "tenant_id"},
                "dlq_config": {"path": "data/demo-dlq"},
            }
        },
        "metrics": {"enabled": False},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m actors.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--keep-topics", action="store_true", help="do not recreate the demo topics")
    args = ap.parse_args(argv)

    from actors import local_ray

    local_ray.prepare()
    from actors.pipeline import Shipper

    kafka = LocalKafka.ensure_up()
    admin = kafka.client_config()
    if not args.keep_topics:
        shutil.rmtree("data/demo-dlq", ignore_errors=True)  # a fresh run starts empty
        for name in TOPICS:
            delete_topic(admin, name)
        time.sleep(1.0)  # deletions settle before the names are reused
    for name, parts in TOPICS.items():
        try:
            create_topic(admin, name, partitions=parts)
        except Exception:
            pass

    print(f"demo: generating {args.entries:,} sample log entries", flush=True)
    lines = sample_lines(args.entries)
    blocks = [b"\n".join(lines[i : i + 5000]) for i in range(0, len(lines), 5000)]
    print("demo: starting Ray and the shipper actors", flush=True)
    with Shipper(config(kafka)) as shipper:
        t0 = time.monotonic()
        for i, blob in enumerate(blocks):
            shipper.submit_lines(blob, first_line=i * 5000 + 1)
        shipper.flush()
        elapsed = time.monotonic() - t0
        stats = shipper.stats()
        failures = stats.failed_by_reason
        dlq = shipper.dlq_stats()
    print(
        f"\nshipped {stats.entries_in:,} entries in {elapsed:.2f}s: "
        f"{stats.delivered / elapsed:,.0f} entries/s\n"
    )
    print(stats.table())

    print("\nreading the topics back:")
    expected = dict(stats.delivered_by_topic)
    tenant_parts: dict[tuple[str, str], set[int]] = defaultdict(set)
    ok = True
    for name in TOPICS:
        msgs = consume_all(admin, name, expected=expected.get(name, 0), timeout=120)
        per_part = Counter(m.partition() or 0 for m in msgs)
        levels = Counter(json.loads(m.value() or b"{}")["level"] for m in msgs)
        for m in msgs:
            key = m.key()
            tenant_parts[(name, key.decode() if key else "-")].add(m.partition() or 0)
        match = "ok" if len(msgs) == expected.get(name, 0) else "MISMATCH"
        ok &= match == "ok"
        print(
            f"  {name:<20} {len(msgs):>8,} entries  partitions {dict(sorted(per_part.items()))}  "
            f"levels {dict(levels.most_common())}  [{match}]"
        )
    split = [t for t, ps in tenant_parts.items() if len(ps) > 1 and t[1] != "-"]
    tenants = {t for _, t in tenant_parts}
    print(f"\ntenants seen: {len(tenants)}; tenants split across partitions within a topic: "
          f"{'none' if not split else split[:5]}")  # fmt: skip
    if dlq is not None and dlq.total:
        print(
            f"dead-letter queue ({config(kafka)['sinks']['kafka']['dlq_config']['path']}): "
            f"{dlq.total} entries by reason { {str(k): v for k, v in dlq.by_reason.items()} } "
            "(the oversized ones, kept for `shipper dlq list`)"
        )
    if failures:
        print(f"failed: {dict(failures)}")
    return 0 if ok and stats.entries_in == args.entries else 1


if __name__ == "__main__":
    sys.exit(main())
