"""librdkafka statistics -> catalog metrics, on documents a real librdkafka 2.x produced.

``data/rdkafka_stats_{zstd,none}.jsonl`` hold the ``stats_cb`` payloads (one per line,
as received) of a producer with ``statistics.interval.ms=500`` that sent 6,000 JSON log
lines of about 80 bytes to the local broker (3 partitions), with and without zstd:
the first document covers the traffic, the later ones are idle intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipper.kafka.stats import RdkafkaStatsState, StatsSummary, apply_stats, make_stats_cb
from shipper.telemetry import MetricsRecorder

DATA = Path(__file__).parent / "data"
BROKER = "127.0.0.1:19092/1"


def documents(codec: str) -> list[str]:
    return (DATA / f"rdkafka_stats_{codec}.jsonl").read_text().splitlines()


def gauges(rec: MetricsRecorder) -> dict[str, dict[tuple[str, ...], float]]:
    return rec.snapshot()["gauges"]


def counters(rec: MetricsRecorder) -> dict[str, dict[tuple[str, ...], float]]:
    return rec.snapshot()["counters"]


def with_changes(raw: str, **top: Any) -> str:
    doc = json.loads(raw)
    doc.update(top)
    return json.dumps(doc)


def with_retries(raw: str, retries: int) -> str:
    doc = json.loads(raw)
    doc["brokers"][BROKER]["txretries"] = retries
    return json.dumps(doc)


def test_first_document_records_rtt_queue_retries_and_compression() -> None:
    raw = documents("zstd")[0]
    doc = json.loads(raw)
    rec = MetricsRecorder("producer:test:0")
    summary = apply_stats(rec, raw, "bs1", RdkafkaStatsState(codec="zstd"))

    g = gauges(rec)
    rtt_us = doc["brokers"][BROKER]["rtt"]["avg"]
    assert rtt_us > 0
    assert g["log_capturer_kafka_broker_rtt_seconds"] == {(BROKER,): rtt_us / 1e6}
    assert g["log_capturer_kafka_producer_queue_messages"] == {(): float(doc["msg_cnt"])}
    # zstd squeezes repetitive JSON log lines a lot; the exact figure is from the file.
    batches = sum(t["batchsize"]["sum"] for t in doc["topics"].values())
    ratio = g["log_capturer_kafka_compression_ratio"][("bs1",)]
    assert ratio == pytest.approx(batches / doc["txmsg_bytes"])
    assert 0.01 < ratio < 0.5
    # Retries start at zero, and the series exists so rate() works from the start.
    assert counters(rec)["log_capturer_kafka_retries_total"] == {(BROKER,): 0.0}

    assert summary.brokers_up == summary.brokers_total == 1
    assert summary.queue_messages == doc["msg_cnt"]
    assert summary.compression_ratio == pytest.approx(ratio)
    assert summary.time == doc["time"]


def test_without_a_codec_the_measure_is_framing_overhead_and_none_reports_one() -> None:
    raw = documents("none")[0]
    measured = MetricsRecorder("p")
    apply_stats(measured, raw, "bs1", RdkafkaStatsState())
    ratio = gauges(measured)["log_capturer_kafka_compression_ratio"][("bs1",)]
    assert 1.0 < ratio < 1.3  # record framing on ~80-byte values, nothing compressed

    declared = MetricsRecorder("p")
    apply_stats(declared, raw, "bs1", RdkafkaStatsState(codec="none"))
    assert gauges(declared)["log_capturer_kafka_compression_ratio"] == {("bs1",): 1.0}


def test_idle_intervals_keep_rtt_and_ratio_but_update_the_queue() -> None:
    docs = documents("zstd")
    rec = MetricsRecorder("p")
    state = RdkafkaStatsState(codec="zstd")
    apply_stats(rec, docs[0], "bs1", state)
    before = gauges(rec)
    for raw in docs[1:]:
        idle = json.loads(raw)
        assert idle["brokers"][BROKER]["rtt"]["cnt"] == 0  # the fixture's premise
        summary = apply_stats(rec, raw, "bs1", state)
        assert summary.compression_ratio is None
    after = gauges(rec)
    assert (
        after["log_capturer_kafka_broker_rtt_seconds"]
        == before["log_capturer_kafka_broker_rtt_seconds"]
    )
    assert (
        after["log_capturer_kafka_compression_ratio"]
        == before["log_capturer_kafka_compression_ratio"]
    )
    assert after["log_capturer_kafka_producer_queue_messages"] == {(): 0.0}


def test_retries_are_counted_as_growth_of_the_cumulative_figure() -> None:
    raw = documents("zstd")[1]
    rec = MetricsRecorder("p")
    state = RdkafkaStatsState()
    seen = []
    for cumulative in (2, 2, 7, 10):
        seen.append(apply_stats(rec, with_retries(raw, cumulative), "bs1", state).retries)
    assert seen == [2, 0, 5, 3]
    assert counters(rec)["log_capturer_kafka_retries_total"] == {(BROKER,): 10.0}
    # A restarted client starts from zero again: its new figure is all new retries.
    apply_stats(rec, with_retries(raw, 4), "bs1", state)
    assert counters(rec)["log_capturer_kafka_retries_total"] == {(BROKER,): 14.0}


def test_compression_uses_the_payload_growth_of_the_interval() -> None:
    raw = documents("zstd")[0]
    doc = json.loads(raw)
    batches = sum(t["batchsize"]["sum"] for t in doc["topics"].values())
    rec = MetricsRecorder("p")
    state = RdkafkaStatsState()
    apply_stats(rec, raw, "bs1", state)
    # Next interval: the same batches again, twice the cumulative payload.
    again = with_changes(raw, txmsg_bytes=doc["txmsg_bytes"] * 2)
    apply_stats(rec, again, "bs1", state)
    assert gauges(rec)["log_capturer_kafka_compression_ratio"][("bs1",)] == pytest.approx(
        batches / doc["txmsg_bytes"]
    )
    assert state.tx_msg_bytes == doc["txmsg_bytes"] * 2


def test_internal_brokers_are_skipped_and_down_brokers_are_not_up() -> None:
    doc = json.loads(documents("zstd")[1])
    real = doc["brokers"][BROKER]
    doc["brokers"][":0/internal"] = {**real, "name": ":0/internal", "source": "internal"}
    doc["brokers"]["b2:9092/2"] = {**real, "name": "b2:9092/2", "state": "CONNECT"}
    rec = MetricsRecorder("p")
    summary = apply_stats(rec, json.dumps(doc), "bs1", RdkafkaStatsState())
    assert (summary.brokers_up, summary.brokers_total) == (1, 2)
    assert set(counters(rec)["log_capturer_kafka_retries_total"]) == {(BROKER,), ("b2:9092/2",)}


def test_sparse_or_odd_documents_do_not_fail() -> None:
    rec = MetricsRecorder("p")
    summary = apply_stats(rec, "{}", "bs1", RdkafkaStatsState())
    assert summary.brokers_total == 0 and summary.compression_ratio is None
    odd: dict[str, Any] = {
        "brokers": {"x": "not an object"},
        "topics": [],
        "msg_cnt": "7",
        "txmsg_bytes": None,
    }
    apply_stats(rec, json.dumps(odd), "bs1", RdkafkaStatsState())
    assert gauges(rec)["log_capturer_kafka_producer_queue_messages"] == {(): 0.0}


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", b"\xff"])
def test_a_document_that_is_not_a_json_object_is_rejected(bad: str | bytes) -> None:
    rec = MetricsRecorder("p")
    with pytest.raises(ValueError, match="librdkafka statistics"):
        apply_stats(rec, bad, "bs1", RdkafkaStatsState())
    assert rec.snapshot()["gauges"] == {}


def test_the_stats_callback_never_raises_and_reports_summaries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = MetricsRecorder("p")
    got: list[StatsSummary] = []
    cb = make_stats_cb(rec, "bs1", codec="zstd", on_summary=got.append)
    for raw in documents("zstd"):
        cb(raw)
    assert [s.brokers_up for s in got] == [1, 1, 1]
    with caplog.at_level("WARNING", logger="shipper.kafka.stats"):
        cb("garbage")
    assert "could not use librdkafka statistics" in caplog.text
    assert len(got) == 3

    def explode(_s: object) -> None:
        raise RuntimeError("boom")

    make_stats_cb(rec, "bs1", on_summary=explode)(documents("zstd")[0])  # logged, not raised
