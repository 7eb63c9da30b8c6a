"""The fleet on 1, 2 and 3 simulated nodes, against the bare producer loop, in one run.

Each fleet size gets a fresh ``ray.cluster_utils.Cluster`` on this machine: a head
(driver, supervisor, telemetry; no pipeline) and K worker raylets that offer the
resource ``log_shipper`` (``fleet.nodes: resource:log_shipper``), so K node
pipelines. N datagen lines (~300 bytes) go through ``Shipper.submit_lines`` in blobs
of 5,000, which the driver spreads over the nodes by least work in flight; the clock
runs from the first timed submission to the last ack (a warm-up blob per node is
acked before). Hash partitioning on ``tenant_id``, snappy, routing off, DLQ on.

Reported per fleet size: entries/s, its ratio to the bare confluent-kafka loop on the
same data and broker (measured in the same run, before each size), and CPU seconds
per million entries per node (each worker raylet's process tree: the raylet and the
actors it started), for the head and for the driver.

All the simulated nodes share this machine's cores (2 here): the figures say what the
fleet costs and how the work is spread, not how it scales on real machines, where
each node brings its own cores.

    .venv/bin/python bench/bench_fleet.py [--entries 200000] [--nodes 1,2,3] [--json OUT]

Needs the local broker (scripts/kafka-local up).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contenders import Bench, bare_loop, self_cpu, tree_cpu
from datagen import generate

from actors import local_ray

local_ray.prepare()

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from actors.pipeline import Shipper  # noqa: E402
from shipper.testing import LocalKafka, create_topic, delete_topic  # noqa: E402

CODEC = "snappy"
PARTITIONING = {"enabled": True, "strategy": "hash", "key_field": "tenant_id"}


def config(kafka: LocalKafka, topic: str, dlq: str) -> dict[str, Any]:
    return {
        "sinks": {
            "kafka": {
                "enabled": True,
                "brokers": [kafka.bootstrap],
                "topic": topic,
                "routing": {"enabled": False},
                "compression": CODEC,
                "batch_size": 1000,
                "batch_timeout": "50ms",
                "partitioning": PARTITIONING,
                "dlq_config": {"path": str(Path(dlq) / "{node}")},
            }
        },
        "metrics": {"enabled": False},
        "fleet": {"nodes": "resource:log_shipper", "reconcile_interval": "1s"},
        "pipeline": {"max_inflight_submissions": 8},
        "logging": {"file": str(Path(dlq) / "{node}.log")},
    }


def raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def fleet_run(kafka: LocalKafka, b: Bench, k: int, work: Path) -> dict[str, Any]:
    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "labels": {"shipper-node": "head"}},
    )
    workers = {
        f"n{i}": cluster.add_node(
            num_cpus=1, resources={"log_shipper": 1}, labels={"shipper-node": f"n{i}"}
        )
        for i in range(1, k + 1)
    }
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    topic = create_topic(kafka.client_config(), partitions=6)
    try:
        with tempfile.TemporaryDirectory(dir=work, prefix="fleet-") as dlq:
            t_start = time.perf_counter()
            s = Shipper(config(kafka, topic, dlq))
            up = time.perf_counter() - t_start
            try:
                nodes = s.nodes()
                if len(nodes) != k:
                    raise RuntimeError(f"expected {k} node pipelines, got {nodes}")
                # A warm-up blob per node (each node's Batcher starts with its pipeline;
                # this opens its producer's connections).
                warm = [s.submit_lines(b.warm_blob) for _ in range(k)]
                for a in warm:
                    a.result(120)
                cpu0 = {key: tree_cpu(raylet_pid(n)) for key, n in workers.items()}
                head0 = tree_cpu(raylet_pid(cluster.head_node))
                drv0 = self_cpu()
                t0 = time.perf_counter()
                acks = [s.submit_lines(blob, first_line=f) for blob, f, _ in b.blobs]
                s.flush(timeout=600)
                t1 = time.perf_counter()
                cpu1 = {key: tree_cpu(raylet_pid(n)) for key, n in workers.items()}
                head1 = tree_cpu(raylet_pid(cluster.head_node))
                drv1 = self_cpu()
                results = [a.result() for a in acks]
                spread = Counter(a.node for a in acks)
            finally:
                s.close(timeout=60)
        delivered = sum(r.delivered for r in results)
        if delivered != b.timed:
            raise RuntimeError(f"{k} nodes: {delivered} delivered of {b.timed}")
        secs = t1 - t0
        by_node: Counter[str] = Counter()
        for a, r in zip(acks, results, strict=True):
            by_node[a.node] += r.delivered
        per_node = {
            key: {
                "submissions": spread[key],
                "entries": by_node[key],
                "cpu_s": round(cpu1[key] - cpu0[key], 2),
            }
            for key in workers
        }
        for v in per_node.values():
            v["cpu_s_per_million"] = round(v["cpu_s"] / max(v["entries"], 1) * 1e6, 2)
        return {
            "nodes": k,
            "entries": b.timed,
            "seconds": round(secs, 3),
            "msg_per_s": round(b.timed / secs, 1),
            "startup_s": round(up, 2),
            "per_node": per_node,
            "cpu_s_per_million_head": round((head1 - head0) / b.timed * 1e6, 2),
            "cpu_s_per_million_driver": round((drv1 - drv0) / b.timed * 1e6, 2),
            "cpu_s_per_million_total": round(
                (sum(cpu1.values()) - sum(cpu0.values()) + head1 - head0 + drv1 - drv0)
                / b.timed
                * 1e6,
                2,
            ),
        }
    finally:
        delete_topic(kafka.client_config(), topic)
        ray.shutdown()
        cluster.shutdown()


def baseline(kafka: LocalKafka, b: Bench) -> dict[str, Any]:
    topic = create_topic(kafka.client_config(), partitions=6)
    try:
        return bare_loop(b, topic, CODEC)
    finally:
        delete_topic(kafka.client_config(), topic)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--nodes", default="1,2,3", help="fleet sizes, comma-separated")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "fleet.json"))
    args = ap.parse_args()
    sizes = [int(x) for x in args.nodes.split(",") if x.strip()]
    kafka = LocalKafka.ensure_up()
    work = Path(args.json).parent
    work.mkdir(parents=True, exist_ok=True)
    data = work / "fleet-data.jsonl"
    lines = generate(args.entries)
    data.write_bytes(b"\n".join(lines) + b"\n")
    b = Bench(
        bootstrap=kafka.bootstrap,
        lines=lines,
        data_file=data,
        results_dir=work,
        cli_cmd=[],
        partitioning=PARTITIONING,
    )
    rows = []
    for k in sizes:
        base = baseline(kafka, b)
        print(
            f"bare loop: {base['msg_per_s']:,.0f} entries/s, {base['cpu_s_per_million']} CPU s/M",
            flush=True,
        )
        run = fleet_run(kafka, b, k, work)
        run["bare_msg_per_s"] = base["msg_per_s"]
        run["bare_cpu_s_per_million"] = base["cpu_s_per_million"]
        run["ratio_to_bare"] = round(run["msg_per_s"] / base["msg_per_s"], 3)
        rows.append(run)
        nodes = ", ".join(
            f"{key} {v['entries']:,} entries {v['cpu_s_per_million']} CPU s/M"
            for key, v in run["per_node"].items()
        )
        print(
            f"{k} node(s): {run['msg_per_s']:,.0f} entries/s ({run['ratio_to_bare']:.2f} of "
            f"bare), start {run['startup_s']} s; {nodes}; head "
            f"{run['cpu_s_per_million_head']}, driver {run['cpu_s_per_million_driver']}, "
            f"total {run['cpu_s_per_million_total']} CPU s/M",
            flush=True,
        )
    Path(args.json).write_text(json.dumps({"entries": args.entries, "runs": rows}, indent=2))
    data.unlink()
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
