"""The README's Ray job commands, run exactly as written, as a new user would.

The block after the ``<!-- ray-job`` marker in README.md runs with bash in a folder
that holds the ``shipper.yaml`` and ``app.log`` it names (the config points at the
local broker): ``ray start --head`` with Ray's default ports, then ``ray job submit``.
The session's own Ray instance steps aside first (it would hold some of those
ports) and ``ray stop`` ends the head afterwards, as the README's reader would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml

from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_block(marker: str) -> str:
    """The fenced bash block that follows ``<!-- marker`` in README.md."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {re.escape(marker)}.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no bash block after <!-- {marker}"
    return m.group(1)


@pytest.fixture
def no_session_ray() -> Iterator[None]:
    ray.shutdown()  # later tests start it again (conftest's ray_session)
    yield


def test_the_readme_ray_job_commands_work_as_written(
    kafka: LocalKafka, topic: str, tmp_path: Path, no_session_ray: None
) -> None:
    block = readme_block("ray-job")
    assert "ray job submit" in block and "ray start --head" in block
    n = 5000
    (tmp_path / "app.log").write_text(
        "".join(json.dumps({"message": f"job {i}", "level": "info"}) + "\n" for i in range(n))
    )
    (tmp_path / "shipper.yaml").write_text(yaml.safe_dump(sink_config(kafka, topic)))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE"):  # as in a new user's shell
        env.pop(var, None)
    try:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    finally:
        subprocess.run(
            [str(BIN / "ray"), "stop", "--force"],
            env={**env, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            timeout=120,
        )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert "succeeded" in out.lower(), out[-3000:]
    assert "delivered" in out, out[-3000:]
    assert len(consume_all(kafka.client_config(), topic, expected=n, timeout=60)) == n
