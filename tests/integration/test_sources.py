"""Real inputs against the real broker and real Ray: stdin, followed files, HTTP.

Each test reads Kafka back and counts every line: delivered, exactly once where
nothing crashed, and with duplicates only for lines that were in flight (and
counted) where something did.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.pipeline import Shipper
from shipper.testing import LocalKafka, consume_all, kill_tree
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

SHIPPER = str(Path(sys.executable).with_name("shipper"))


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def seqs_in(kafka: LocalKafka, topic: str, expected: int, timeout: float = 120) -> Counter[int]:
    msgs = consume_all(kafka.client_config(), topic, expected=expected, timeout=timeout, idle=3)
    return Counter(int(json.loads(m.value())["fields"]["seq"]) for m in msgs)


def line(i: int) -> str:
    return json.dumps({"message": f"line {i}", "level": "info", "fields": {"seq": i}})


def count_in(kafka: LocalKafka, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**kafka.client_config(), "group.id": "count", "log_level": 4})
    try:
        md = c.list_topics(topic, timeout=5).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            total += hi - lo
        return total
    finally:
        c.close()


# --------------------------------------------------------------------------- stdin


def test_a_line_on_a_pipe_that_stays_open_is_in_kafka_within_2s(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    import ray

    cfg = sink_config(kafka, topic, batch_timeout="200ms")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [SHIPPER, "run", "--config", str(path), "--summary-json", str(tmp_path / "s.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address},
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write((line(0) + "\n").encode())
        proc.stdin.flush()
        wait_until(lambda: count_in(kafka, topic) >= 1, 90, "the first line (start-up)")
        t0 = time.monotonic()
        proc.stdin.write((line(1) + "\n").encode())
        proc.stdin.flush()
        wait_until(lambda: count_in(kafka, topic) >= 2, 10, "the second line")
        took = time.monotonic() - t0
        assert took < 2.0, f"a line took {took:.2f}s through an open pipe"
        # SIGTERM ends the wait for input at once; the summary follows.
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["delivered"] == 2 and summary["drained"]


# --------------------------------------------------------------------------- files


@pytest.fixture
def file_shipper(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> Iterator[Callable[..., Shipper]]:
    made: list[Shipper] = []

    def make(
        sink: dict[str, Any] | None = None, group: dict[str, Any] | None = None, **tail: Any
    ) -> Shipper:
        cfg = sink_config(kafka, topic, **{"batch_timeout": "100ms", **(sink or {})})
        files = {"paths": [str(tmp_path / "logs" / "app.log*")], "labels": {"svc": "t"}}
        cfg["sources"] = {
            "files": [{**files, **(group or {})}],
            "checkpoints": {"path": str(tmp_path / "cp")},
            "tail": {"poll_interval": "50ms", "close_inactive": "2s", **tail},
        }
        s = Shipper(cfg)
        made.append(s)
        s.start_sources()
        return s

    (tmp_path / "logs").mkdir()
    yield make
    for s in made:
        s.close()


def test_rotation_by_rename_and_copy_truncate_while_writing_delivers_each_line_once(
    kafka: LocalKafka, topic: str, tmp_path: Path, file_shipper: Callable[..., Shipper]
) -> None:
    n = 100_000
    log = tmp_path / "logs" / "app.log"
    s = file_shipper()
    lock = threading.Lock()

    def writer() -> None:
        fh = log.open("a")
        for i in range(n):
            with lock:
                fh.write(line(i) + "\n")
            if i % 2000 == 1999:
                fh.flush()
                time.sleep(0.01)
            if i == 30_000:  # rotation by rename (logrotate's default)
                with lock:
                    fh.close()
                    log.rename(log.with_name("app.log.1"))
                    fh = log.open("a")
            if i == 65_000:  # rotation by copy and truncate (logrotate copytruncate)
                with lock:
                    fh.flush()
                    shutil.copyfile(log, log.with_name("app.log.2"))
                    with log.open("r+") as t:
                        t.truncate(0)
                    fh.seek(0)
        fh.close()

    w = threading.Thread(target=writer)
    w.start()
    w.join(120)
    got = seqs_in(kafka, topic, n, timeout=180)
    missing = sorted(set(range(n)) - set(got))
    twice = {k: v for k, v in got.items() if v > 1}
    if missing:
        # Say where they went: the DLQ, counted failures, or nowhere (a loss).
        dlq = s.dlq_count()
        s.close()
        pytest.fail(
            f"{len(missing)} lines missing ({missing[0]}-{missing[-1]}); the DLQ holds "
            f"{dlq}; the file source's lines: {s.source_stats}, counts: {s.source_counts}"
        )
    assert not twice, f"{len(twice)} lines more than once, e.g. {list(twice)[:5]}"
    first = consume_all(kafka.client_config(), topic, expected=1, timeout=30)[0]
    labels = json.loads(first.value())["labels"]
    assert labels["svc"] == "t" and labels["file"].startswith(str(tmp_path / "logs"))
    s.close()
    assert s.source_counts["file_lines"] == n


def test_file_events_wake_the_source_between_polls(
    kafka: LocalKafka, topic: str, tmp_path: Path, file_shipper: Callable[..., Shipper]
) -> None:
    # Polling every 10 s: a line appended, and a new file that matches, still arrive
    # within 2 s each, because the directory's events wake the source.
    log = tmp_path / "logs" / "app.log"
    log.write_text(line(0) + "\n")
    s = file_shipper(poll_interval="10s")
    wait_until(lambda: count_in(kafka, topic) >= 1, 60, "the line there at the start")
    t0 = time.monotonic()
    with log.open("a") as fh:
        fh.write(line(1) + "\n")
    wait_until(lambda: count_in(kafka, topic) >= 2, 15, "the appended line")
    appended = time.monotonic() - t0
    t0 = time.monotonic()
    (tmp_path / "logs" / "app.log.new").write_text(line(2) + "\n")
    wait_until(lambda: count_in(kafka, topic) >= 3, 15, "the new file's line")
    created = time.monotonic() - t0
    assert appended < 2.0 and created < 2.0, (appended, created)
    s.close()
    assert s.source_counts["file_lines"] == 3
    assert sorted(seqs_in(kafka, topic, 3)) == [0, 1, 2]


def java_entry(i: int, frames: int) -> str:
    head = f"2026-01-01 10:00:{i % 60:02d} ERROR request {i} failed\n"
    trace = f"java.lang.IllegalStateException: boom {i}\n" + "".join(
        f"\tat com.example.Handler.step{k}(Handler.java:{k})\n" for k in range(frames)
    )
    return head + trace + "Caused by: java.io.IOException: disk\n\t... 3 more\n"


def test_multiline_java_ships_each_stack_trace_as_one_entry(
    kafka: LocalKafka, topic: str, tmp_path: Path, file_shipper: Callable[..., Shipper]
) -> None:
    log = tmp_path / "logs" / "app.log"
    log.write_text("".join(java_entry(i, 3 + i % 5) for i in range(50)))
    s = file_shipper(group={"multiline": "java"})
    # The last trace is held until a next entry starts or its timeout (1 s) passes; a
    # frame appended meanwhile still joins it.
    with log.open("a") as fh:
        fh.write("\tat com.example.Late.run(Late.java:1)\n")
    wait_until(lambda: count_in(kafka, topic) >= 50, 60, "50 entries")
    s.close()
    msgs = consume_all(kafka.client_config(), topic, expected=50, timeout=30)
    got = sorted(json.loads(m.value())["message"] for m in msgs)  # 3 partitions: any order
    want = [java_entry(i, 3 + i % 5).rstrip("\n") for i in range(49)]
    want.append(java_entry(49, 3 + 49 % 5) + "\tat com.example.Late.run(Late.java:1)")
    assert got == sorted(want)
    assert s.source_counts["file_lines"] == 50  # entries, not physical lines


def test_cri_container_logs_arrive_with_pod_labels_stream_and_joined_lines(
    kafka: LocalKafka, topic: str, tmp_path: Path, file_shipper: Callable[..., Shipper]
) -> None:
    d = tmp_path / "containers"
    d.mkdir()
    log = d / f"web-1_shop_app-{'ab' * 32}.log"
    log.write_text(
        "".join(f"2026-01-01T00:00:{i:02d}.5Z stdout F line {i}\n" for i in range(20))
        + "2026-01-01T00:01:00Z stderr P first half, \n"
        + "2026-01-01T00:01:01Z stderr F second half\n"
        + "not a cri line\n"
    )
    s = file_shipper(group={"paths": [str(d / "*.log")], "format": "cri"})
    wait_until(lambda: count_in(kafka, topic) >= 22, 60, "22 entries")
    s.close()
    got = [json.loads(m.value()) for m in consume_all(kafka.client_config(), topic, expected=22)]
    by_msg = {e["message"]: e for e in got}
    assert len(got) == 22 and set(by_msg) == {
        *(f"line {i}" for i in range(20)),
        "first half, second half",
        "not a cri line",
    }
    joined = by_msg["first half, second half"]
    assert joined["labels"]["stream"] == "stderr"
    assert joined["timestamp"] == "2026-01-01T00:01:00Z"
    for e in got:
        assert (e["labels"]["namespace"], e["labels"]["pod"], e["labels"]["container"]) == (
            "shop", "web-1", "app"
        )  # fmt: skip
    assert "stream" not in by_msg["not a cri line"]["labels"]


def test_a_backlog_of_short_lines_is_read_in_blocks_the_queue_can_take(
    kafka: LocalKafka, topic: str, tmp_path: Path, file_shipper: Callable[..., Shipper]
) -> None:
    # 30,000 lines of about 60 bytes are waiting; one 1 MiB read holds all of them,
    # 15 times a topic queue of 2,000. Read as one block, the Batcher would have shed
    # most of them to the DLQ (queue_emergency_threshold); the source reads at most
    # its line budget per round instead, and every line goes to Kafka.
    n = 30_000
    (tmp_path / "logs" / "app.log").write_text("".join(line(i) + "\n" for i in range(n)))
    s = file_shipper({"queue_size": 2000})
    got = seqs_in(kafka, topic, n, timeout=180)
    assert s.dlq_count() == 0
    assert sorted(got) == list(range(n)) and max(got.values()) == 1
    s.close()
    assert s.source_counts["file_lines"] == n


def test_kill_9_while_tailing_then_restart_loses_nothing(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    """The shipper is killed (SIGKILL, the command and its processes; its actors on the
    session's Ray die with their driver) and started again on the same checkpoints."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    n = 60_000
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = sink_config(kafka, topic, batch_timeout="100ms")
    cfg["sources"] = {
        "files": [{"paths": [str(logs / "*.log")]}],
        "checkpoints": {"path": str(tmp_path / "cp")},
        # Polling only (no inotify wake-ups): the path taken on file systems without
        # events, kept under test here.
        "tail": {"poll_interval": "50ms", "read_bytes": 65536, "watch": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with (logs / "app.log").open("w") as fh:
        fh.write("".join(line(i) + "\n" for i in range(n)))

    def run(summary: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [SHIPPER, "run", "--config", str(path), "--summary-json", str(summary)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    first = run(tmp_path / "first.json")
    try:
        wait_until(lambda: count_in(kafka, topic) >= n // 4, 120, "a quarter of the lines")
    finally:
        kill_tree(first.pid)  # SIGKILL, the command and what it started: no drain
        first.communicate(timeout=30)
    before = count_in(kafka, topic)
    assert before < n, "everything was shipped before the kill: nothing was tested"
    second = run(tmp_path / "second.json")
    try:
        # Duplicates count too: wait until the count stops growing past n.
        seen = [-1]

        def settled() -> bool:
            now = count_in(kafka, topic)
            done = now >= n and now == seen[0]
            seen[0] = now
            return done

        wait_until(settled, 120, "every line", step=2.0)
        second.send_signal(signal.SIGTERM)
        _out, err = second.communicate(timeout=90)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err.decode()
    got = seqs_in(kafka, topic, count_in(kafka, topic))  # every message, duplicates too
    assert set(got) == set(range(n))
    duplicates = sum(v - 1 for v in got.values())
    summary = json.loads((tmp_path / "second.json").read_text())
    resent = summary["sources"]["file_resent"]
    # Only lines that were handed over but not acknowledged when it died come again,
    # and each of those is counted.
    assert duplicates <= resent, (duplicates, resent)


# --------------------------------------------------------------------------- HTTP


def post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(url, data=body, method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), resp.headers
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"{}"), err.headers


def test_http_intake_answers_every_status(
    kafka: LocalKafka, topic: str, ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPPER_TEST_TOKEN", "s3cret-token")
    # A tiny queue gives the intake a budget of two entries in flight (429 past it).
    cfg = sink_config(kafka, topic, batch_size=2, queue_size=2, batch_timeout="3s")
    cfg["sources"] = {
        "http": {
            "enabled": True,
            "port": 0,
            "max_body_bytes": 4096,
            "auth_token_env": "SHIPPER_TEST_TOKEN",
        }
    }
    with Shipper(cfg) as s:
        s.start_sources()
        url = s.http_url
        assert url is not None
        tok = "s3cret-token"
        assert post(url, b'{"message":"x"}')[0] == 401
        assert post(url, b'{"message":"x"}', "wrong")[0] == 401
        assert post(url.replace("/v1/logs", "/nope"), b"", tok)[0] == 404
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {tok}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        info.value.close()  # its response holds the connection's socket
        assert info.value.code == 405
        assert post(url, b"x" * 5000, tok)[0] == 413
        assert post(url, b'[{"message": "unclosed"', tok)[0] == 400
        status, body, _ = post(
            url, b'{"message":"good","fields":{"seq":1}}\n{"message": 5}\nplain text', tok
        )
        assert status == 200, body
        # Every line has an outcome: the two good ones in Kafka (or shed to the DLQ by
        # this test's tiny queue), the bad one in the DLQ, listed by its number.
        assert body["accepted"] == 2 and body["delivered"] + body["dlq"] == 3
        assert [r["line"] for r in body["rejected"]] == [2]
        status, body, _ = post(url, b'[{"message":"a"}, {"message":"b",\n "level":"warn"}]', tok)
        assert status == 200 and body["accepted"] == 2 and body["delivered"] + body["dlq"] == 2
        # One slow request in flight (its batch waits out batch_timeout) fills the
        # intake's small budget: the next one is refused with 429 and Retry-After.
        slow = threading.Thread(target=post, args=(url, b'{"message":"slow"}', tok))
        slow.start()
        time.sleep(0.5)
        status, _, headers = post(url, b'{"message":"refused"}\n{"message":"too"}', tok)
        slow.join(30)
        assert status == 429 and headers["Retry-After"]
        s.close()


def test_http_intake_over_mutual_tls_takes_only_clients_with_a_certificate(
    kafka: LocalKafka, topic: str, ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS with the local test CA's certificates: a client with a certificate signed
    by client_ca_file is served; one without, or plain HTTP, is not."""
    import ssl

    certs = Path(kafka.ca_file).parent
    monkeypatch.setenv("SHIPPER_TEST_TOKEN", "tls-token")
    cfg = sink_config(kafka, topic)
    cfg["sources"] = {
        "http": {
            "enabled": True,
            "port": 0,
            "auth_token_env": "SHIPPER_TEST_TOKEN",
            "tls": {
                "cert_file": str(certs / "broker.crt"),  # for 127.0.0.1 and localhost
                "key_file": str(certs / "broker.key"),
                "client_ca_file": kafka.ca_file,
            },
        }
    }
    with Shipper(cfg) as s:
        started = s.start_sources()
        url = s.http_url
        assert url is not None and url.startswith("https://127.0.0.1:"), url
        assert not any("travels in clear" in line for line in started)
        body = b"\n".join(line(i).encode() for i in range(10))
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Authorization": "Bearer tls-token"}
        )
        client = ssl.create_default_context(cafile=kafka.ca_file)
        client.load_cert_chain(kafka.client_cert, kafka.client_key)
        with urllib.request.urlopen(req, timeout=60, context=client) as resp:
            answer = json.loads(resp.read())
        assert resp.status == 200 and answer["delivered"] == 10, answer
        # Verified server, but no client certificate: the handshake is refused.
        anonymous = ssl.create_default_context(cafile=kafka.ca_file)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(req, timeout=30, context=anonymous).close()
        # Plain HTTP to the same port gets no answer from the intake.
        plain = urllib.request.Request(url.replace("https://", "http://"), data=body)
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(plain, timeout=30).close()
    assert sorted(seqs_in(kafka, topic, 10)) == list(range(10))


def test_a_token_on_plain_http_beyond_loopback_is_warned_about(
    kafka: LocalKafka, topic: str, ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPPER_TEST_TOKEN", "s3cret-plain")
    cfg = sink_config(kafka, topic)
    cfg["sources"] = {
        "http": {
            "enabled": True,
            "host": "0.0.0.0",
            "port": 0,
            "auth_token_env": "SHIPPER_TEST_TOKEN",
        }
    }
    with Shipper(cfg) as s:
        started = s.start_sources()
    warnings = [line for line in started if "travels in clear" in line]
    assert len(warnings) == 1 and "sources.http.tls" in warnings[0], started
    assert "$SHIPPER_TEST_TOKEN" in warnings[0] and "s3cret-plain" not in warnings[0]


LOAD = r"""
import json, sys, time, urllib.request, urllib.error, concurrent.futures as cf
url, requests, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def send(r):
    body = "\n".join(json.dumps({"message": "load", "fields": {"seq": r * per + i}})
                     for i in range(per)).encode()
    for _ in range(200):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as resp:
                return json.loads(resp.read())["accepted"]
        except urllib.error.HTTPError as err:
            if err.code not in (429, 503):
                raise
            time.sleep(float(err.headers.get("Retry-After", "1")) / 10)
    raise SystemExit("gave up")
t0 = time.monotonic()
with cf.ThreadPoolExecutor(4) as pool:
    accepted = sum(pool.map(send, range(requests)))
print(json.dumps({"accepted": accepted, "seconds": time.monotonic() - t0}))
"""


def test_http_load_from_another_process_delivers_every_accepted_line(
    kafka: LocalKafka, topic: str, ray_session: None
) -> None:
    cfg = sink_config(kafka, topic, batch_timeout="50ms")
    cfg["sources"] = {"http": {"enabled": True, "port": 0}}
    requests, per = 200, 250
    with Shipper(cfg) as s:
        s.start_sources()
        assert s.http_url is not None
        out = subprocess.run(
            [sys.executable, "-c", LOAD, s.http_url, str(requests), str(per)],
            capture_output=True,
            timeout=240,
            check=True,
        )
    result = json.loads(out.stdout)
    assert result["accepted"] == requests * per
    got = seqs_in(kafka, topic, requests * per)
    assert set(got) == set(range(requests * per))
