"""The Grafana dashboard: valid, complete per the spec, and querying only exported metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper.telemetry.catalog import CATALOG, exported_series

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "provisioning" / "dashboards" / "kafka-monitoring.json"
EXPORTED = {series for spec in CATALOG.values() for series in exported_series(spec)}

# Panel title (the spec's "Panels include" list, plus DLQ depth) -> a metric it must show.
REQUIRED_PANELS = {
    "Message throughput": "log_capturer_logs_sent_total",
    "Error rate": "log_capturer_logs_sent_total",
    "Queue utilization": "log_capturer_kafka_queue_utilization",
    "Batch size": "log_capturer_kafka_batch_size_bucket",
    "Latency (P50, P95, P99)": "log_capturer_kafka_end_to_end_latency_seconds_bucket",
    "Circuit breaker state": "log_capturer_kafka_circuit_breaker_state",
    "Compression ratio": "log_capturer_kafka_compression_ratio",
    "DLQ depth": "log_capturer_dlq_depth",
    "DLQ writes by reason": "log_capturer_dlq_writes_total",
    "Backpressure events": "log_capturer_kafka_backpressure_total",
    "Dropped entries": "log_capturer_kafka_dropped_total",
}

# Keywords, and aggregation operators (they may precede "by (...)" instead of "(").
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "limitk", "limit_ratio",
}  # fmt: skip


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def all_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label names, functions, keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"^\s*label_values\((.*),\s*\w+\)\s*$", r"\1", text)  # templating query
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$job", ".*")


# --------------------------------------------------------------------------- structure


def test_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_panel_the_spec_lists_exists(dashboard: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in all_panels(dashboard)}
    for title, metric in REQUIRED_PANELS.items():
        assert title in panels, f"missing panel {title!r}"
        exprs = " ".join(t["expr"] for t in panels[title]["targets"])
        assert metric in exprs, (title, metric)


def test_latency_panel_shows_p50_p95_p99_from_the_latency_histogram(
    dashboard: dict[str, Any],
) -> None:
    panel = next(p for p in all_panels(dashboard) if p["title"] == "Latency (P50, P95, P99)")
    quantiles = set()
    for target in panel["targets"]:
        match = re.fullmatch(
            r"histogram_quantile\((0\.\d+), sum by \(le\) \(rate\("
            r"log_capturer_kafka_end_to_end_latency_seconds_bucket\{[^}]*\}\[[^\]]+\]\)\)\)",
            target["expr"],
        )
        assert match, target["expr"]
        quantiles.add(match.group(1))
    assert quantiles == {"0.5", "0.95", "0.99"}
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_breaker_panel_names_the_spec_states(dashboard: dict[str, Any]) -> None:
    panel = next(p for p in all_panels(dashboard) if p["title"] == "Circuit breaker state")
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    texts = {k: v["text"] for k, v in mapping["options"].items()}
    assert texts == {"0": "closed", "1": "open", "2": "half-open"}


# --------------------------------------------------------------------------- queries


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, topic) (rate(foo_bucket{job=~"$job",le!="x"}'
        "[$__rate_interval]))) / on (topic) group_left max without (x) (bar_total offset 5m)"
        " > bool 1e3"
    )
    assert metric_names(expr) == {"foo_bucket", "bar_total"}
    assert metric_names("label_values(log_capturer_logs_sent_total, job)") == {
        "log_capturer_logs_sent_total"
    }


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exprs = all_exprs(dashboard)
    assert len(exprs) >= len(REQUIRED_PANELS)
    seen: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= EXPORTED, f"{expr!r} names {sorted(names - EXPORTED)}, not exported"
        seen |= names
        # A quantile needs the bucket series and the le label kept.
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), expr
    # The dashboard shows every metric family (at least one series of each).
    shown = {name for name, spec in CATALOG.items() if seen & set(exported_series(spec))}
    assert shown == set(CATALOG)


def test_queries_parse_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query, with Grafana variables filled in, is valid PromQL to promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool not found: run scripts/install-test-tools (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
