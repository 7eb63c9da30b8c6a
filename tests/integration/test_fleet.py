"""A pipeline on every node: several raylets on one machine (``ray.cluster_utils.Cluster``).

Each simulated node has its own ``shipper-node`` label, so its own DLQ and log
folder (``{node}`` in the paths), and the custom resource ``log_shipper`` where it
should run a pipeline. The head offers no resource: it runs the driver, the
supervisor and the telemetry actor only. The nodes share the machine's two cores.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from actors.pipeline import Shipper
from shipper.dlq import DlqRecord, LmdbDlqStore
from shipper.outcomes import Reason
from shipper.testing import LocalKafka, consume_all
from tests.conftest import BrokerSwitch, sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


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
    # The raylets' environment is the jobs': the shipper command on PATH, as on a node
    # where the package is installed.
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "labels": {"shipper-node": "head"},
            "include_dashboard": True,
            # A free port, not Ray's 8265: another Ray on the machine (a lane of
            # scripts/run-tests, a bench) may hold that one.
            "dashboard_port": _free_port(),
        },
    )
    for key in ("n1", "n2", "n3"):
        add_shipper_node(c, key)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()
    mp.undo()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def add_shipper_node(cluster: Cluster, key: str) -> Any:
    """A raylet that offers the fleet's resource, with its own ``shipper-node`` label."""
    return cluster.add_node(num_cpus=1, resources={"log_shipper": 1}, labels={"shipper-node": key})


def fleet_config(kafka: LocalKafka, topic: str, tmp_path: Path, **sink: Any) -> dict[str, Any]:
    cfg = sink_config(
        kafka,
        topic,
        dlq_config={
            "path": str(tmp_path / "{node}" / "dlq"),
            "reprocessing_config": {"interval": "2s", "batch_size": 500},
        },
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


def delivered_by_node(s: Shipper) -> Counter[str]:
    out: Counter[str] = Counter()
    for q in s.queue_stats():
        out[q["node"]] += q["delivered"]
    return out


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, json.loads(resp.read())


def test_every_node_runs_its_own_pipeline_and_api_work_is_spread(
    cluster: Cluster, kafka: LocalKafka, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=6)
    cfg = fleet_config(kafka, topic, tmp_path)
    cfg["sources"] = {
        "files": [{"paths": [str(tmp_path / "{node}" / "logs" / "*.log")]}],
        "checkpoints": {"path": str(tmp_path / "{node}" / "checkpoints")},
        "tail": {"poll_interval": "100ms"},
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
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
        # A topic met for the first time gets its Batcher on each node from the keeper,
        # pinned to that node like the rest of its pipeline.
        other = make_topic(partitions=1)
        extra = [
            s.submit([{"message": f"x{i}", "labels": {"kafka_topic": other}}] * 100)
            for i in range(3)
        ]
        assert {a.node for a in extra} == {"n1", "n2", "n3"}
        assert sum(a.result(60).delivered for a in extra) == 300
        where = actor_nodes(s.namespace)
        for key in ("n1", "n2", "n3"):
            assert where[f"batcher:{key}:{other}"] == by_key[key], key
        # Each node's files go through that node's own pipeline.
        before = delivered_by_node(s)
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
        after = delivered_by_node(s)
        for key in ("n1", "n2", "n3"):
            assert after[key] - before[key] == 1000  # its own file, through its pipeline
            assert (tmp_path / key / "dlq").is_dir()  # its own DLQ, on its own path
        # Requests to one node's HTTP intake are spread too: concurrent ones go to the
        # pipelines with the fewest of its entries in flight.
        assert set(s.http_urls) == {"n1", "n2", "n3"}
        with ThreadPoolExecutor(9) as pool:
            answers = list(
                pool.map(
                    lambda i: post(s.http_urls["n1"], lines(n + 3000 + i * 1000, 1000)),
                    range(9),
                )
            )
        assert all(code == 200 and body["delivered"] == 1000 for code, body in answers), answers
        http = delivered_by_node(s) - after
        assert sum(http.values()) == 9000
        assert len(+http) >= 2, http  # not all on n1
        # One scrape endpoint for the fleet, every series with its node.
        assert s.metrics_url is not None
        sent = wait_until(
            lambda: (
                {
                    m.group(1)
                    for m in re.finditer(
                        r'^log_capturer_kafka_delivered_total\{[^}]*node="([^"]+)"[^}]*\} [1-9]',
                        scrape(s.metrics_url),
                        re.M,
                    )
                }
                >= {"n1", "n2", "n3"}
            ),
            30,
            "every node's deliveries on the fleet's endpoint",
        )
        assert sent
    got = seqs(kafka, topic, n + 12_000)
    assert set(got) == set(range(n + 12_000)) and max(got.values()) == 1


def test_a_node_lost_mid_stream_loses_nothing_comes_back_to_its_dlq_and_a_new_node_joins(
    cluster: Cluster, kafka: LocalKafka, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=3)
    cfg = fleet_config(kafka, topic, tmp_path)
    added = []
    with Shipper(cfg) as s:
        assert s.nodes() == ["n1", "n2", "n3"]
        n2 = next(r["NodeID"] for r in ray.nodes() if r["Labels"].get("shipper-node") == "n2")
        victim = next(n for n in cluster.worker_nodes if n.node_id == n2)
        acks = []
        for i in range(0, 60_000, 2000):
            acks.append(s.submit_lines(lines(i, 2000)))
            if i == 20_000:
                cluster.remove_node(victim)  # the node dies with work in flight
        results = [a.result(180) for a in acks]
        assert all(r.ok for r in results), [r.summary() for r in results if not r.ok]
        assert sum(r.delivered for r in results) == 60_000  # each acknowledged once
        on_n2_after = [a for a in acks[11:] if a.node == "n2"]
        assert not on_n2_after, "submissions went to a dead node"
        wait_until(lambda: s.nodes() == ["n1", "n3"], 30, "n2 reported lost")
        assert s.submit_lines(lines(60_000, 1000)).result(60).ok  # the fleet goes on

        # n2 comes back (a new raylet with the same label): its pipeline starts on the
        # same DLQ path and replays what that DLQ holds (here: 500 entries parked there
        # while the node was away, written with the store itself).
        with LmdbDlqStore(str(tmp_path / "n2" / "dlq")) as store:
            store.put_batch(
                [
                    DlqRecord(value=line, topic=topic, reason=Reason.TIMEOUT, error="test")
                    for line in lines(61_000, 500).split(b"\n")
                ]
            )
        t0 = time.monotonic()
        add_shipper_node(cluster, "n2")
        wait_until(lambda: "n2" in s.nodes(), 30, "n2's pipeline back", step=0.2)
        back_s = time.monotonic() - t0
        wait_until(lambda: s.dlq_stats_by_node()["n2"].total == 0, 60, "n2's DLQ replayed")

        # A node that was never there joins: it gets a pipeline too.
        t0 = time.monotonic()
        added.append(add_shipper_node(cluster, "n4"))
        wait_until(lambda: "n4" in s.nodes(), 30, "a pipeline on the new node", step=0.2)
        join_s = time.monotonic() - t0
        print(f"\nnode back with its pipeline in {back_s:.1f} s, new node in {join_s:.1f} s")
        # Within 10 s of the raylet's start, plus start-up on two shared cores.
        assert back_s < 20 and join_s < 20
        stats = s.stats()
    got = seqs(kafka, topic, 61_500)
    # Every acknowledged entry arrived, and the replayed DLQ; only resent ones twice.
    assert set(got) == set(range(61_000)) | set(range(61_000, 61_500))
    assert stats.resent > 0
    assert sum(v - 1 for v in got.values()) <= stats.resent
    for node in added:
        cluster.remove_node(node)  # n1, n2 (back) and n3 stay for the next tests


def test_an_outage_seen_by_one_node_opens_the_breaker_on_every_node(
    cluster: Cluster,
    kafka: LocalKafka,
    make_topic: Callable[..., str],
    broker: BrokerSwitch,
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=3)
    cfg = fleet_config(
        kafka,
        topic,
        tmp_path,
        timeout="3s",
        # Failures only (no unreachable_after): each node's Producer would notice the
        # broker gone by itself, and this test is about one node telling the others
        # (seen in a fresh-clone run: every breaker was open before the first failed
        # submission, so no node was the first).
        circuit_breaker={
            "failure_threshold": 2,
            "success_threshold": 1,
            "timeout": "3s",
            "unreachable_after": "0s",
        },
    )
    with Shipper(cfg) as s:
        nodes = s.nodes()
        assert len(nodes) == 3
        assert s.submit_lines(lines(0, 100)).result(60).ok
        broker.stop()
        # One submission at a time: the least loaded pipeline is always the first by
        # name, so only that node's Batcher sees Kafka fail.
        first = None
        deadline = time.monotonic() + 90
        while first is None or not any(b["state"] == 1 for b in s.breaker_states().values()):
            assert time.monotonic() < deadline, "the breaker never opened"
            ack = s.submit_lines(lines(100, 10))
            ack.result(60)
            first = first or ack.node
            assert ack.node == first
        states = {
            key: ray.get(s.node_wiring(key).router().batcher_stats.remote(), timeout=30)
            for key in nodes
        }
        for key, topics in states.items():
            assert topics and all(t["breaker_state"] == 1 for t in topics), (key, topics)
        others = [k for k in nodes if k != first]
        assert all(t["failed"] == 0 for k in others for t in states[k])  # saw nothing
        assert sum(t["failed"] + t["dlq"] for t in states[first]) > 0
        broker.start()
        wait_until(
            lambda: all(b["state"] == 0 for b in s.breaker_states().values()),
            120,
            "the breaker closed again",
        )


def test_ray_job_runs_the_fleet_status_shows_it_and_ray_job_stop_drains_it(
    cluster: Cluster, kafka: LocalKafka, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    """The README's way: ``ray job submit`` to the cluster's dashboard, then ``ray job
    stop``, with the wait for a graceful stop raised (Ray's default is 3 s)."""
    topic = make_topic(partitions=3)
    cfg = fleet_config(kafka, topic, tmp_path)
    cfg["sources"] = {
        "files": [{"paths": [str(tmp_path / "{node}" / "logs" / "*.log")]}],
        "checkpoints": {"path": str(tmp_path / "{node}" / "checkpoints")},
        "tail": {"poll_interval": "100ms"},
    }
    keys = ("n1", "n2", "n3")
    for k, key in enumerate(keys):
        (tmp_path / key / "logs").mkdir(parents=True)
        (tmp_path / key / "logs" / "app.log").write_bytes(lines(k * 10_000, 2000) + b"\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    dash = ray.get_runtime_context().gcs_address  # the GCS; the job API is on the dashboard
    url = _dashboard_url()
    stop_wait = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "90"}})
    command = ["shipper", "run", "--config", str(path), "--summary-json", str(summary)]
    argv = ["job", "submit", "--address", url, "--no-wait", "--runtime-env-json", stop_wait]
    argv += ["--", *command]
    # The head's job agent registers a while after the dashboard answers (longer on a
    # loaded machine: a fresh-clone run needed more than 90 s); until then Ray answers
    # "No available agent ... try again later".
    deadline = time.monotonic() + 240
    while True:
        submit = _ray(argv, env, check=False)
        if submit.returncode == 0 or "No available agent" not in submit.stderr:
            break
        assert time.monotonic() < deadline, submit.stderr[-2000:]
        time.sleep(2)
    assert submit.returncode == 0, (submit.stdout[-2000:], submit.stderr[-3000:])
    job = next(
        w.strip("'\"") for w in submit.stdout.split() if w.strip("'\"").startswith("raysubmit_")
    )
    try:
        first = wait_until(
            lambda: job_running(url, job, env) and seqs_after(kafka, topic, 6000, timeout=3),
            120,
            "every node's file in Kafka",
            step=1.0,
        )
        assert set(first) == {k * 10_000 + i for k in range(3) for i in range(2000)}
        # `shipper status` joins the cluster and shows every node's pipeline.
        st = subprocess.run(
            [str(BIN / "shipper"), "status", "--address", dash],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert st.returncode == 0, st.stderr[-2000:]
        for key in keys:
            assert f"node {key}: " in st.stdout, st.stdout
        assert f"{topic}" in st.stdout and "breaker" in st.stdout
        # `shipper reload` asks the job's driver to read its file again; the switch-over
        # restarts every node's pipeline and sources (at their checkpoints).
        cfg["sinks"]["kafka"]["headers"] = {"env": "reloaded"}
        path.write_text(yaml.safe_dump(cfg))
        rl = subprocess.run(
            [str(BIN / "shipper"), "reload", "--address", dash],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert rl.returncode == 0, rl.stderr[-2000:]
        wait_until(
            lambda: (
                "reload: the new configuration runs"
                in _ray(["job", "logs", "--address", url, job], env, check=False).stdout
            ),
            240,
            "the switch-over",
            step=2.0,
        )
        # More lines on every node, then the stop: what was read is drained.
        for k, key in enumerate(keys):
            with (tmp_path / key / "logs" / "app.log").open("ab") as f:
                f.write(lines(k * 10_000 + 2000, 3000) + b"\n")
        time.sleep(1.0)
        _ray(["job", "stop", "--address", url, job], env, timeout=180)
        status = wait_until(
            lambda: (
                (s := _ray(["job", "status", "--address", url, job], env, check=False))
                and "STOPPED" in (s.stdout + s.stderr).upper()
            ),
            120,
            "the job stopped",
        )
        assert status
        logs = _ray(["job", "logs", "--address", url, job], env).stdout
    except BaseException as exc:
        _ray(["job", "stop", "--address", url, job], env, check=False)
        logs = _ray(["job", "logs", "--address", url, job], env, check=False).stdout
        raise AssertionError(f"{exc}\njob logs:\n{logs[-4000:]}") from exc
    assert "got signal" in logs and "draining" in logs, logs[-3000:]
    report = json.loads(wait_until(lambda: summary.exists() and summary.read_text(), 30, "summary"))
    assert report["drained"] is True, report
    read = report["sources"]["file_lines"]
    assert read >= 6000
    got = seqs(kafka, topic, read)
    # Everything the sources read is in Kafka (nothing was parked: Kafka was up), and
    # what is not read yet stays behind each node's checkpoint for the next run.
    assert sum(got.values()) >= read and len(got) == read - report.get("parked", 0)
    assert max(got.values()) == 1
    assert report["reloads"]["applied"] == 1, report
    # The lines written after the switch-over went out with the new header.
    later = {k * 10_000 + 2000 + i for k in range(3) for i in range(3000)}
    headers = {
        int(json.loads(m.value())["fields"]["seq"]): dict(m.headers() or [])
        for m in consume_all(kafka.client_config(), topic, expected=sum(got.values()), timeout=60)
    }
    assert all(headers[i].get("env") == b"reloaded" for i in later if i in headers)
    assert later & set(headers)


def _dashboard_url() -> str:
    ctx = ray.get_runtime_context()
    addr = ray._private.worker.global_worker.node.address_info.get("webui_url") or ""
    assert addr, f"the cluster's head has no dashboard ({ctx.gcs_address})"
    return addr if addr.startswith("http") else f"http://{addr}"


def _ray(
    args: list[str], env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
    return out


def job_running(url: str, job: str, env: dict[str, str]) -> bool:
    """True while the job runs (or starts); raises once it ended."""
    st = _ray(["job", "status", "--address", url, job], env, check=False)
    text = (st.stdout + st.stderr).upper()
    if any(s in text for s in ("FAILED", "SUCCEEDED", "STOPPED")):
        raise AssertionError(f"the job ended early: {text[-1000:]}")
    return True


def seqs_after(kafka: LocalKafka, topic: str, n: int, timeout: float) -> Counter[int] | None:
    """The ``seq`` of ``topic``'s first ``n`` messages; None if fewer came in ``timeout``."""
    try:
        msgs = consume_all(kafka.client_config(), topic, expected=n, timeout=timeout)
    except TimeoutError:
        return None
    return Counter(int(json.loads(m.value())["fields"]["seq"]) for m in msgs)
