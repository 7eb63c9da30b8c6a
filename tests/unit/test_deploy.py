"""The deployment files in the repository: checked by the tools that read them.

The compose file by ``docker-compose config`` (no engine, no image download), the
systemd unit by ``systemd-analyze verify``, and both against the service config they
run. ``scripts/install-test-tools`` (run by ``make test``) installs the tools; without
them these tests skip locally with the reason, and fail when ``CI`` is set.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shipper.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "examples" / "service.yaml"
UNIT = ROOT / "deploy" / "kafka-log-shipper.service"


def tool(*names: str) -> list[str]:
    for name in names:
        path = shutil.which(name)
        if path:
            return [path]
    if shutil.which("docker") and "docker-compose" in names:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if os.environ.get("CI"):
        pytest.fail(f"{names[0]} is missing; scripts/install-test-tools installs it")
    pytest.skip(f"{names[0]} is not installed (scripts/install-test-tools installs it)")


def test_the_service_config_is_valid() -> None:
    cfg = load_config(SERVICE)
    assert cfg.sources.any and cfg.sources.http.enabled and cfg.sources.files


def test_the_compose_file_passes_compose_config() -> None:
    compose = tool("docker-compose")
    out = subprocess.run(
        [*compose, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SHIPPER_HTTP_TOKEN": "t"},
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    shipper = services["log-shipper"]
    assert shipper["command"][:3] == ["run", "--config", "/etc/shipper/config.yaml"]
    assert "--input" not in shipper["command"]  # service mode: the config's sources
    mounted = {}
    for v in shipper["volumes"]:  # compose v1 prints "src:dst:mode", v2 mappings
        if isinstance(v, str):
            src, dst = v.split(":")[:2]
            mounted[dst] = src
        else:
            mounted[v["target"]] = v.get("source", "")
    assert mounted["/etc/shipper/config.yaml"].endswith("examples/service.yaml")
    # The stop signal drains; the grace period must outlast the drain timeout.
    grace = shipper["stop_grace_period"]
    assert shipper["stop_signal"] == "SIGTERM"
    assert int(str(grace).rstrip("s")) > load_config(SERVICE).pipeline.drain_timeout


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    shipper = Path(sys.executable).with_name("shipper")
    text = UNIT.read_text().replace("/usr/local/bin/shipper", str(shipper))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    out = subprocess.run(
        [*analyze, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr + out.stdout
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    svc = parser["Service"]
    assert svc["ExecStart"].endswith("shipper run --config /etc/shipper/config.yaml")
    assert svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) > load_config(SERVICE).pipeline.drain_timeout
