"""Nothing lost: fault injection against the real broker, real Ray and real LMDB.

Each test stops or breaks something for real (the broker process, the credentials,
the whole shipper with SIGKILL, the disk budget) and then checks, by reading Kafka
back, that every acknowledged entry arrived or sits in the DLQ. The broker is always
restarted at teardown, even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.pipeline import Shipper
from shipper.dlq import LmdbDlqStore
from shipper.errors import BackpressureError
from shipper.outcomes import DropReason
from shipper.testing import LocalKafka, consume_all
from tests.conftest import BrokerSwitch, sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

REPO = Path(__file__).resolve().parents[2]


def lines(start: int, n: int, level: str | Callable[[int], str] = "info") -> bytes:
    def lv(i: int) -> str:
        return level(i) if callable(level) else level

    return b"\n".join(
        json.dumps({"message": f"m{i}", "level": lv(i), "fields": {"seq": i}}).encode()
        for i in range(start, start + n)
    )


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def seqs(kafka: LocalKafka, topic: str, at_least: int) -> Counter[int]:
    """Every ``seq`` in ``topic`` with how often it occurs (a replay may duplicate)."""
    consume_all(kafka.client_config(), topic, expected=at_least, timeout=120)
    everything = consume_all(kafka.client_config(), topic, timeout=120, idle=1.0)
    return Counter(json.loads(m.value() or b"{}")["fields"]["seq"] for m in everything)


def resilient(kafka: LocalKafka, topic: str, dlq: str, **over: Any) -> dict[str, Any]:
    sink: dict[str, Any] = {
        "timeout": "4s",
        "batch_size": 1000,
        "batch_timeout": "20ms",
        "dlq_config": {
            "path": dlq,
            "reprocessing_config": {"interval": "2s", "batch_size": 500, "max_retries": 50},
        },
        "circuit_breaker": {"failure_threshold": 3, "success_threshold": 2, "timeout": "3s"},
    }
    sink.update(over)
    return sink_config(kafka, topic, **sink)


def test_oversized_entries_go_to_the_dlq_and_the_rest_is_delivered(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    dlq = str(tmp_path / "dlq")
    batch: list[dict[str, Any]] = [
        {"message": f"m{i}", "fields": {"seq": i, "blob": "x" * (5000 if i % 10 == 0 else 10)}}
        for i in range(100)
    ]
    with Shipper(resilient(kafka, topic, dlq, max_message_bytes=2000)) as s:
        r = s.submit(batch).result(60)
        stats = s.dlq_stats()
    assert r.ok and r.delivered == 90 and r.dlq == 10, r.summary()
    assert r.dlq_by_reason() == {"message_too_large": 10}
    assert stats.by_reason == {"message_too_large": 10}
    got = seqs(kafka, topic, 90)
    assert set(got) == {i for i in range(100) if i % 10}
    with LmdbDlqStore(dlq) as store:
        recs = store.fetch(100, include_parked=True)
    assert sorted(json.loads(x.value)["fields"]["seq"] for x in recs) == list(range(0, 100, 10))
    assert all("Message size exceeds max_message_bytes" in x.error for x in recs)


def test_wrong_password_parks_entries_and_a_replay_with_the_right_one_delivers(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    dlq = str(tmp_path / "dlq")
    bad = resilient(kafka, topic, dlq)
    bad["sinks"]["kafka"].update(kafka.sink_settings("SASL_PLAINTEXT", "SCRAM-SHA-512"))
    good = json.loads(json.dumps(bad))
    bad["sinks"]["kafka"]["auth"]["password"] = "wrong-password"
    bad["sinks"]["kafka"]["dlq_config"]["reprocessing_config"]["enabled"] = False
    with Shipper(bad) as s:
        results = [s.submit_lines(lines(i, 100)).result(60) for i in range(0, 500, 100)]
        states = s.breaker_states()
    assert all(r.ok and r.delivered == 0 and r.dlq == 100 for r in results)
    assert max(st["opens_total"] for st in states.values()) >= 1, states
    with LmdbDlqStore(dlq) as store:
        recs = store.fetch(1000)
    assert len(recs) == 500
    assert {x.reason for x in recs} <= {"auth_failure", "circuit_open"}
    assert any("SASL authentication failed" in x.error for x in recs)
    assert all("wrong-password" not in x.error for x in recs)
    # The right password: the new shipper replays the DLQ on start.
    with Shipper(good) as s:
        wait_until(lambda: s.dlq_count() == 0, 60, "the replay to drain the DLQ")
    assert set(seqs(kafka, topic, 500)) == set(range(500))


def test_backpressure_thresholds_shed_low_levels_first(
    kafka: LocalKafka, topic: str, broker: BrokerSwitch, tmp_path: Path
) -> None:
    """A queue of 1000 with Kafka away: warning, critical, then emergency shedding of
    debug/info into the DLQ, while error entries wait; all accounted for after recovery."""
    dlq = str(tmp_path / "dlq")
    cfg = resilient(
        kafka,
        topic,
        dlq,
        queue_size=1000,
        batch_size=100,
        timeout="60s",
        circuit_breaker={"failure_threshold": 1000, "success_threshold": 1, "timeout": "60s"},
        routing={"enabled": False},  # every level in one queue
    )
    # Keep what was shed in the DLQ so the test can look at it.
    cfg["sinks"]["kafka"]["dlq_config"]["reprocessing_config"]["enabled"] = False
    # Several senders at once can fill a queue past the emergency band; one driver keeps
    # itself below the warning band unless told otherwise, as here.
    cfg["pipeline"] = {
        "max_inflight_submissions": 32,
        "max_inflight_entries": 100_000,
        "submit_timeout": "60s",
    }

    def level(i: int) -> str:
        return ("error", "debug", "info", "warn")[i % 4]

    broker.stop()
    s = Shipper(cfg)
    try:
        acks = [s.submit_lines(lines(i, 100, level)) for i in range(0, 1200, 100)]
        wait_until(lambda: any(q["shed"] > 0 for q in s.queue_stats()), 60, "emergency shedding")
        q = s.queue_stats()[0]
        assert q["backpressure_warning"] > 0 and q["backpressure_critical"] > 0, q
        assert q["backpressure_emergency"] > 0 and q["queued"] <= 1000, q
        broker.start()
        results = [a.result(120) for a in acks]
    finally:
        s.close()
    assert all(r.ok for r in results), [r.summary() for r in results if not r.ok]
    assert sum(r.delivered + r.dlq for r in results) == 1200
    with LmdbDlqStore(dlq) as store:
        shed = store.fetch(2000, reasons=["emergency_backpressure"])
    assert shed, "nothing was shed"
    levels = Counter(json.loads(x.value)["level"] for x in shed)
    assert "error" not in levels, levels


def dead_broker() -> str:
    """An address where nothing listens: what a client sees of a broker that is gone
    (connection refused), without stopping the session's broker."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_full_dlq_makes_submit_raise_and_every_entry_is_reported(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    dlq = str(tmp_path / "dlq")
    cfg = resilient(
        kafka,
        topic,
        dlq,
        timeout="2s",
        brokers=[dead_broker()],
        dlq_config={"path": dlq, "max_disk_bytes": 1 << 16, "map_size_bytes": 1 << 20},
    )
    cfg["pipeline"] = {"submit_timeout": "3s"}
    payload = "p" * 1000
    with Shipper(cfg) as s:
        first = s.submit([{"message": payload, "fields": {"seq": i}} for i in range(300)])
        r = first.result(60)
        # 300 KB of failed entries do not fit a 64 KiB budget: they stay reported failures.
        assert not r.ok and r.delivered + r.dlq + r.failed == 300
        assert r.dlq_refused > 0
        assert any(f.dropped == DropReason.DLQ_FULL for f in r.failures)
        t0 = time.monotonic()
        with pytest.raises(BackpressureError, match="disk budget"):
            s.submit([{"message": "more"}])
        assert 2.5 < time.monotonic() - t0 < 30
        stats = s.stats()
    assert stats.entries_in == 300
    assert stats.delivered + stats.dlq + stats.failed == 300


def test_a_stop_with_kafka_down_parks_every_queued_entry_in_the_dlq(
    kafka: LocalKafka, topic: str, broker: BrokerSwitch, tmp_path: Path
) -> None:
    # Kafka down at close: entries wait in librdkafka (message timeout 60 s) past the
    # drain timeout. The stop parks them in the DLQ instead of dropping them.
    dlq = str(tmp_path / "dlq")
    # Only failures open the breaker here (no early "unreachable" switch), so the
    # entries sit in librdkafka when the stop comes: the park at shutdown is tested.
    cfg = resilient(
        kafka,
        topic,
        dlq,
        timeout="60s",
        circuit_breaker={"failure_threshold": 3, "timeout": "3s", "unreachable_after": 0},
    )
    cfg["pipeline"] = {"drain_timeout": "2s"}
    broker.stop()
    s = Shipper(cfg)
    acks = [s.submit_lines(lines(i * 125, 125)) for i in range(8)]  # 8: all in flight
    t0 = time.monotonic()
    report = s.close()
    assert time.monotonic() - t0 < 60
    results = [a.result(5) for a in acks]
    assert report.drained, str(report)
    assert sum(r.delivered + r.dlq for r in results) == 1000
    assert all(r.ok for r in results)
    with LmdbDlqStore(dlq) as store:
        recs = store.fetch(2000)
    assert len(recs) == 1000
    assert {r.reason for r in recs} <= {"shutdown", "timeout", "circuit_open"}
    assert any(r.reason == "shutdown" for r in recs)
    broker.start()
    # The next start replays them: every one arrives.
    with Shipper(resilient(kafka, topic, dlq)) as again:
        wait_until(lambda: again.dlq_count() == 0, 120, "the DLQ to drain")
    assert sorted(seqs(kafka, topic, 1000)) == list(range(1000))


def test_http_answers_503_while_kafka_is_down_and_the_dlq_is_full(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    dlq = str(tmp_path / "dlq")
    cfg = resilient(
        kafka,
        topic,
        dlq,
        timeout="2s",
        brokers=[dead_broker()],
        dlq_config={"path": dlq, "max_disk_bytes": 1 << 16, "map_size_bytes": 1 << 20},
    )
    cfg["sources"] = {"http": {"enabled": True, "port": 0}}
    with Shipper(cfg) as s:
        s.start_sources()
        assert s.http_url is not None
        body = b"\n".join(
            json.dumps({"message": "p" * 1000, "fields": {"seq": i}}).encode() for i in range(300)
        )
        req = urllib.request.Request(s.http_url, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=120)
        assert info.value.code == 503
        assert int(info.value.headers["Retry-After"]) > 0
        with info.value:  # its response holds the connection's socket
            answer = json.loads(info.value.read())
        assert "DLQ" in answer["error"]
        # Right after, the intake refuses at once rather than take more of the same.
        t0 = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as again:
            urllib.request.urlopen(
                urllib.request.Request(s.http_url, data=b'{"message":"x"}'), timeout=30
            )
        again.value.close()
        assert again.value.code == 503 and time.monotonic() - t0 < 2


CHILD = r"""
import json, sys, time, ray
ray.init(address="local", _temp_dir=sys.argv[3], include_dashboard=False, num_cpus=2,
         log_to_driver=False)
from actors.pipeline import Shipper
from tests.integration.test_faults import lines
cfg = json.loads(open(sys.argv[1]).read())
n = int(sys.argv[2])
s = Shipper(cfg)
acks = [s.submit_lines(lines(i, 500)) for i in range(0, n, 500)]
res = [a.result(120) for a in acks]
print(json.dumps({"acked": sum(r.delivered + r.dlq for r in res),
                  "dlq": sum(r.dlq for r in res), "ok": all(r.ok for r in res)}), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_sigkill_of_the_whole_shipper_with_a_full_dlq_loses_nothing(
    kafka: LocalKafka, topic: str, broker: BrokerSwitch, tmp_path: Path
) -> None:
    n = 3000
    dlq = str(tmp_path / "dlq")
    cfg = resilient(kafka, topic, dlq, timeout="2s")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    broker.stop()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg_path), str(n), ray_tmp],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        start_new_session=True,
        text=True,
    )
    try:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline() or "{}")
        assert report.get("ok") and report["acked"] == n and report["dlq"] == n, report
    finally:
        # The whole shipper dies at once: driver, actors, Ray's own processes.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        kill_by_cmdline(ray_tmp)
    broker.start()
    with LmdbDlqStore(dlq) as store:
        assert store.count() == n, "the DLQ lost records in the crash"
    with Shipper(resilient(kafka, topic, dlq)) as s:
        wait_until(lambda: s.dlq_count() == 0, 90, "the restarted shipper to drain the DLQ")
    assert set(seqs(kafka, topic, n)) == set(range(n))


def kill_by_cmdline(marker: str) -> None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass
