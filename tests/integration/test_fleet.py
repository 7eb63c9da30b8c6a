"""A pipeline on every node: several raylets on one machine (``ray.cluster_utils.Cluster``).

Each simulated node has its own ``shipper-node`` label, so its own DLQ and log
folder (``{node}`` in the paths), and the custom resource ``log_shipper`` where it
should run a pipeline. The head offers no resource: it runs the driver, the
supervisor and the telemetry actor only. The nodes share the machine's two cores.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from actors.pipeline import Shipper
from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]


def wait_until(check: Callable[[], Any], timeout: float, what: str, step: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except ray.exceptions.RayError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    ray.shutdown()  # the session's single-node Ray steps aside for this module
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "labels": {"shipper-node": "head"},
            "include_dashboard": True,
        },
    )
    for key in ("n1", "n2", "n3"):
        c.add_node(num_cpus=1, resources={"log_shipper": 1}, labels={"shipper-node": key})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def fleet_config(kafka: LocalKafka, topic: str, tmp_path: Path, **sink: Any) -> dict[str, Any]:
    cfg = sink_config(
        kafka,
        topic,
        dlq_config={"path": str(tmp_path / "{node}" / "dlq")},
        batch_timeout="50ms",
        **sink,
    )
    cfg["fleet"] = {"nodes": "resource:log_shipper", "reconcile_interval": "1s"}
    cfg["logging"] = {"file": str(tmp_path / "{node}" / "shipper.log")}
    return cfg


def lines(start: int, n: int) -> bytes:
    return b"\n".join(
        json.dumps({"message": f"m{i}", "level": "info", "fields": {"seq": i}}).encode()
        for i in range(start, start + n)
    )


def seqs(kafka: LocalKafka, topic: str, n: int) -> Counter[int]:
    msgs = consume_all(kafka.client_config(), topic, expected=n, timeout=120, idle=3)
    return Counter(int(json.loads(m.value())["fields"]["seq"]) for m in msgs)


def actor_nodes(namespace: str) -> dict[str, str]:
    """Name -> the id of the node each live actor of ``namespace`` runs on (Ray's
    state API)."""
    from ray.util.state import list_actors

    return {
        a.name: a.node_id
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
        if a.ray_namespace == namespace and a.name
    }


def test_every_node_runs_its_own_pipeline_and_api_work_is_spread(
    cluster: Cluster, kafka: LocalKafka, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=6)
    cfg = fleet_config(kafka, topic, tmp_path)
    cfg["sources"] = {
        "files": [{"paths": [str(tmp_path / "{node}" / "logs" / "*.log")]}],
        "checkpoints": {"path": str(tmp_path / "{node}" / "checkpoints")},
        "tail": {"poll_interval": "100ms"},
    }
    ids = {n.node_id: n for n in cluster.list_all_nodes()}
    by_key = {raw["Labels"]["shipper-node"]: raw["NodeID"] for raw in ray.nodes() if raw["Alive"]}
    with Shipper(cfg) as s:
        assert s.nodes() == ["n1", "n2", "n3"]
        where = actor_nodes(s.namespace)
        for key in ("n1", "n2", "n3"):
            for name in (f"router:{key}", f"dlq:{key}", f"batcher:{key}:{topic}"):
                assert where[name] == by_key[key], name  # pinned to its node
        assert where["supervisor"] == by_key["head"] and where["telemetry"] == by_key["head"]
        assert set(ids) >= set(by_key.values())
        # 200,000 entries through the API: spread over the pipelines, all delivered.
        n = 200_000
        acks = [s.submit_lines(lines(i, 5000)) for i in range(0, n, 5000)]
        s.flush(timeout=300)
        assert sum(a.result().delivered for a in acks) == n
        spread = Counter(a.node for a in acks)
        assert set(spread) == {"n1", "n2", "n3"}, spread
        # Each node's files go through that node's own pipeline.
        for k, key in enumerate(("n1", "n2", "n3")):
            logs = tmp_path / key / "logs"
            logs.mkdir(parents=True)
            (logs / "app.log").write_bytes(lines(n + k * 1000, 1000) + b"\n")
        s.start_sources()
        wait_until(
            lambda: sum(q["delivered"] for q in s.queue_stats()) >= n + 3000,
            120,
            "the files of every node",
        )
        per_node = Counter()
        for q in s.queue_stats():
            per_node[q["node"]] += q["delivered"]
        for key in ("n1", "n2", "n3"):
            assert per_node[key] >= 1000  # its own file went through it
            assert (tmp_path / key / "dlq").is_dir()  # its own DLQ, on its own path
    got = seqs(kafka, topic, n + 3000)
    assert set(got) == set(range(n + 3000)) and max(got.values()) == 1


def test_a_node_lost_mid_stream_loses_nothing_and_a_new_node_gets_a_pipeline(
    cluster: Cluster, kafka: LocalKafka, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=3)
    cfg = fleet_config(kafka, topic, tmp_path)
    extra = None
    with Shipper(cfg) as s:
        assert len(s.nodes()) == 3
        n2 = next(r["NodeID"] for r in ray.nodes() if r["Labels"].get("shipper-node") == "n2")
        victim = next(n for n in cluster.worker_nodes if n.node_id == n2)
        acks = []
        for i in range(0, 60_000, 2000):
            acks.append(s.submit_lines(lines(i, 2000)))
            if i == 20_000:
                cluster.remove_node(victim)  # the node dies with work in flight
        results = [a.result(180) for a in acks]
        assert all(r.ok for r in results), [r.summary() for r in results if not r.ok]
        assert s.stats().resent > 0 or not any(a.node == "n2" for a in acks[10:])
        wait_until(lambda: "n2" not in s.nodes(), 30, "n2 reported lost")
        assert s.submit_lines(lines(60_000, 1000)).result(60).ok  # the fleet goes on
        # A node that joins later gets its pipeline within 10 s of Ray seeing it.
        extra = cluster.add_node(
            num_cpus=1, resources={"log_shipper": 1}, labels={"shipper-node": "n4"}
        )
        wait_until(lambda: "n4" in s.nodes(), 10 + 20, "a pipeline on the new node")
        stats = s.stats()
    got = seqs(kafka, topic, 61_000)
    # Every entry acknowledged arrived; only resent ones may come twice.
    assert set(got) == set(range(61_000))
    assert sum(v - 1 for v in got.values()) <= stats.resent
    if extra is not None:
        cluster.remove_node(extra)
