"""`ray job submit --working-dir . -- shipper run ...` against a head started with
`ray start --head`, as a user would run the shipper on a cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_shipper_runs_as_a_ray_job(kafka: LocalKafka, topic: str, tmp_path: Path) -> None:
    n = 5000
    data = tmp_path / "logs.jsonl"
    data.write_text(
        "".join(json.dumps({"message": f"job {i}", "level": "info"}) + "\n" for i in range(n))
    )
    cfg = tmp_path / "shipper.yaml"
    cfg.write_text(yaml.safe_dump(sink_config(kafka, topic)))

    gcs, dash = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Ray 2.60 switches a head to token auth when ~/.ray/auth_token exists (any local
    # ray.init() writes one); the job CLI then needs the same mode. Loopback only here.
    env["RAY_AUTH_MODE"] = "disabled"
    temp = Path("/tmp") / f"ray-job-{os.getpid()}"
    start = run(
        [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--include-dashboard=true",
         # Every per-node port of its own: the session's Ray instance holds the defaults,
         # and a dashboard agent that cannot bind never registers ("No available agent").
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}",
         f"--ray-client-server-port={free_port()}",
         f"--node-manager-port={free_port()}",
         f"--object-manager-port={free_port()}",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env,
    )  # fmt: skip
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        address = f"http://127.0.0.1:{dash}"
        # The job agent can take a while on a busy 2-core machine.
        deadline = time.monotonic() + 180
        submit = None
        while time.monotonic() < deadline:
            submit = run(
                [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
                 "--no-wait", "--", "shipper", "run", "--config", str(cfg), "--input", str(data),
                 "--summary-json", str(tmp_path / "summary.json")],
                env,
            )  # fmt: skip
            if submit.returncode == 0:
                break
            time.sleep(2)  # the job server comes up a little after `ray start` returns
        assert submit is not None and submit.returncode == 0, (
            submit.stderr[-3000:] if submit else ""
        )
        job_id = next(
            w.strip("'\"")
            for line in submit.stdout.splitlines()
            for w in line.split()
            if w.strip("'\"").startswith("raysubmit_")
        )
        status = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            st = run([str(BIN / "ray"), "job", "status", "--address", address, job_id], env)
            status = (st.stdout + st.stderr).upper()
            if any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
                break
            time.sleep(2)
        logs = run([str(BIN / "ray"), "job", "logs", "--address", address, job_id], env).stdout
        assert "SUCCEEDED" in status, f"{status}\n{logs[-4000:]}"
        assert "delivered" in logs
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["delivered"] == n and summary["failed"] == 0
        assert len(consume_all(kafka.client_config(), topic, expected=n, timeout=60)) == n
    finally:
        stop_head(temp)


def stop_head(temp: Path) -> None:
    """Stop only this head's processes (``ray stop`` would also stop the session's
    own Ray instance): every process whose command line names its temp folder."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(temp).encode() in cmdline:
                pids.append(int(proc.name))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if not pids:
            return
        time.sleep(3)
