"""The telemetry actor on local Ray: Reporters push, a real HTTP scrape reads the sums."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from actors.reporter import Reporter
from actors.telemetry import TelemetryActor, start_telemetry
from shipper.telemetry import MetricsRecorder, empty_snapshot

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

OK = {"sink": "kafka", "status": "success"}
ERR = {"sink": "kafka", "status": "error"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def scrape(base: str) -> Samples:
    status, text = get(base + "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (pushes are fire and forget)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.fixture
def telemetry() -> Iterator[tuple[Any, str]]:
    """A telemetry actor on a free loopback port, in its own namespace."""
    handle = start_telemetry(f"telemetry-test-{uuid.uuid4().hex[:8]}", "127.0.0.1", 0)
    host, port = ray.get(handle.address.remote())
    assert host == "127.0.0.1" and port > 0
    yield handle, f"http://{host}:{port}"
    ray.kill(handle, no_restart=True)


def test_two_reporters_are_summed_on_one_endpoint(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    assert ray.get(handle.url.remote()) == base
    a, b = MetricsRecorder("batcher:a"), MetricsRecorder("batcher:b")
    ra, rb = Reporter(handle, a), Reporter(handle, b)
    a.add("log_capturer_logs_sent_total", 3, OK)
    b.add("log_capturer_logs_sent_total", 4, OK)
    b.add("log_capturer_logs_sent_total", 2, ERR)
    a.set("log_capturer_kafka_queue_utilization", 0.2, {"topic": "t"})
    b.set("log_capturer_kafka_queue_utilization", 0.7, {"topic": "t"})
    a.set("log_capturer_kafka_queue_size", 20, {"topic": "t"})
    b.set("log_capturer_kafka_queue_size", 70, {"topic": "t"})
    a.observe("log_capturer_kafka_end_to_end_latency_seconds", 0.004, {"topic": "t"}, count=3)
    b.observe("log_capturer_kafka_end_to_end_latency_seconds", 0.2, {"topic": "t"}, count=4)
    assert ra.push_now() and rb.push_now()

    def summed() -> Samples | None:
        s = scrape(base)
        return s if value(s, "log_capturer_logs_sent_total", **OK) == 7 else None

    s = eventually(summed)
    assert s, scrape(base)
    assert value(s, "log_capturer_logs_sent_total", **ERR) == 2
    assert value(s, "log_capturer_kafka_queue_utilization", topic="t") == 0.7  # max
    assert value(s, "log_capturer_kafka_queue_size", topic="t") == 90  # sum
    latency = "log_capturer_kafka_end_to_end_latency_seconds"
    assert value(s, latency + "_count", topic="t") == 7
    assert value(s, latency + "_sum", topic="t") == pytest.approx(3 * 0.004 + 4 * 0.2)
    assert value(s, latency + "_bucket", topic="t", le="0.005") == 3
    assert value(s, latency + "_bucket", topic="t", le="+Inf") == 7
    # The actor's own error counter exists at zero.
    assert value(s, "log_capturer_errors_total", component="telemetry") == 0
    assert sorted(ray.get(handle.sources.remote())) == ["batcher:a", "batcher:b", "telemetry"]

    # Later pushes carry cumulative figures: only the newest counts.
    a.add("log_capturer_logs_sent_total", 10, OK)
    ra.push_now()
    assert eventually(lambda: value(scrape(base), "log_capturer_logs_sent_total", **OK) == 17)


def test_ready_flips_with_the_breaker_and_healthz_stays_up(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    status, body = get(base + "/ready")
    assert status == 503 and "no broker set has reported" in body
    assert get(base + "/healthz")[0] == 200

    ray.get(handle.report_health.remote("bs1", 0, time.time()))
    status, body = get(base + "/ready")
    assert status == 200, body

    ray.get(handle.report_health.remote("bs1", 1, None))  # breaker opened
    status, body = get(base + "/ready")
    assert status == 503 and "circuit breaker open for broker set bs1" in body
    assert get(base + "/healthz")[0] == 200  # the process is still fine

    ray.get(handle.report_health.remote("bs1", 2, None))  # half-open: not open
    assert get(base + "/ready")[0] == 200
    ray.get(handle.report_health.remote("bs1", 0, time.time()))  # closed again
    assert get(base + "/ready") == (200, ray.get(handle.ready.remote())[1] + "\n")

    # A second broker set that never answered keeps the deployment unready.
    ray.get(handle.report_health.remote("bs2", 0, None))
    status, body = get(base + "/ready")
    assert status == 503 and "no broker of set bs2 has answered yet" in body


def test_ready_fails_when_no_broker_answered_recently() -> None:
    handle = start_telemetry(
        f"telemetry-test-{uuid.uuid4().hex[:8]}", "127.0.0.1", 0, stale_after=0.5
    )
    try:
        base = ray.get(handle.url.remote())
        ray.get(handle.report_health.remote("bs1", 0, time.time()))
        assert get(base + "/ready")[0] == 200
        status, body = eventually(lambda: (r := get(base + "/ready"))[0] == 503 and r, 5)
        assert status == 503 and "no broker of set bs1 answered in the last 0.5s" in body
        # An older report than the one known does not move the time back.
        ray.get(handle.report_health.remote("bs1", None, time.time()))
        ray.get(handle.report_health.remote("bs1", None, time.time() - 3600))
        assert get(base + "/ready")[0] == 200
        with pytest.raises(ray.exceptions.RayTaskError, match="unknown breaker state"):
            ray.get(handle.report_health.remote("bs1", 7, None))
    finally:
        ray.kill(handle, no_restart=True)


def test_forget_keeps_counts_and_a_restarted_source_adds_up(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    first = MetricsRecorder("producer:bs:0")
    first.add("log_capturer_kafka_delivered_total", 5, {"topic": "t"})
    first.set("log_capturer_kafka_producer_queue_messages", 9)
    assert ray.get(handle.push.remote(first.snapshot()))
    # Same source, new recorder (the actor restarted): the old five are kept.
    again = MetricsRecorder("producer:bs:0")
    again.add("log_capturer_kafka_delivered_total", 2, {"topic": "t"})
    assert ray.get(handle.push.remote(again.snapshot()))
    s = scrape(base)
    assert value(s, "log_capturer_kafka_delivered_total", topic="t") == 7
    assert value(s, "log_capturer_kafka_producer_queue_messages") is None  # new one has none

    again.set("log_capturer_kafka_producer_queue_messages", 4)
    ray.get(handle.push.remote(again.snapshot()))
    assert value(scrape(base), "log_capturer_kafka_producer_queue_messages") == 4
    ray.get(handle.forget.remote("producer:bs:0"))
    s = scrape(base)
    assert value(s, "log_capturer_kafka_delivered_total", topic="t") == 7
    assert value(s, "log_capturer_kafka_producer_queue_messages") is None
    # An out-of-date snapshot (lower seq) is ignored.
    old = again.snapshot()
    ray.get(handle.push.remote(again.snapshot()))
    assert not ray.get(handle.push.remote(old))


def test_a_bad_snapshot_is_counted_not_fatal(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    bad = empty_snapshot("rogue", "i", 1)
    bad["counters"]["no_such_metric_total"] = {(): 1.0}
    assert not ray.get(handle.push.remote(bad))
    assert value(scrape(base), "log_capturer_errors_total", component="telemetry") == 1
    assert get(base + "/healthz")[0] == 200


def test_start_telemetry_finds_the_existing_actor() -> None:
    ns = f"telemetry-test-{uuid.uuid4().hex[:8]}"
    first = start_telemetry(ns, "127.0.0.1", 0)
    try:
        second = start_telemetry(ns, "127.0.0.1", 0)
        assert ray.get(first.address.remote()) == ray.get(second.address.remote())
    finally:
        ray.kill(first, no_restart=True)


@ray.remote(num_cpus=0)
class _AsyncSource:
    """A stand-in for an async pipeline actor that uses the Reporter as documented."""

    def __init__(self, telemetry: Any) -> None:
        self.queued = 0
        self.metrics = Reporter(telemetry, "batcher:async", interval=0.1, refresh=self._refresh)

    def _refresh(self) -> None:
        self.metrics.recorder.set("log_capturer_kafka_queue_size", self.queued, {"topic": "t"})

    async def work(self, n: int) -> int:
        self.metrics.start_periodic()
        self.queued += n
        self.metrics.recorder.add("log_capturer_logs_sent_total", n, OK)
        await asyncio.sleep(0)
        return self.metrics.pushes


def test_start_periodic_pushes_from_an_async_actor(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    src = _AsyncSource.remote(handle)  # type: ignore[attr-defined]
    try:
        ray.get(src.work.remote(5))
        ray.get(src.work.remote(6))  # start_periodic again: still one task

        def pushed() -> bool:
            s = scrape(base)
            return (
                value(s, "log_capturer_logs_sent_total", **OK) == 11
                and value(s, "log_capturer_kafka_queue_size", topic="t") == 11
            )

        assert eventually(pushed), scrape(base)
    finally:
        ray.kill(src, no_restart=True)


def test_close_sends_the_final_figures(telemetry: tuple[Any, str]) -> None:
    handle, base = telemetry
    rep = Reporter(handle, "dlq:node", interval=60)
    rep.recorder.add("log_capturer_dlq_writes_total", 3, {"reason": "timeout"})
    rep.close()
    assert eventually(
        lambda: value(scrape(base), "log_capturer_dlq_writes_total", reason="timeout") == 3
    )


class _FakeHandle:
    """Stands in for an actor handle: records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.push = self

    def remote(self, snapshot: Any) -> None:
        self.sent.append(snapshot)


def test_maybe_push_sends_at_most_once_per_interval() -> None:
    now = [100.0]
    fake = _FakeHandle()
    refreshed = []
    rep = Reporter(
        fake, "router:0", interval=1.0, clock=lambda: now[0], refresh=lambda: refreshed.append(1)
    )
    assert rep.maybe_push()  # the first call sends at once
    assert not rep.maybe_push()
    now[0] += 0.5
    assert not rep.maybe_push()
    now[0] += 0.5
    assert rep.maybe_push()
    assert rep.push_now()  # regardless of the interval
    assert [s["seq"] for s in fake.sent] == [1, 2, 3]
    assert len(refreshed) == 3
    assert all(s["source"] == "router:0" for s in fake.sent)


def test_without_telemetry_the_reporter_records_and_sends_nothing() -> None:
    rep = Reporter(None, "router:0")
    rep.recorder.add("log_capturer_errors_total", 1, {"component": "router"})
    assert not rep.maybe_push() and not rep.push_now()
    assert rep.recorder.snapshot()["counters"]["log_capturer_errors_total"] == {("router",): 1.0}
    with pytest.raises(RuntimeError, match="needs an event loop"):
        rep.start_periodic()
    with pytest.raises(ValueError):
        Reporter(None, "x", interval=0)


def test_a_failing_refresh_or_send_does_not_raise() -> None:
    class Broken:
        class push:
            @staticmethod
            def remote(_snapshot: Any) -> None:
                raise RuntimeError("ray is shutting down")

    def bad_refresh() -> None:
        raise RuntimeError("boom")

    rep = Reporter(Broken(), "x", refresh=bad_refresh)
    assert not rep.push_now()


def test_the_actor_class_works_without_ray_for_plain_use() -> None:
    actor = TelemetryActor("127.0.0.1", 0, stale_after=10, clock=lambda: 1000.0)
    try:
        actor.report_health("bs", 0, 995.0)
        assert actor.ready()[0]
        assert actor.health() == {"bs": {"breaker_state": 0, "since_success": 5.0}}
        actor.report_health("bs", None, 980.0)  # older: ignored
        assert actor.ready()[0]
        with pytest.raises(ValueError):
            TelemetryActor("127.0.0.1", 0, stale_after=0)
    finally:
        actor.close()


def test_sources_silent_past_the_ttl_are_forgotten_on_scrape() -> None:
    now = [1000.0]
    actor = TelemetryActor("127.0.0.1", 0, source_ttl=60, clock=lambda: now[0])
    try:
        rec = MetricsRecorder("batcher:gone")
        rec.add("log_capturer_logs_sent_total", 4, OK)
        rec.set("log_capturer_kafka_queue_size", 8, {"topic": "t"})
        assert actor.push(rec.snapshot())
        now[0] += 30
        assert "batcher:gone" in actor.sources()
        assert actor.merged()["gauges"]["log_capturer_kafka_queue_size"] == {("t",): 8.0}
        now[0] += 31
        merged = actor.merged()
        assert "batcher:gone" not in actor.sources()
        assert "log_capturer_kafka_queue_size" not in merged["gauges"]
        assert merged["counters"]["log_capturer_logs_sent_total"][("kafka", "success")] == 4
    finally:
        actor.close()
