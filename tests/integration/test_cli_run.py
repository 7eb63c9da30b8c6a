"""`shipper run` as a user runs it: a subprocess reading a file or stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

SHIPPER = str(Path(sys.executable).parent / "shipper")


def write_config(kafka: LocalKafka, topic: str, tmp_path: Path, **over: object) -> Path:
    cfg = tmp_path / "shipper.yaml"
    cfg.write_text(yaml.safe_dump(sink_config(kafka, topic, **over)))
    return cfg


def high_watermark(kafka: LocalKafka, topic: str) -> int:
    c = Consumer({**kafka.client_config(), "group.id": "watermark"})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1])
    finally:
        c.close()


def env(join: bool = False) -> dict[str, str]:
    """The command's environment: a Ray of its own, or (``join``) the session's Ray,
    which saves the start of one (the own-Ray case is in the fault matrix)."""
    e = {**os.environ}
    e.pop("RAY_ADDRESS", None)
    if join:
        import ray

        e["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return e


def test_run_from_stdin_prints_a_summary_and_fails_on_bad_lines(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    good = [json.dumps({"message": f"line {i}", "level": "info"}) for i in range(1000)]
    data = "\n".join([*good[:500], '{"message": 42}', "plain text line", *good[500:]]) + "\n"
    cfg = write_config(kafka, topic, tmp_path, dlq_config={"enabled": False})
    out = subprocess.run(
        [SHIPPER, "run", "--config", str(cfg), "--summary-json", str(tmp_path / "s.json")],
        input=data,
        capture_output=True,
        text=True,
        timeout=180,
        env=env(join=True),
    )
    summary = json.loads((tmp_path / "s.json").read_text())
    # The bad line is reported (exit 1), the plain text line becomes an entry.
    assert out.returncode == 1, out.stderr[-2000:]
    assert summary["delivered"] == 1001 and summary["failed_by_reason"] == {
        "serialization_error": 1
    }
    assert "delivered" in out.stdout and "serialization_error" in out.stdout
    assert len(consume_all(kafka.client_config(), topic, expected=1001)) == 1001


def test_stdin_multiline_python_ships_a_traceback_as_one_entry(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/app/job.py", line 3, in <module>\n'
        "    run()\n"
        "ValueError: bad input\n"
    )
    data = "".join(f"2026-01-01 10:00:0{i} ERROR job {i} failed\n{tb}" for i in range(5))
    cfg = sink_config(kafka, topic)
    cfg["sources"] = {"stdin": {"multiline": "python"}}
    path = tmp_path / "shipper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [SHIPPER, "run", "--config", str(path), "--summary-json", str(tmp_path / "s.json")],
        input=data,
        capture_output=True,
        text=True,
        timeout=180,
        env=env(join=True),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "s.json").read_text())["delivered"] == 5
    msgs = consume_all(kafka.client_config(), topic, expected=5)
    got = sorted(json.loads(m.value())["message"] for m in msgs)
    assert got == [f"2026-01-01 10:00:0{i} ERROR job {i} failed\n{tb}".rstrip() for i in range(5)]


def test_sigterm_mid_stream_drains_and_loses_nothing_acknowledged(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    src = tmp_path / "big.jsonl"
    with src.open("w") as f:
        for i in range(400_000):
            f.write(json.dumps({"message": f"entry {i}", "fields": {"seq": i}}) + "\n")
    cfg = write_config(kafka, topic, tmp_path)
    proc = subprocess.Popen(
        [SHIPPER, "run", "--config", str(cfg), "--input", str(src),
         "--summary-json", str(tmp_path / "s.json"), "--block-bytes", "65536"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(join=True),
    )  # fmt: skip
    # Signal once shipping is visibly under way (Ray's start-up time varies a lot).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and high_watermark(kafka, topic) < 1000:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=180)
    assert (tmp_path / "s.json").exists(), f"exit {proc.returncode}: {stderr[-3000:]}"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert "stopped reading" in stderr, stderr[-2000:]
    assert summary["drained"] and summary["failed"] == 0, summary
    assert 0 < summary["delivered"] < 400_000, summary
    got = consume_all(kafka.client_config(), topic, timeout=60, idle=1.0)
    assert len(got) == summary["delivered"]
    assert len({json.loads(m.value() or b"{}")["fields"]["seq"] for m in got}) == len(got)


def test_a_ray_address_that_does_not_answer_fails_fast_and_says_what_to_do(
    kafka: LocalKafka, topic: str, tmp_path: Path
) -> None:
    cfg = write_config(kafka, topic, tmp_path)
    data = tmp_path / "in.log"
    data.write_text('{"message":"x"}\n')
    t0 = time.monotonic()
    out = subprocess.run(
        [SHIPPER, "run", "--config", str(cfg), "--input", str(data),
         "--ray-address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env=env(),
    )  # fmt: skip
    assert time.monotonic() - t0 < 30
    assert out.returncode == 2
    assert "127.0.0.1:1" in out.stderr and "ray start --head" in out.stderr
    assert "Traceback" not in out.stderr


# A `shipper run` whose input breaks after a few blocks: the reader raises mid-run, as
# a failing disk or a bug in a reader would. Everything else is the real command.
BREAKING = r"""
import sys
from shipper.sources import stdin

real = stdin.StreamReader.blobs

def blobs(self):
    for n, blob in enumerate(real(self)):
        if n == 3:
            raise RuntimeError("injected: the input broke")
        yield blob

stdin.StreamReader.blobs = blobs
from actors.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_error_mid_run_drains_parks_and_reports_in_one_line(
    kafka: LocalKafka, topic: str, tmp_path: Path, ray_session: None
) -> None:
    """Every line read before the error is in Kafka or the DLQ; stderr names the
    problem in one line (the traceback is in logging.file); the summary is printed;
    the exit code is 1."""

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"message": f"m{i}", "fields": {"seq": i}}) + "\n"
                           for i in range(20_000)))  # fmt: skip
    conf = sink_config(kafka, topic)
    conf["logging"] = {"file": str(tmp_path / "shipper.log")}
    cfg = tmp_path / "shipper.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    e = env(join=True)
    out = subprocess.run(
        [sys.executable, "-c", BREAKING, "run", "--config", str(cfg), "--input", str(src),
         "--block-bytes", "65536", "--summary-json", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=180, env=e,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    said = [ln for ln in out.stderr.splitlines() if "injected: the input broke" in ln]
    assert len(said) == 1 and said[0].startswith("shipper run: stopped by an error"), said
    assert "the traceback is in" in out.stderr
    assert "RuntimeError: injected" in (tmp_path / "shipper.log").read_text()
    assert "entries in" in out.stdout  # the summary
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["fatal"] and summary["drained"], summary
    read = summary["entries_in"]
    assert 0 < read < 20_000, summary  # stopped part-way: three blocks were read
    assert summary["delivered"] + summary["dlq"] == read
    got = consume_all(kafka.client_config(), topic, expected=summary["delivered"], timeout=60)
    in_kafka = {json.loads(m.value() or b"{}")["fields"]["seq"] for m in got}
    from shipper.dlq import LmdbDlqStore

    dlq = conf["sinks"]["kafka"]["dlq_config"]["path"]
    with LmdbDlqStore(dlq) as store:
        parked = {json.loads(r.value)["fields"]["seq"] for r in store.fetch(10**6)}
    assert in_kafka | parked == set(range(read)), "a line read before the error is lost"
