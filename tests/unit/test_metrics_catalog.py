"""The metrics catalog against the spec, its own rules, and the generated docs/metrics.md."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from shipper.telemetry.catalog import (
    BREAKER_STATE_CODES,
    CATALOG,
    END_TO_END_LATENCY_BUCKETS,
    MetricName,
    MetricSpec,
    exported_series,
    get_spec,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = "kafka-integration-guide.md"

# The label sets the issue asks for (spec names plus the figures the issue adds).
REQUIRED_LABELS = {
    "log_capturer_logs_sent_total": {"sink", "status"},
    "log_capturer_kafka_queue_size": {"topic"},
    "log_capturer_kafka_queue_utilization": {"topic"},
    "log_capturer_kafka_batch_size": None,
    "log_capturer_kafka_batch_duration_seconds": None,
    "log_capturer_errors_total": {"component"},
    "log_capturer_kafka_backpressure_total": {"level"},
    "log_capturer_kafka_dropped_total": {"reason"},
    "log_capturer_kafka_circuit_breaker_state": {"broker_set"},
    "log_capturer_circuit_breaker_opens_total": {"sink"},
    "log_capturer_kafka_delivered_total": {"topic"},
    "log_capturer_dlq_depth": set(),
    "log_capturer_dlq_writes_total": {"reason"},
    "log_capturer_dlq_replays_total": {"reason", "outcome"},
    "log_capturer_kafka_end_to_end_latency_seconds": None,
    "log_capturer_kafka_compression_ratio": {"broker_set"},
    "log_capturer_kafka_broker_rtt_seconds": {"broker"},
    "log_capturer_kafka_producer_queue_messages": set(),
    "log_capturer_kafka_retries_total": {"broker"},
    # Ours, beyond the spec: restarts the supervisor saw.
    "log_capturer_actor_restarts_total": {"component"},
    "log_capturer_source_lines_total": {"source"},
    "log_capturer_source_resent_total": {"source"},
    "log_capturer_source_problems_total": {"source", "kind"},
    "log_capturer_topic_fallbacks_total": {"reason"},
    "log_capturer_config_reloads_total": {"result"},
    "log_capturer_source_files": {"source"},
    "log_capturer_http_requests_total": {"code"},
    "log_capturer_fleet_nodes": {"state"},
}
# None: no label is required; the catalog adds `topic` to the histograms.

# A frozen copy of the spec's Monitoring names, checked even where the spec is absent.
SPEC_MONITORING_NAMES = {
    "log_capturer_logs_sent_total",
    "log_capturer_kafka_queue_size",
    "log_capturer_kafka_queue_utilization",
    "log_capturer_kafka_batch_size",
    "log_capturer_kafka_batch_duration_seconds",
    "log_capturer_errors_total",
    "log_capturer_kafka_backpressure_total",
    "log_capturer_kafka_dropped_total",
    "log_capturer_kafka_circuit_breaker_state",
}

_NAME = re.compile(r"\blog_capturer_[a-z0-9_]+")


def spec_path() -> Path:
    """``SHIPPER_SPEC_PATH`` (the guide or its directory), else ../shared/spec."""
    configured = os.environ.get("SHIPPER_SPEC_PATH")
    path = Path(configured) if configured else ROOT.parent / "shared" / "spec"
    return path / SPEC_FILE if path.is_dir() else path


def read_spec() -> str:
    path = spec_path()
    if not path.is_file():
        if os.environ.get("SHIPPER_SPEC_PATH") or os.environ.get("CI"):
            pytest.fail(f"feature spec not found at {path} (set SHIPPER_SPEC_PATH)")
        pytest.skip(f"feature spec not found at {path}; set SHIPPER_SPEC_PATH to check it")
    return path.read_text(encoding="utf-8")


def section(markdown: str, title: str) -> str:
    """The body of the level-2 section ``title`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"spec has no '## {title}' section"
    return match.group(1)


def metric_names(text: str) -> set[str]:
    names = set(_NAME.findall(text))
    # A query on a histogram names one of its series; the metric is the stem.
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


# --------------------------------------------------------------------------- the spec


def test_every_spec_monitoring_metric_is_in_the_catalog() -> None:
    names = metric_names(section(read_spec(), "Monitoring"))
    assert names >= SPEC_MONITORING_NAMES  # the frozen copy is not stale
    assert names - set(CATALOG) == set()


def test_every_metric_named_anywhere_in_the_spec_is_in_the_catalog() -> None:
    # e.g. log_capturer_circuit_breaker_opens_total lives in the Circuit Breaker section.
    assert metric_names(read_spec()) - set(CATALOG) == set()


def test_spec_label_keys_used_in_queries_exist_on_their_metrics() -> None:
    for match in re.finditer(r"\b(log_capturer_[a-z0-9_]+)\{([^}]*)\}", read_spec()):
        keys = {pair.split("=")[0].strip() for pair in match.group(2).split(",")}
        assert keys <= set(CATALOG[match.group(1)].labels), match.group(0)


def test_frozen_spec_names_and_issue_labels_are_in_the_catalog() -> None:
    assert set(CATALOG) >= SPEC_MONITORING_NAMES
    for name, labels in REQUIRED_LABELS.items():
        spec = get_spec(name)
        if labels is not None:
            assert set(spec.labels) == labels, name
    assert set(CATALOG) == set(REQUIRED_LABELS)


# --------------------------------------------------------------------------- catalog rules


def test_literal_names_match_the_catalog() -> None:
    assert set(get_args(MetricName)) == set(CATALOG)
    assert all(name == spec.name for name, spec in CATALOG.items())


def test_kinds_units_and_closed_label_values() -> None:
    assert CATALOG["log_capturer_logs_sent_total"].label_values["status"] == ("success", "error")
    assert dict(BREAKER_STATE_CODES) == {"closed": 0, "open": 1, "half_open": 2}
    for spec in CATALOG.values():
        assert spec.description.strip(), spec.name
        assert re.fullmatch(r"log_capturer_[a-z0-9_]+", spec.name)
        if spec.kind == "counter":
            assert spec.name.endswith("_total")
        if spec.name.endswith("_seconds"):
            assert spec.unit == "s", spec.name
    kinds = {name: spec.kind for name, spec in CATALOG.items()}
    assert kinds["log_capturer_kafka_batch_size"] == "histogram"
    assert kinds["log_capturer_kafka_batch_duration_seconds"] == "histogram"
    assert kinds["log_capturer_kafka_end_to_end_latency_seconds"] == "histogram"
    assert kinds["log_capturer_kafka_circuit_breaker_state"] == "gauge"
    assert kinds["log_capturer_dlq_depth"] == "gauge"


def test_gauges_aggregate_as_designed() -> None:
    how = {name: spec.aggregate for name, spec in CATALOG.items() if spec.kind == "gauge"}
    assert how["log_capturer_kafka_queue_size"] == "sum"
    assert how["log_capturer_kafka_queue_utilization"] == "max"
    assert how["log_capturer_kafka_circuit_breaker_state"] == "max"
    assert how["log_capturer_dlq_depth"] == "sum"


def test_latency_buckets_resolve_p50_p95_p99_from_1ms_to_30s() -> None:
    bounds = END_TO_END_LATENCY_BUCKETS
    assert bounds[0] <= 0.001
    assert bounds[-1] >= 30
    inside = [b for b in bounds if 0.001 <= b <= 30]
    assert all(b / a <= 1.5 + 1e-9 for a, b in itertools.pairwise(inside))
    assert CATALOG["log_capturer_kafka_end_to_end_latency_seconds"].buckets == bounds


def test_exported_series_of_histograms() -> None:
    assert exported_series(CATALOG["log_capturer_kafka_batch_size"]) == (
        "log_capturer_kafka_batch_size_bucket",
        "log_capturer_kafka_batch_size_sum",
        "log_capturer_kafka_batch_size_count",
    )
    assert exported_series(CATALOG["log_capturer_dlq_depth"]) == ("log_capturer_dlq_depth",)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"kind": "counter"}, "must end with _total"),
        ({"kind": "gauge", "name": "log_capturer_x_total"}, "only counters"),
        ({"kind": "gauge", "unit": "ms"}, "would change the exported name"),
        ({"kind": "gauge", "unit": "s"}, "must end with _seconds"),
        ({"kind": "histogram"}, "needs buckets"),
        ({"kind": "histogram", "buckets": (1.0, 1.0)}, "strictly increasing"),
        ({"kind": "gauge", "buckets": (1.0,)}, "only histograms"),
        ({"kind": "counter", "name": "log_capturer_x_total", "aggregate": "max"}, "summed"),
        ({"kind": "gauge", "labels": ("a", "a")}, "duplicate"),
        ({"kind": "gauge", "label_values": {"b": ("x",)}}, "unknown label"),
    ],
)
def test_spec_rules_reject_bad_declarations(kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {
        "name": "log_capturer_x",
        "unit": "{entry}",
        "description": "d",
        **kwargs,
    }
    with pytest.raises(ValueError, match=problem):
        MetricSpec(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"kind": "gauge", "labels": ("broker-set",)}, "not a plain Prometheus label name"),
        ({"kind": "gauge", "labels": ("9lives",)}, "not a plain Prometheus label name"),
        ({"kind": "gauge", "labels": ("__name__",)}, "not a plain Prometheus label name"),
        ({"kind": "histogram", "buckets": (1.0,), "labels": ("le",)}, "bucket label"),
    ],
)
def test_label_keys_must_be_prometheus_label_names(kwargs: dict[str, object], problem: str) -> None:
    # Counters and gauges pass through the OpenTelemetry exporter, which would rewrite a
    # bad key; histograms do not, so the catalog refuses such keys for every kind.
    args: dict[str, object] = {
        "name": "log_capturer_x",
        "unit": "{entry}",
        "description": "d",
        **kwargs,
    }
    with pytest.raises(ValueError, match=problem):
        MetricSpec(**args)  # type: ignore[arg-type]


def test_get_spec_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"telemetry/catalog\.py"):
        get_spec("log_capturer_missing_total")


# --------------------------------------------------------------------------- docs


def test_docs_metrics_md_is_generated_from_the_catalog() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-metrics-doc"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr + "\n(run scripts/gen-metrics-doc)"
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    for spec in CATALOG.values():
        assert f"`{spec.name}`" in doc


def test_gen_metrics_doc_check_detects_a_stale_file(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "gen-metrics-doc")]
    doc = tmp_path / "metrics.md"
    doc.write_text("# Metrics\n\nhand-edited\n", encoding="utf-8")
    stale = subprocess.run([*script, "--check", "--doc", str(doc)], capture_output=True, text=True)
    assert stale.returncode == 1
    assert "out of date" in stale.stderr
    subprocess.run([*script, "--doc", str(doc)], capture_output=True, check=True)
    subprocess.run([*script, "--check", "--doc", str(doc)], capture_output=True, check=True)
    out = subprocess.run([*script, "--stdout"], capture_output=True, text=True, check=True).stdout
    assert out == doc.read_text(encoding="utf-8")
    assert "| Name | Type | Unit | Labels | Meaning | Aggregation |" in out
