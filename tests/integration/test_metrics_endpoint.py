"""The telemetry endpoint against the real broker and real Ray: a real scrape over HTTP.

A Shipper with ``metrics.enabled`` serves one endpoint (``Shipper.metrics_url``) that
merges what every actor reports through :class:`actors.telemetry.Reporter`.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.pipeline import Shipper
from shipper.kafka.stats import StatsSummary, make_stats_cb
from shipper.telemetry import MetricsRecorder
from shipper.testing import LocalKafka, consume_all
from tests.conftest import BrokerSwitch, sink_config

pytestmark = [pytest.mark.kafka]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
OK = {"sink": "kafka", "status": "success"}
ERR = {"sink": "kafka", "status": "error"}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def scrape(url: str) -> Samples:
    status, text = get(url)
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The series with exactly ``labels``, summed over the fleet's nodes (every series
    carries the node label ``node``)."""
    found = [
        v
        for (n, ls), v in samples.items()
        if n == name and {k: val for k, val in ls if k != "node"} == labels
    ]
    return sum(found) if found else None


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def scrape_until(url: str, pred: Callable[[Samples], bool], timeout: float, what: str) -> Samples:
    """Scrape until ``pred`` holds (actors push at most once a second); the last scrape."""
    last: list[Samples] = []

    def check() -> bool:
        last[:] = [scrape(url)]
        return pred(last[0])

    wait_for(check, timeout, what)
    return last[0]


def metrics_config(kafka: LocalKafka, topic: str, **sink: Any) -> dict[str, Any]:
    cfg = sink_config(kafka, topic, **sink)
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
    return cfg


def entries(n: int) -> list[dict[str, object]]:
    return [
        {"message": f"entry {i}", "level": "info", "fields": {"seq": i, "tenant": f"t{i % 7}"}}
        for i in range(n)
    ]


ALERT_RULES = Path(__file__).resolve().parents[2] / "provisioning" / "alerts" / "kafka-alerts.yml"


def alert_series() -> list[tuple[str, dict[str, str]]]:
    """Every (metric, label matchers) an alert rule reads."""
    out = []
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name, _, matchers in re.findall(r"(log_capturer_\w+)(\{([^}]*)\})?", rule["expr"]):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
                out.append((name, labels))
    assert out
    return out


def test_every_series_an_alert_reads_exists_before_the_first_entry(
    kafka: LocalKafka, topic: str
) -> None:
    # rate(), delta() and the comparisons need a series to exist at zero from the
    # start; an alert on a series that appears only with the first error fires late.
    wanted = alert_series()

    def present(samples: Samples) -> bool:
        return all(
            any(n == name and labels.items() <= dict(ls).items() for (n, ls) in samples)
            for name, labels in wanted
        )

    with Shipper(metrics_config(kafka, topic)) as s:
        assert s.metrics_url is not None
        scrape_until(s.metrics_url, present, 20, f"every alert series at zero: {wanted}")
        assert s.stats().entries_in == 0


# ----------------------------------------------------------------------- librdkafka


def test_a_real_producer_feeds_the_stats_callback(kafka: LocalKafka, topic: str) -> None:
    """The wiring the Producer actor uses: ``stats_cb`` in the config, served by poll()."""
    from confluent_kafka import Producer

    rec = MetricsRecorder("producer:test:0")
    got: list[StatsSummary] = []
    conf: dict[str, Any] = dict(kafka.client_config())
    conf.update(
        {
            "statistics.interval.ms": 200,
            "compression.type": "lz4",
            "linger.ms": 20,
            "stats_cb": make_stats_cb(rec, "bs1", codec="lz4", on_summary=got.append),
        }
    )
    p = Producer(conf)
    for i in range(3000):
        p.produce(topic, json.dumps({"message": f"line {i}", "level": "info"}).encode())
        p.poll(0)
    assert p.flush(15) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s.compression_ratio for s in got):
        p.poll(0.1)
    p.poll(0.5)  # one more interval, so the queue gauge reads the drained queue
    assert got and max(s.brokers_up for s in got) >= 1
    snap = rec.snapshot()
    ratio = snap["gauges"]["log_capturer_kafka_compression_ratio"][("bs1",)]
    assert 0 < ratio < 1, ratio
    rtts = snap["gauges"]["log_capturer_kafka_broker_rtt_seconds"]
    assert rtts and all(0 < v < 5 for v in rtts.values()), rtts
    assert snap["gauges"]["log_capturer_kafka_producer_queue_messages"] == {(): 0.0}
    assert all(v == 0 for v in snap["counters"]["log_capturer_kafka_retries_total"].values())


# ----------------------------------------------------------------------- the Shipper


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_a_run_of_known_size_shows_matching_counts_and_sane_figures(
    kafka: LocalKafka, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    n = 5000
    with Shipper(metrics_config(kafka, topic, batch_size=500)) as s:
        url: str = s.metrics_url
        assert url.endswith("/metrics"), url
        base = url[: -len("/metrics")]
        assert get(base + "/healthz")[0] == 200
        acks = [s.submit(entries(n)[i : i + 1000]) for i in range(0, n, 1000)]
        assert all(a.result(timeout=60).ok for a in acks)
        s.flush(timeout=60)
        read_back = len(consume_all(kafka.client_config(), topic, expected=n, timeout=60))
        assert read_back == n

        sent = "log_capturer_logs_sent_total"
        m = scrape_until(
            url,
            lambda x: value(x, sent, **OK) == read_back,
            15,
            f"{sent}{{status=success}} to reach {read_back}",
        )
        assert value(m, sent, **ERR) == 0  # created at zero, never incremented
        assert value(m, "log_capturer_kafka_delivered_total", topic=topic) == n
        assert value(m, "log_capturer_errors_total", component="kafka_sink") == 0

        # Queue: present, drained after the flush, utilization a fraction.
        assert value(m, "log_capturer_kafka_queue_size", topic=topic) == 0
        util = value(m, "log_capturer_kafka_queue_utilization", topic=topic)
        assert util is not None and 0 <= util <= 1

        # Batches: every entry in some batch, none larger than batch_size.
        bs = "log_capturer_kafka_batch_size"
        assert value(m, bs + "_sum", topic=topic) == n
        batches = value(m, bs + "_count", topic=topic)
        assert batches is not None and n / 500 <= batches <= n
        assert value(m, bs + "_bucket", topic=topic, le="500.0") == batches
        bd = "log_capturer_kafka_batch_duration_seconds"
        assert value(m, bd + "_count", topic=topic) == batches
        took = value(m, bd + "_sum", topic=topic)
        assert took is not None and 0 < took < 60 * batches

        # Latency: one observation per delivered entry, each under the test's runtime.
        lat = "log_capturer_kafka_end_to_end_latency_seconds"
        assert value(m, lat + "_count", topic=topic) == n
        assert value(m, lat + "_bucket", topic=topic, le="60.0") == n
        mean = (value(m, lat + "_sum", topic=topic) or 0) / n
        assert 0 < mean < 60

        # Breaker closed and the deployment ready while the broker is up.
        assert set(series(m, "log_capturer_kafka_circuit_breaker_state").values()) == {0.0}
        assert value(m, "log_capturer_circuit_breaker_opens_total", sink="kafka") == 0
        assert wait_for(lambda: get(base + "/ready")[0] == 200, 15, "/ready to be 200")
        # librdkafka statistics reach the endpoint through the Producer.
        m = scrape_until(
            url,
            lambda x: bool(series(x, "log_capturer_kafka_broker_rtt_seconds")),
            20,
            "broker RTT from librdkafka statistics",
        )
        assert series(m, "log_capturer_kafka_producer_queue_messages")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_an_outage_opens_the_breaker_fails_ready_and_fills_the_dlq_then_recovers(
    kafka: LocalKafka, make_topic: Callable[..., str], broker: BrokerSwitch, tmp_path: Path
) -> None:
    topic = make_topic(partitions=3)
    cfg = metrics_config(
        kafka,
        topic,
        timeout="4s",
        dlq_config={
            "path": str(tmp_path / "dlq"),
            "reprocessing_config": {"interval": "2s", "batch_size": 500, "max_retries": 50},
        },
        # A long open timeout: the breaker can only close in time because a Producer
        # sees the broker answer again and asks for a probe at once, and the DLQ's
        # backlog is that probe (no new entries come after the outage).
        circuit_breaker={"failure_threshold": 3, "success_threshold": 2, "timeout": "60s"},
    )
    with Shipper(cfg) as s:
        # Read before anything is stopped, so this fails fast until the wiring lands.
        url: str = s.metrics_url
        base = url[: -len("/metrics")]
        assert s.submit(entries(100)).result(timeout=60).ok
        wait_for(lambda: get(base + "/ready")[0] == 200, 20, "/ready before the outage")

        broker.stop()
        acks = [s.submit(entries(200)) for _ in range(10)]
        breaker = "log_capturer_kafka_circuit_breaker_state"
        wait_for(lambda: 1.0 in series(scrape(url), breaker).values(), 60, "the breaker state 1")
        status, body = get(base + "/ready")
        assert status == 503, body
        wait_for(
            lambda: (value(scrape(url), "log_capturer_dlq_depth") or 0) > 0,
            60,
            "the DLQ depth to rise",
        )
        m = scrape(url)
        assert (value(m, "log_capturer_circuit_breaker_opens_total", sink="kafka") or 0) >= 1
        assert sum(series(m, "log_capturer_dlq_writes_total").values()) > 0

        broker.start()
        assert all(a.result(timeout=120).ok for a in acks)
        wait_for(
            lambda: set(series(scrape(url), breaker).values()) == {0.0},
            30,
            "the breaker to close without waiting out its 60 s open timeout",
        )
        wait_for(lambda: get(base + "/ready")[0] == 200, 30, "/ready after recovery")
        wait_for(lambda: value(scrape(url), "log_capturer_dlq_depth") == 0, 180, "the DLQ to drain")
        m = scrape(url)
        replays = series(m, "log_capturer_dlq_replays_total")
        assert any(
            dict(labels).get("outcome") == "delivered" and v > 0 for labels, v in replays.items()
        ), replays
