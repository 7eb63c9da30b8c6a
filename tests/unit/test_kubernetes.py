"""deploy/kubernetes/: every manifest checked against KubeRay's own CRD schema.

The schemas are KubeRay's CRDs (``tests/unit/data/kuberay-v1.7.0``, see its SOURCE.md),
held strict the way ``kubectl apply --validate=strict`` holds them: a field the schema
does not know is an error, not silently pruned. Then what the schema cannot say: one
worker pod per node, the mounts, the node's name as the fleet key, the config the job
runs, and KubeRay's own admission rules on rayStartParams.
"""

from __future__ import annotations

import copy
import gzip
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from shipper.config import load_config

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUBERAY = Path(__file__).parent / "data" / "kuberay-v1.7.0"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml.gz", "RayJob": "ray.io_rayjobs.yaml.gz"}


def strict(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever the CRD lists an object's fields
    and does not keep unknown ones (``x-kubernetes-preserve-unknown-fields``)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    with gzip.open(KUBERAY / CRDS[kind], "rt") as fh:
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(v1["schema"]["openAPIV3Schema"])
    # metadata is the API server's (ObjectMeta): the CRD leaves it open.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def errors(doc: dict[str, Any]) -> list[str]:
    v = validator(doc["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def test_the_manifests_are_the_cluster_the_job_and_the_config() -> None:
    assert set(manifests()) == {"RayCluster", "RayJob", "ConfigMap"}


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_each_manifest_validates_against_kuberays_crd(kind: str) -> None:
    doc = manifests()[kind]
    assert doc["apiVersion"] == "ray.io/v1"
    assert errors(doc) == []


def test_the_strict_schema_catches_a_misspelt_field_and_a_wrong_type() -> None:
    doc = copy.deepcopy(manifests()["RayCluster"])
    doc["spec"]["workerGroupSpec"] = doc["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in e for e in errors(doc))
    doc = copy.deepcopy(manifests()["RayCluster"])
    doc["spec"]["workerGroupSpecs"][0]["replicas"] = "three"
    assert any("replicas" in e for e in errors(doc))
    pod = copy.deepcopy(manifests()["RayCluster"])
    pod["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert any("volumeMount" in e for e in errors(pod))


def worker() -> dict[str, Any]:
    [group] = manifests()["RayCluster"]["spec"]["workerGroupSpecs"]
    return group  # type: ignore[no-any-return]


def shipper_config() -> Any:
    text = manifests()["ConfigMap"]["data"]["shipper.yaml"]
    return load_config(yaml.safe_load(text), env={})


def test_one_worker_pod_per_node_with_the_resource_the_fleet_selects() -> None:
    group = worker()
    pod = group["template"]
    terms = pod["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    [term] = terms
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    resource = shipper_config().fleet.nodes.partition(":")[2]
    assert resource and group["resources"] == {resource: "1"}


def test_the_node_name_is_the_fleet_key_through_a_labels_file() -> None:
    group = worker()
    spec = group["template"]["spec"]
    labels_file = group["rayStartParams"]["labels-file"]
    [init] = spec["initContainers"]
    script = init["command"][-1]
    assert f"> {labels_file}" in script and '"shipper-node: $NODE_NAME"' in script
    [env] = init["env"]
    assert env == {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    # The worker sees the file where ray start reads it.
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert str(Path(labels_file).parent) in mounts


def test_logs_are_read_only_and_state_survives_a_pod_restart_on_the_node() -> None:
    spec = worker()["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    logs = mounts["/var/log"]
    assert logs["readOnly"] is True and volumes[logs["name"]]["hostPath"]["path"] == "/var/log"
    state = mounts["/var/lib/shipper"]
    assert not state.get("readOnly") and volumes[state["name"]]["hostPath"]["path"] == (
        "/var/lib/shipper"
    )
    cfg = shipper_config()
    sink = cfg.sinks.kafka
    for path in (sink.dlq_config.path, cfg.sources.checkpoints.path, cfg.logging.file):
        assert path is not None and path.startswith("/var/lib/shipper/{node}/"), path
    assert all(p.startswith("/var/log/") for g in cfg.sources.files for p in g.paths)


def test_the_job_runs_shipper_run_with_the_mounted_config_on_the_cluster() -> None:
    job = manifests()["RayJob"]["spec"]
    cluster = manifests()["RayCluster"]
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["shipper", "run"]
    config = Path(argv[argv.index("--config") + 1])
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in head["containers"][0]["volumeMounts"]}
    volume = {v["name"]: v for v in head["volumes"]}[mounts[str(config.parent)]["name"]]
    configmap = manifests()["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config.name in configmap["data"]


def test_kuberays_admission_rules_on_ray_start_params() -> None:
    # KubeRay 1.7 refuses rayStartParams["labels"] (the Labels field replaces it) and
    # resources set both in rayStartParams and in Resources.
    spec = manifests()["RayCluster"]["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        params = group.get("rayStartParams", {})
        assert "labels" not in params
        in_params = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        assert not (in_params and group.get("resources"))
