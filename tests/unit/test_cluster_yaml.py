"""cluster.yaml is a valid Ray cluster launcher config (checked with Ray's own schema)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema() -> None:
    cfg = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(cfg))  # raises on any schema violation
    assert cfg["provider"]["type"] == "local"
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
