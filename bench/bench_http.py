"""The HTTP intake two ways, on the same data, broker and machine: which to ship.

- **actor**: the shipper's own intake, an aiohttp server inside an actor
  (``sources.http``), which validates, routes and feeds the node's Batchers itself;
- **serve**: the same request handling in a Ray Serve deployment (Ray's HTTP
  ingress: an HTTP proxy actor in front of replica actors, which scale across
  nodes), feeding the same Batchers.

A client process posts N lines in requests of 5,000 lines from 4 threads; the rate is
the client's, from the first request to the last answer. Both topics must hold N.

    .venv/bin/python bench/bench_http.py [--entries 200000]

Ray Serve is not a dependency of the shipper: ``pip install "ray[serve]==2.60.0"``
first (the script says so when it is missing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_sources import CLIENT, Topics, config
from datagen import generate

from actors import local_ray

local_ray.prepare()

from actors.pipeline import Shipper  # noqa: E402
from shipper.testing import LocalKafka  # noqa: E402


def post_all(url: str, data: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, url, str(data), "5000"],
        capture_output=True,
        timeout=900,
        check=True,
    )
    res: dict[str, Any] = json.loads(out.stdout)
    return res


def actor(kafka: LocalKafka, data: Path, n: int, work: Path) -> dict[str, Any]:
    topics = Topics(kafka, "http-actor")
    cfg = config(kafka, topics.base, str(work / "dlq-a"))
    cfg["sources"] = {"http": {"enabled": True, "port": 0}}
    try:
        with Shipper(cfg) as s:
            s.start_sources()
            assert s.http_url is not None
            res = post_all(s.http_url, data)
        held = topics.count()
    finally:
        topics.drop()
    return {"lines_per_s": round(res["accepted"] / res["seconds"]), "topics_hold": held,
            "ok": held == n}  # fmt: skip


def serve(kafka: LocalKafka, data: Path, n: int, work: Path) -> dict[str, Any]:
    try:
        from ray import serve as rs
        from starlette.requests import Request
        from starlette.responses import Response
    except ImportError:
        return {"error": 'Ray Serve is not installed: pip install "ray[serve]==2.60.0"'}

    from actors.feeder import Feeder
    from actors.reporter import Reporter
    from shipper.intake import Intake
    from shipper.sources import http as rules

    topics = Topics(kafka, "http-serve")
    cfg = config(kafka, topics.base, str(work / "dlq-s"))

    @rs.deployment(max_ongoing_requests=64)
    class Intake_:
        def __init__(self, wiring: Any) -> None:
            self.wiring = wiring
            self.intake = Intake(wiring.sink)
            self.feeder = Feeder(wiring, Reporter(None, "serve").recorder, "source")

        async def __call__(self, request: Request) -> Response:
            body = await request.body()
            lines = rules.lines_of_body(body, None)
            assert isinstance(lines, bytes)
            now = time.time()
            prep = self.intake.prepare_lines(lines, 1)
            result = await self.feeder.collect(prep, self.feeder.hand_over(prep, now), now)
            reply = rules.reply_for(result)
            return Response(reply.encode(), status_code=reply.status)

    try:
        with Shipper(cfg) as s:
            rs.start(http_options={"host": "127.0.0.1", "port": 8765})
            rs.run(Intake_.bind(s.wiring), route_prefix="/v1/logs")
            res = post_all("http://127.0.0.1:8765/v1/logs", data)
            rs.shutdown()
        held = topics.count()
    finally:
        topics.drop()
    return {"lines_per_s": round(res["accepted"] / res["seconds"]), "topics_hold": held,
            "ok": held == n}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    args = ap.parse_args()
    kafka = LocalKafka.ensure_up()
    values = generate(args.entries)
    n = len(values)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        data = work / "lines.jsonl"
        data.write_bytes(b"\n".join(values) + b"\n")
        results = {"entries": n, "actor": actor(kafka, data, n, work)}
        results["serve"] = serve(kafka, data, n, work)
    print(f"{n:,} lines over HTTP (4 client threads, 5,000 lines per request), same run:")
    for name in ("actor", "serve"):
        r = results[name]
        if "error" in r:
            print(f"  {name:<6} {r['error']}")
        else:
            print(f"  {name:<6} {r['lines_per_s']:>10,} lines/s  topics hold {r['topics_hold']:,}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("ok", True) for r in (results["actor"], results["serve"])) else 1


if __name__ == "__main__":
    sys.exit(main())
