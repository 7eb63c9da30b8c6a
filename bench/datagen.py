"""Deterministic, realistic JSON log lines for benchmarks and load tests.

Each line is one JSON object of about 300 bytes: an ISO 8601 timestamp, a level drawn
from a production-like mix (mostly info, some warn/debug, a little error), a message
built from templates with variable parts, labels (service, host, env, region) and
fields (tenant_id from 100 tenants, request id, duration, status). The same ``seed``
always gives the same lines, so runs are comparable.

Usage: ``python bench/datagen.py N OUTFILE`` writes N lines to OUTFILE.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta

import msgspec

__all__ = ["TENANTS", "generate"]

TENANTS = [f"tenant-{i:03d}" for i in range(100)]
_SERVICES = ["checkout", "payments", "search", "auth", "inventory", "gateway", "mailer"]
_ENVS = ["prod", "prod", "prod", "staging"]
_REGIONS = ["eu-west-1", "us-east-1", "ap-south-1"]
# (level, weight): roughly what a busy service emits.
_LEVELS = [
    ("info", 70),
    ("debug", 10),
    ("warn", 10),
    ("error", 6),
    ("trace", 2),
    ("fatal", 1),
    ("critical", 1),
]
_TEMPLATES = [
    "GET /api/v1/{thing}/{id} completed with status {status} in {ms} ms",
    "POST /api/v1/{thing} accepted, queued job {id} for user {user}",
    "cache miss for {thing}:{id}, loading from primary database replica {n}",
    "retrying call to {thing}-service (attempt {n} of 5) after timeout of {ms} ms",
    "user {user} signed in from {ip} using {agent}",
    "payment {id} for order {order} authorised, amount {amount} EUR",
    "connection pool for {thing} at {n}/64 connections, waiting requests {ms}",
    "failed to deliver webhook {id} to {ip}: connection reset by peer",
    "scheduled task {thing}-cleanup removed {n} expired records in {ms} ms",
]
_THINGS = ["orders", "carts", "users", "products", "invoices", "sessions", "shipments"]
_AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12.0", "curl/8.5.0", "python-httpx/0.27"]
_encoder = msgspec.json.Encoder()


def generate(n: int, seed: int = 42) -> list[bytes]:
    """Return ``n`` JSON log lines (without newlines), the same for the same seed."""
    rng = random.Random(seed)
    levels = [lvl for lvl, _ in _LEVELS]
    weights = [w for _, w in _LEVELS]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out: list[bytes] = []
    for i in range(n):
        svc = rng.choice(_SERVICES)
        ts = start + timedelta(milliseconds=i * 7 + rng.randrange(7))
        message = rng.choice(_TEMPLATES).format(
            thing=rng.choice(_THINGS),
            id=rng.randrange(10**6, 10**7),
            status=rng.choice((200, 200, 200, 201, 204, 400, 404, 500, 503)),
            ms=rng.randrange(1, 2500),
            user=f"u{rng.randrange(10**5):05d}",
            n=rng.randrange(1, 64),
            ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            agent=rng.choice(_AGENTS),
            order=f"ord-{rng.randrange(10**8):08d}",
            amount=f"{rng.randrange(100, 100000) / 100:.2f}",
        )
        obj = {
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": rng.choices(levels, weights)[0],
            "message": message,
            "labels": {
                "service": svc,
                "host": f"{svc}-{rng.randrange(4):02d}.internal",
                "env": rng.choice(_ENVS),
                "region": rng.choice(_REGIONS),
            },
            "fields": {
                "tenant_id": rng.choice(TENANTS),
                "request_id": f"{rng.getrandbits(64):016x}",
                "duration_ms": rng.randrange(1, 2500),
            },
        }
        out.append(_encoder.encode(obj))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python bench/datagen.py N OUTFILE", file=sys.stderr)
        return 2
    n = int(argv[1])
    lines = generate(n)
    with open(argv[2], "wb") as f:
        for line in lines:
            f.write(line + b"\n")
    avg = sum(map(len, lines)) / max(n, 1)
    print(f"wrote {n} lines to {argv[2]} (average {avg:.0f} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
