"""Recorder, aggregator and the telemetry endpoint, scraped over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipper.telemetry import (
    Aggregator,
    HistogramPoint,
    MetricsRecorder,
    MetricsServer,
    Snapshot,
    merge_snapshots,
)
from shipper.telemetry.catalog import CATALOG, MetricSpec, exported_series

SENT: Final = "log_capturer_logs_sent_total"
LATENCY: Final = "log_capturer_kafka_end_to_end_latency_seconds"
OK = {"sink": "kafka", "status": "success"}
ERR = {"sink": "kafka", "status": "error"}


def _labels_for(spec: MetricSpec) -> dict[str, str]:
    return {key: spec.label_values.get(key, ("x",))[0] for key in spec.labels}


def _populate_everything(recorder: MetricsRecorder) -> None:
    """One series of every catalog metric."""
    for spec in CATALOG.values():
        labels = _labels_for(spec)
        if spec.kind == "counter":
            recorder.add(spec.name, 1, labels)
        elif spec.kind == "gauge":
            recorder.set(spec.name, 1, labels)
        else:
            recorder.observe(spec.name, spec.buckets[0], labels)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        body = err.read().decode()
        err.close()
        return err.code, err.headers.get("Content-Type", ""), body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    """Factory for started servers on 127.0.0.1 with a free port; all closed afterwards."""
    servers: list[MetricsServer] = []

    def factory(
        collect: Callable[[], Snapshot],
        health: Callable[[], bool] = lambda: True,
        ready: Callable[[], tuple[bool, str]] = lambda: (True, ""),
    ) -> MetricsServer:
        server = MetricsServer("127.0.0.1", 0, collect, health, ready).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


# --------------------------------------------------------------------------- recorder


def test_recorder_rejects_what_the_catalog_does_not_declare() -> None:
    rec = MetricsRecorder("t")
    with pytest.raises(ValueError, match="unknown metric"):
        rec.add("log_capturer_nope_total", 1, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is a counter, not a gauge"):
        rec.set(SENT, 1, OK)
    with pytest.raises(ValueError, match="takes labels"):
        rec.add(SENT, 1, {"sink": "kafka"})
    with pytest.raises(ValueError, match="takes labels"):
        rec.add(SENT, 1, {**OK, "topic": "t"})
    with pytest.raises(ValueError, match="not one of"):
        rec.add(SENT, 1, {"sink": "kafka", "status": "maybe"})
    with pytest.raises(ValueError, match="only goes up"):
        rec.add(SENT, -1, OK)
    with pytest.raises(ValueError, match="NaN"):
        rec.observe(LATENCY, float("nan"), {"topic": "t"})
    with pytest.raises(ValueError, match="takes labels"):
        rec.set("log_capturer_dlq_depth", 1, {"topic": "t"})


def test_recorder_counts_gauges_and_histograms() -> None:
    rec = MetricsRecorder("batcher-1")
    rec.add(SENT, 3, OK)
    rec.add(SENT, labels=OK)
    rec.add(SENT, 0, ERR)  # a zero publishes the series
    rec.set("log_capturer_kafka_queue_size", 10, {"topic": "a"})
    rec.set("log_capturer_kafka_queue_size", 7, {"topic": "a"})
    rec.set("log_capturer_dlq_depth", 2)
    # 0.001 is a bound: it belongs to the le="0.001" bucket, as in Prometheus.
    rec.observe(LATENCY, 0.001, {"topic": "a"})
    rec.observe(LATENCY, 0.0011, {"topic": "a"}, count=2)
    rec.observe_many(LATENCY, [100.0, 0.0001], {"topic": "a"})

    snap = rec.snapshot()
    assert snap["source"] == "batcher-1"
    assert snap["counters"][SENT] == {("kafka", "success"): 4.0, ("kafka", "error"): 0.0}
    assert snap["gauges"]["log_capturer_kafka_queue_size"] == {("a",): 7.0}
    assert snap["gauges"]["log_capturer_dlq_depth"] == {(): 2.0}
    point = snap["histograms"][LATENCY][("a",)]
    bounds = CATALOG[LATENCY].buckets
    assert len(point.bucket_counts) == len(bounds) + 1
    assert point.bucket_counts[bounds.index(0.0005)] == 1  # 0.0001
    assert point.bucket_counts[bounds.index(0.001)] == 1
    assert point.bucket_counts[bounds.index(0.0015)] == 2
    assert point.bucket_counts[-1] == 1  # 100 s is past the last bound
    assert point.count == 5
    assert point.sum == pytest.approx(0.001 + 2 * 0.0011 + 100.0 + 0.0001)


def test_snapshot_is_plain_picklable_data_and_ordered() -> None:
    rec = MetricsRecorder("p")
    _populate_everything(rec)
    first = rec.snapshot()
    second = rec.snapshot()
    assert second["seq"] > first["seq"]
    assert second["instance"] == first["instance"]
    assert pickle.loads(pickle.dumps(second)) == second
    # Later updates do not leak into a snapshot already taken.
    rec.add(SENT, 5, {"sink": "x", "status": "success"})
    assert first["counters"][SENT][("x", "success")] == 1.0


def test_bound_handles_skip_validation_but_share_the_series() -> None:
    rec = MetricsRecorder("h")
    sent = rec.counter(SENT, OK)
    queue = rec.gauge("log_capturer_kafka_queue_size", {"topic": "t"})
    latency = rec.histogram(LATENCY, {"topic": "t"})
    sent.add()
    sent.add(9)
    rec.add(SENT, 10, OK)
    queue.set(42)
    latency.observe(0.02, count=3)
    latency.observe_many([0.02])
    snap = rec.snapshot()
    assert snap["counters"][SENT][("kafka", "success")] == 20
    assert snap["gauges"]["log_capturer_kafka_queue_size"][("t",)] == 42
    assert snap["histograms"][LATENCY][("t",)].count == 4
    with pytest.raises(ValueError):
        sent.add(-1)


def test_recorder_is_exact_under_concurrent_updates() -> None:
    rec = MetricsRecorder("threads")
    handle = rec.counter(SENT, OK)
    per_thread, threads = 20_000, 8

    def work(i: int) -> None:
        for _ in range(per_thread):
            if i % 2:
                handle.add()
            else:
                rec.add(SENT, 1, OK)
            if i == 0:
                rec.snapshot()  # snapshots race with updates and new series

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert rec.snapshot()["counters"][SENT][("kafka", "success")] == per_thread * threads


# --------------------------------------------------------------------------- aggregator


def test_aggregator_sums_counters_and_buckets_and_combines_gauges() -> None:
    a, b, c = MetricsRecorder("a"), MetricsRecorder("b"), MetricsRecorder("c")
    a.add(SENT, 3, OK)
    b.add(SENT, 4, OK)
    b.add(SENT, 1, ERR)
    a.observe(LATENCY, 0.01, {"topic": "t"}, count=2)
    b.observe(LATENCY, 0.5, {"topic": "t"})
    a.set("log_capturer_kafka_queue_size", 10, {"topic": "t"})
    b.set("log_capturer_kafka_queue_size", 5, {"topic": "t"})
    a.set("log_capturer_kafka_queue_utilization", 0.2, {"topic": "t"})
    b.set("log_capturer_kafka_queue_utilization", 0.9, {"topic": "t"})
    a.set("log_capturer_kafka_compression_ratio", 0.4, {"broker_set": "main"})
    b.set("log_capturer_kafka_compression_ratio", 0.6, {"broker_set": "main"})
    c.set("log_capturer_kafka_circuit_breaker_state", 1, {"broker_set": "main"})
    agg = Aggregator()
    for rec in (a, b, c):
        assert agg.update(rec.snapshot())
    assert agg.sources() == ["a", "b", "c"]

    merged = agg.merged()
    assert merged["counters"][SENT] == {("kafka", "success"): 7, ("kafka", "error"): 1}
    assert merged["gauges"]["log_capturer_kafka_queue_size"] == {("t",): 15}
    assert merged["gauges"]["log_capturer_kafka_queue_utilization"] == {("t",): 0.9}
    assert merged["gauges"]["log_capturer_kafka_compression_ratio"][("main",)] == (
        pytest.approx(0.5)
    )
    assert merged["gauges"]["log_capturer_kafka_circuit_breaker_state"] == {("main",): 1}
    point = merged["histograms"][LATENCY][("t",)]
    bounds = CATALOG[LATENCY].buckets
    assert point.count == 3
    assert point.sum == pytest.approx(0.52)
    assert point.bucket_counts[bounds.index(0.01)] == 2
    assert point.bucket_counts[bounds.index(0.5)] == 1
    assert sum(point.bucket_counts) == 3


def test_aggregator_ignores_stale_snapshots() -> None:
    rec = MetricsRecorder("a")
    rec.add(SENT, 1, OK)
    old = rec.snapshot()
    rec.add(SENT, 1, OK)
    new = rec.snapshot()
    agg = Aggregator()
    assert agg.update(new)
    assert not agg.update(old)
    assert agg.merged()["counters"][SENT][("kafka", "success")] == 2


def test_counts_survive_a_restart_and_forget_but_gauges_do_not() -> None:
    agg = Aggregator()
    before = MetricsRecorder("producer-0")
    before.add(SENT, 100, OK)
    before.observe(LATENCY, 0.01, {"topic": "t"})
    before.set("log_capturer_kafka_queue_size", 50, {"topic": "t"})
    agg.update(before.snapshot())

    after = MetricsRecorder("producer-0")  # the actor restarted: a fresh recorder
    after.add(SENT, 5, OK)
    agg.update(after.snapshot())
    merged = agg.merged()
    assert merged["counters"][SENT][("kafka", "success")] == 105
    assert merged["histograms"][LATENCY][("t",)].count == 1
    assert "log_capturer_kafka_queue_size" not in merged["gauges"]

    agg.forget("producer-0")
    assert agg.sources() == []
    assert agg.merged()["counters"][SENT][("kafka", "success")] == 105


def test_aggregator_rejects_snapshots_the_catalog_cannot_render() -> None:
    agg = Aggregator()
    bad = MetricsRecorder("x").snapshot()
    bad["counters"]["log_capturer_unknown_total"] = {(): 1.0}
    with pytest.raises(ValueError, match="not a counter"):
        agg.update(bad)
    bad = MetricsRecorder("x").snapshot()
    bad["histograms"][LATENCY] = {("t",): HistogramPoint((1, 2), 1.0, 3)}
    with pytest.raises(ValueError, match="buckets"):
        agg.update(bad)
    bad = MetricsRecorder("x").snapshot()
    bad["gauges"]["log_capturer_dlq_depth"] = {("extra",): 1.0}
    with pytest.raises(ValueError, match="needs labels"):
        agg.update(bad)


def test_merge_of_nothing_is_empty() -> None:
    merged = merge_snapshots([])
    assert (merged["counters"], merged["gauges"], merged["histograms"]) == ({}, {}, {})


# --------------------------------------------------------------------------- server


def test_scrape_shows_counters_summed_over_recorders(
    serve: Callable[..., MetricsServer],
) -> None:
    a, b = MetricsRecorder("a"), MetricsRecorder("b")
    agg = Aggregator()
    server = serve(lambda: agg.merged())
    a.add(SENT, 3, OK)
    b.add(SENT, 4, OK)
    b.add(SENT, 2, ERR)
    agg.update(a.snapshot())
    agg.update(b.snapshot())

    status, content_type, text = _get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = _samples(text)
    assert samples[(SENT, (("sink", "kafka"), ("status", "success")))] == 7
    assert samples[(SENT, (("sink", "kafka"), ("status", "error")))] == 2
    assert f'{SENT}{{sink="kafka",status="success"}} 7.0' in text
    assert "otel_scope" not in text  # no instrumentation-scope labels on the series
    assert "target_info" not in text

    # Every scrape reads a fresh merge.
    a.add(SENT, 10, OK)
    agg.update(a.snapshot())
    samples = _samples(_get(server.url + "/metrics")[2])
    assert samples[(SENT, (("sink", "kafka"), ("status", "success")))] == 17


def test_scrape_shows_merged_histogram_buckets(serve: Callable[..., MetricsServer]) -> None:
    a, b = MetricsRecorder("a"), MetricsRecorder("b")
    a.observe(LATENCY, 0.003, {"topic": "t"}, count=4)
    b.observe(LATENCY, 0.003, {"topic": "t"})
    b.observe(LATENCY, 2.0, {"topic": "t"})
    snaps = [a.snapshot(), b.snapshot()]
    server = serve(lambda: merge_snapshots(snaps))

    text = _get(server.url + "/metrics")[2]
    samples = _samples(text)
    t = ("topic", "t")

    def bucket(le: str) -> float:
        return samples[(f"{LATENCY}_bucket", (("le", le), t))]

    assert bucket("0.002") == 0
    assert bucket("0.003") == 5  # cumulative, as Prometheus expects
    assert bucket("1.5") == 5
    assert bucket("2.0") == 6
    assert bucket("+Inf") == 6
    assert samples[(f"{LATENCY}_count", (t,))] == 6
    assert samples[(f"{LATENCY}_sum", (t,))] == pytest.approx(5 * 0.003 + 2.0)


def test_a_snapshot_with_only_histograms_still_shows_them(
    serve: Callable[..., MetricsServer],
) -> None:
    # With no counter or gauge series the OpenTelemetry reader has nothing to report;
    # the histograms must not depend on it.
    rec = MetricsRecorder("h")
    rec.observe(LATENCY, 0.003, {"topic": "t"}, count=4)
    rec.observe("log_capturer_kafka_batch_size", 250, {"topic": "t"})
    snap = rec.snapshot()
    assert (snap["counters"], snap["gauges"]) == ({}, {})
    server = serve(lambda: snap)

    for _ in range(2):  # and on every scrape, not only the first
        text = _get(server.url + "/metrics")[2]
        samples = _samples(text)
        t = ("topic", "t")
        assert f"# TYPE {LATENCY} histogram" in text
        assert samples[(f"{LATENCY}_bucket", (("le", "0.003"), t))] == 4
        assert samples[(f"{LATENCY}_bucket", (("le", "+Inf"), t))] == 4
        assert samples[(f"{LATENCY}_count", (t,))] == 4
        assert samples[(f"{LATENCY}_sum", (t,))] == pytest.approx(0.012)
        assert samples[("log_capturer_kafka_batch_size_bucket", (("le", "250.0"), t))] == 1
        assert samples[("log_capturer_kafka_batch_size_count", (t,))] == 1


def test_exposition_names_are_exactly_the_catalog_names(
    serve: Callable[..., MetricsServer],
) -> None:
    rec = MetricsRecorder("all")
    _populate_everything(rec)
    server = serve(rec.snapshot)
    text = _get(server.url + "/metrics")[2]

    sample_names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"
    }
    sample_names.discard("")
    expected = {series for spec in CATALOG.values() for series in exported_series(spec)}
    assert sample_names == expected

    types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types == {name: spec.kind for name, spec in CATALOG.items()}
    # Each series carries exactly the catalog's label keys (plus le on buckets).
    for family in text_string_to_metric_families(text):
        spec = CATALOG[family.name if family.type != "counter" else family.name + "_total"]
        for sample in family.samples:
            keys = set(sample.labels) - ({"le"} if sample.name.endswith("_bucket") else set())
            assert keys == set(spec.labels), sample


def test_empty_snapshot_renders_an_empty_exposition(serve: Callable[..., MetricsServer]) -> None:
    server = serve(lambda: MetricsRecorder("idle").snapshot())
    status, _, text = _get(server.url + "/metrics")
    assert status == 200
    assert "log_capturer_" not in text


def test_healthz_and_ready_codes(serve: Callable[..., MetricsServer]) -> None:
    state = {"healthy": True, "ready": (True, "")}
    server = serve(
        MetricsRecorder("x").snapshot,
        health=lambda: state["healthy"],
        ready=lambda: state["ready"],
    )
    assert _get(server.url + "/healthz")[::2] == (200, "ok\n")
    assert _get(server.url + "/ready")[::2] == (200, "ready\n")

    state["healthy"] = False
    state["ready"] = (False, "circuit breaker open for broker set main")
    assert _get(server.url + "/healthz")[0] == 503
    assert _get(server.url + "/ready")[::2] == (503, "circuit breaker open for broker set main\n")

    def broken() -> bool:
        raise RuntimeError("boom")

    server2 = serve(MetricsRecorder("y").snapshot, health=broken, ready=broken)
    assert _get(server2.url + "/healthz")[::2] == (503, "unhealthy: boom\n")
    assert _get(server2.url + "/ready")[::2] == (503, "not ready: boom\n")
    assert _get(server2.url + "/nope")[0] == 404
    assert _get(server2.url + "/ready?verbose=1")[0] == 503


def test_metrics_answers_500_when_collect_fails(
    serve: Callable[..., MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    def collect() -> Snapshot:
        raise RuntimeError("aggregator unreachable")

    server = serve(collect)
    status, _, body = _get(server.url + "/metrics")
    assert status == 500
    assert "aggregator unreachable" in body
    assert "rendering /metrics failed" in caplog.text


def test_port_zero_binds_a_free_port_and_close_releases_it() -> None:
    server = MetricsServer(
        "127.0.0.1", 0, MetricsRecorder("x").snapshot, lambda: True, lambda: (True, "")
    )
    with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert _get(server.url + "/healthz")[0] == 200
        # A second server cannot take the same port while the first holds it.
        with pytest.raises(OSError):
            MetricsServer("127.0.0.1", server.port, dict, lambda: True, lambda: (True, ""))  # type: ignore[arg-type]
    server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/healthz", timeout=2)
    with pytest.raises(RuntimeError):
        server.start()


def test_concurrent_scrapes_all_see_consistent_figures(
    serve: Callable[..., MetricsServer],
) -> None:
    rec = MetricsRecorder("x")
    rec.add(SENT, 12, OK)
    server = serve(rec.snapshot)
    results: list[float] = []

    def scrape() -> None:
        for _ in range(5):
            samples = _samples(_get(server.url + "/metrics")[2])
            results.append(samples[(SENT, (("sink", "kafka"), ("status", "success")))])

    threads = [threading.Thread(target=scrape) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [12.0] * 30


def test_telemetry_does_not_import_ray() -> None:
    code = "import sys, shipper.telemetry; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_series_missing_from_the_snapshot_disappear(serve: Callable[..., MetricsServer]) -> None:
    rec = MetricsRecorder("a")
    rec.set("log_capturer_kafka_queue_size", 3, {"topic": "gone"})
    current = [rec.snapshot()]
    server = serve(lambda: current[0])
    assert 'log_capturer_kafka_queue_size{topic="gone"} 3.0' in _get(server.url + "/metrics")[2]
    current[0] = MetricsRecorder("b").snapshot()
    assert "gone" not in _get(server.url + "/metrics")[2]


@pytest.mark.slow
def test_a_real_prometheus_server_scrapes_the_endpoint(
    serve: Callable[..., MetricsServer], tmp_path: Path
) -> None:
    """Prometheus (Debian package) scrapes the endpoint and answers a query about it."""
    binary = shutil.which("prometheus")
    if binary is None:
        reason = "prometheus not found: run scripts/install-test-tools (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    rec = MetricsRecorder("a")
    _populate_everything(rec)
    rec.add(SENT, 41, {"sink": "kafka", "status": "success"})
    server = serve(rec.snapshot)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        prom_port = probe.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: shipper\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        query = urllib.parse.quote('log_capturer_logs_sent_total{status="success",sink="kafka"}')
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}"
        deadline = time.monotonic() + 60
        result: list[Any] = []
        while time.monotonic() < deadline and not result:
            assert proc.poll() is None, "prometheus exited early"
            time.sleep(0.5)
            status, _, body = _get(url) if _port_open(prom_port) else (0, "", "")
            if status == 200:
                result = json.loads(body)["data"]["result"]
        assert result, "prometheus never returned log_capturer_logs_sent_total"
        assert result[0]["metric"]["job"] == "shipper"
        assert float(result[0]["value"][1]) == 41
        # The histogram arrived as a histogram: its buckets answer a quantile query.
        q = urllib.parse.quote(f"histogram_quantile(0.5, sum by (le) ({LATENCY}_bucket))")
        status, _, body = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}")
        assert status == 200
        assert json.loads(body)["data"]["result"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
