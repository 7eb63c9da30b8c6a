"""`make bench` with tiny parameters, so the benchmark suite cannot rot: every
contender it runs here must produce figures and the topic counts must check out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipper.testing import LocalKafka

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_end_to_end_with_small_parameters(
    kafka: LocalKafka, ray_session: None, tmp_path: Path
) -> None:
    import ray

    out = tmp_path / "bench.json"
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "run.py"),
            "--entries", "3000", "--runs", "1", "--codecs", "snappy",
            "--contenders", "bare,pipeline",
            "--latency-seconds", "1", "--latency-rate", "2000", "--no-memory",
            "--settle-seconds", "0",
            "--ray-address", ray.get_runtime_context().gcs_address,
            "--json", str(out),
        ],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    # Exit 0 only when every run's topic held exactly the entries sent.
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    snappy = report["throughput"]["snappy"]
    for name in ("bare", "pipeline"):
        run = snappy[name]["runs"][0]
        assert "error" not in run, run
        assert run["verified"] and run["msg_per_s"] > 0
    assert report["ratios"]["snappy"]["pipeline/bare"] > 0
    lat = report["latency"]
    for name in ("pipeline", "floor", "bare"):
        m = lat[name]["median"]
        assert m["runs_ok"] == 1, lat[name]
        assert 0 < m["latency_p50_ms"] <= m["latency_p99_ms"]
        assert m["delivered"] == 2000
    # The printed report carries the tables and the targets.
    assert "pipeline / bare" in proc.stdout and "| floor (3 Ray calls) |" in proc.stdout
    assert "P99 < 12 ms" in proc.stdout


@pytest.mark.parametrize(
    ("script", "keys", "extra"),
    [
        # The file source, its multiline and CRI variants, and the HTTP intake (the API
        # pipeline is the bench/run.py smoke run's).
        (
            "bench_sources.py",
            ("rounds", "summary", "kcat"),
            ("--rounds", "1", "--contenders", "file,file_java,file_cri,http"),
        ),
        ("bench_drain.py", ("pipeline_per_s", "drain_per_s"), ()),
        ("bench_fleet.py", ("runs",), ("--nodes", "2")),
    ],
)
def test_the_sources_drain_and_fleet_benches_run_with_small_parameters(
    kafka: LocalKafka,
    ray_session: None,
    tmp_path: Path,
    script: str,
    keys: tuple[str, ...],
    extra: tuple[str, ...],
) -> None:
    import ray

    out = tmp_path / "out.json"
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    if script != "bench_fleet.py":
        # The contenders join the session's Ray instead of starting one each: this run
        # checks that every contender works, not its figures (those come from make bench).
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        env["BENCH_SETTLE_SECONDS"] = "0"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--entries", "3000", "--json", str(out),
         *extra],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    # Exit 0 only when every topic held exactly the entries sent.
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in keys:
        assert report[key], (key, report)
    if script == "bench_sources.py":
        assert set(report["summary"]) == {"file", "file_java", "file_cri", "http"}
        assert all(report["summary"][k]["lines_per_s"] > 0 for k in report["summary"])
