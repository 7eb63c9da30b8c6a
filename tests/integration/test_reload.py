"""Reloading a running ``shipper run`` on the real broker, as a user would: SIGHUP with
a file that does not validate (refused, the run goes on), then ``shipper reload`` with
a changed file (labels and headers switch over), every line in Kafka once, the reload
counter on the metrics endpoint, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

SHIPPER = str(Path(sys.executable).with_name("shipper"))


def line(i: int) -> str:
    return json.dumps({"message": f"line {i}", "level": "info", "fields": {"seq": i}})


class Output:
    """The command's stdout and stderr, read as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (proc.stdout, proc.stderr)
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                with self._lock:
                    self.text += raw.decode(errors="replace")

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=30)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text[-3000:]}"
            time.sleep(0.2)


def shippers() -> set[str]:
    return {
        a["namespace"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"] == "supervisor" and a["namespace"].startswith("shipper-")
    }


def test_sighup_refuses_a_bad_file_and_shipper_reload_switches_over_losing_nothing(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"

    # A fixed metrics port: the switch-over's new telemetry actor must bind it again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def config(version: str, **kafka_extra: Any) -> dict[str, Any]:
        cfg = sink_config(kafka, topic, batch_timeout="50ms", **kafka_extra)
        cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
        cfg["sources"] = {
            "files": [{"paths": [str(logs / "*.log")], "labels": {"v": version}}],
            "checkpoints": {"path": str(tmp_path / "cp")},
            "tail": {"poll_interval": "100ms"},
        }
        return cfg

    path = tmp_path / "shipper.yaml"
    path.write_text(yaml.safe_dump(config("1")))
    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": gcs}
    before = shippers()
    proc = subprocess.Popen(
        [SHIPPER, "run", "--config", str(path), "--summary-json", str(tmp_path / "s.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out = Output(proc)

    def write(lo: int, hi: int) -> None:
        with app.open("a") as f:
            f.write("".join(line(i) + "\n" for i in range(lo, hi)))

    def in_kafka(n: int) -> list[Any]:
        return consume_all(kafka.client_config(), topic, expected=n, timeout=90)

    try:
        out.wait_for("serving until SIGTERM", 120)
        write(0, 100)
        in_kafka(100)

        # A file that does not validate: refused, the running configuration stays.
        bad = config("bad")
        bad["sinks"]["kafka"]["compression"] = "brotli"
        path.write_text(yaml.safe_dump(bad))
        proc.send_signal(signal.SIGHUP)
        out.wait_for("reload refused", 30)
        assert "sinks.kafka.compression: 'brotli' is not one of" in out.text
        write(100, 200)
        in_kafka(200)

        # A changed file, through `shipper reload`: the new labels and headers apply.
        path.write_text(yaml.safe_dump(config("2", headers={"env": "two"})))
        [ns] = shippers() - before
        asked = subprocess.run(
            [SHIPPER, "reload", "--address", gcs, "--namespace", ns],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        out.wait_for("reload: the new configuration runs", 120)
        assert "sinks.kafka.headers" in out.text and "sources.files" in out.text
        write(200, 300)
        msgs = in_kafka(300)

        url = out.text.rsplit("reload: metrics at ", 1)[1].split()[0]
        assert f":{port}/" in url
        with urllib.request.urlopen(url, timeout=30) as resp:
            scraped = resp.read().decode()
        for result, n in (("applied", 1), ("refused", 1)):
            assert any(
                row.startswith("log_capturer_config_reloads_total")
                and f'result="{result}"' in row
                and row.rsplit(" ", 1)[1] in (str(n), f"{n}.0")
                for row in scraped.splitlines()
            ), scraped
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
        out.join()

    assert proc.returncode == 0, out.text[-3000:]
    assert "Traceback" not in out.text, out.text[-3000:]
    seqs = Counter(int(json.loads(m.value())["fields"]["seq"]) for m in msgs)
    assert set(seqs) == set(range(300)) and max(seqs.values()) == 1
    by_seq = {int(json.loads(m.value())["fields"]["seq"]): m for m in msgs}
    assert json.loads(by_seq[150].value())["labels"]["v"] == "1"
    late = by_seq[250]
    assert json.loads(late.value())["labels"]["v"] == "2"
    assert dict(late.headers() or [])["env"] == b"two"
    assert not by_seq[50].headers()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reloads"]["applied"] == 1 and summary["reloads"]["refused"] == 1
    assert summary["sources"]["file_lines"] == 300, summary


def test_a_reload_while_reading_a_quiet_pipe_switches_over_and_reads_on(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    path = tmp_path / "shipper.yaml"
    path.write_text(yaml.safe_dump(sink_config(kafka, topic, batch_timeout="50ms")))
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(
        [SHIPPER, "run", "--config", str(path), "--summary-json", str(tmp_path / "s.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out = Output(proc)
    assert proc.stdin is not None
    try:
        proc.stdin.write("".join(line(i) + "\n" for i in range(50)).encode())
        proc.stdin.flush()
        consume_all(kafka.client_config(), topic, expected=50, timeout=90)
        # The pipe is quiet now: the reload happens while the command waits for input.
        path.write_text(
            yaml.safe_dump(sink_config(kafka, topic, batch_timeout="50ms", headers={"env": "b"}))
        )
        proc.send_signal(signal.SIGHUP)
        out.wait_for("reload: the new configuration runs", 120)
        proc.stdin.write("".join(line(i) + "\n" for i in range(50, 100)).encode())
        proc.stdin.close()
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        out.join()
    assert proc.returncode == 0, out.text[-3000:]
    assert "Traceback" not in out.text, out.text[-3000:]
    msgs = consume_all(kafka.client_config(), topic, expected=100, timeout=60)
    heads = {int(json.loads(m.value())["fields"]["seq"]): dict(m.headers() or []) for m in msgs}
    assert sorted(heads) == list(range(100)) and len(msgs) == 100
    assert all(heads[i] == {} for i in range(50))
    assert all(heads[i] == {"env": b"b"} for i in range(50, 100))
