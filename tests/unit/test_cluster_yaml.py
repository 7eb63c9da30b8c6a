"""The launcher configs are valid for Ray's cluster launcher (checked with Ray's own schema).

cluster.yaml is the autoscaling AWS cluster the scaling guide deploys; cluster-local.yaml
the same shape on machines you own. Both must give the shipper's fleet what it selects:
workers that declare the log_shipper resource.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_launcher_config_passes_rays_schema(name: str) -> None:
    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(cfg))  # raises on any schema violation
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    starts = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert starts and all("RAY_AUTH_MODE=token" in c for c in starts)


def test_aws_cluster_scales_shipper_workers_that_declare_the_fleet_resource() -> None:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cfg["provider"]["type"] == "aws"
    worker = cfg["available_node_types"]["shipper"]
    assert worker["resources"] == {"log_shipper": 1}
    assert 1 <= worker["min_workers"] <= worker["max_workers"]
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "log_shipper" not in head["resources"]  # no pipeline on the head
    # The example fleet config selects exactly that resource.
    fleet = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text())
    assert fleet["fleet"]["nodes"] == "resource:log_shipper"


def test_local_cluster_lists_its_hosts() -> None:
    cfg = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"]
    assert cfg["provider"]["worker_ips"]
