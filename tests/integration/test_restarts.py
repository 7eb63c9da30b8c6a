"""Actors that Ray restarts: counted by the supervisor, rewired, and the pipeline goes on.

Each actor is killed with ``no_restart=False``, the way a crashed process dies: Ray
restarts it from its constructor arguments (plain data, see actors.wiring), and the
restarted actor announces itself to the supervisor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import ray

from actors.pipeline import Shipper
from shipper.dlq import DlqRecord, LmdbDlqStore
from shipper.outcomes import Reason
from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def lines(n: int, start: int = 0) -> bytes:
    return b"\n".join(
        json.dumps({"message": f"m{i}", "level": "info", "fields": {"seq": i}}).encode()
        for i in range(start, start + n)
    )


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ray.exceptions.RayError:
            pass  # the actor asked is itself restarting
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_restarted_actors_are_counted_rewired_and_the_pipeline_goes_on(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    dlq = str(tmp_path / "dlq")
    cfg = sink_config(kafka, topic, dlq_config={"path": dlq})
    with Shipper(cfg) as s:
        assert s.submit_lines(lines(100)).result(30).delivered == 100
        w = s.node_wiring()

        def kill(name: str) -> None:
            ray.kill(ray.get_actor(name, namespace=s.namespace), no_restart=False)

        # A record reaches the DLQ's store after its start-up pass (written by another
        # process, as `shipper dlq` may): nothing replays it before the next interval,
        # 5 minutes away, unless something kicks the DLQ.
        with LmdbDlqStore(dlq) as store:
            store.put_batch(
                [DlqRecord(value=b'{"message":"parked"}', topic=topic, reason=Reason.TIMEOUT)]
            )
        for name in (w.batcher_name(topic), w.producer_name(0), w.dlq_name()):
            kill(name)
        wait_until(
            lambda: s.restarts() == {"batcher": 1, "producer": 1, "dlq": 1},
            60,
            "three restarts counted",
        )
        # The supervisor kicked the restarted DLQ: the record is replayed now.
        wait_until(lambda: s.dlq_count() == 0, 60, "the restarted DLQ to replay")
        # Calls keep their order across the restarted Batcher and Producer without
        # waiting out the 30 s gap timeout of a lost sequence.
        t0 = time.monotonic()
        assert s.submit_lines(lines(100, start=100)).result(30).delivered == 100
        assert time.monotonic() - t0 < 15
        # Every Batcher belongs to the keeper (whoever met its topic first), so it
        # outlives a Router's restart.
        kill(w.router_name())
        wait_until(lambda: s.restarts().get("router") == 1, 60, "the Router's restart")
        t0 = time.monotonic()
        assert s.submit_lines(lines(50, start=200)).result(30).delivered == 50
        assert time.monotonic() - t0 < 15
        assert s.restarts()["batcher"] == 1
        nodes = s.nodes()
        router = s.node_wiring().router()
        seen = ray.get(router.stats.remote())["entries"]
        # The Batcher holds what the old supervisor last pushed (here: open, as if
        # Kafka had failed just before the crash); the new supervisor's breaker starts
        # closed, so it pushes that, or nothing would ever close the Batcher's.
        batcher = w.batcher(topic)
        ray.get(batcher.set_breaker_state.remote(1))
        assert ray.get(batcher.stats.remote())["breaker_state"] == 1
        kill("supervisor")
        wait_until(lambda: s.restarts().get("supervisor") == 1, 60, "the supervisor's restart")
        # The restarted supervisor took the running pipeline over (the keeper holds
        # it): nothing of it was restarted or started anew.
        wait_until(lambda: s.nodes() == nodes, 30, "the pipeline known again")
        wait_until(
            lambda: ray.get(batcher.stats.remote())["breaker_state"] == 0,
            30,
            "the restarted supervisor's breaker state pushed",
        )
        assert s.submit_lines(lines(50, start=250)).result(30).delivered == 50
        # The same Router process: its count went on from where it was.
        assert ray.get(router.stats.remote())["entries"] == seen + 50
    got = consume_all(kafka.client_config(), topic, expected=301, timeout=60)
    seqs = sorted(json.loads(m.value())["fields"]["seq"] for m in got if b"parked" not in m.value())
    assert seqs == list(range(300))
    assert sum(1 for m in got if b"parked" in m.value()) == 1
