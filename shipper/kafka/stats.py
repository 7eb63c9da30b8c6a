"""librdkafka's statistics, turned into catalog metrics.

With ``statistics.interval.ms`` > 0 and a ``stats_cb`` in the producer config, librdkafka
hands the application a JSON document every interval (see librdkafka's STATISTICS.md).
:func:`apply_stats` reads one such document and records, for one producer:

==========================================  ===============================================
metric                                      from
==========================================  ===============================================
``log_capturer_kafka_broker_rtt_seconds``   ``brokers[].rtt.avg`` (microseconds -> seconds)
{broker}                                    over the interval; left unchanged when the
                                            interval had no request to that broker
``log_capturer_kafka_retries_total``        ``brokers[].txretries`` (cumulative): the growth
{broker}                                    since the previous document is added
``log_capturer_kafka_producer_queue_        top-level ``msg_cnt``: messages in the producer
messages``                                  queues, not yet acknowledged
``log_capturer_kafka_compression_ratio``    ``sum(topics[].batchsize.sum)`` over the growth
{broker_set}                                of top-level ``txmsg_bytes``; see below
==========================================  ===============================================

Compression ratio. In librdkafka 2.x ``topics[].batchsize`` is a window statistic (reset
at every emit) of the size of each produced record batch *after* compression (it is
taken after the message set writer compressed the batch, record framing included),
while ``txmsg_bytes`` (and ``partitions[].txbytes``) is the cumulative sum of the key
and value bytes handed to ``produce()``, before compression. Both are updated at the
same moment, when a batch is written, so over one interval their ratio is compressed
over uncompressed bytes. Without a codec the measure reads slightly above 1 (the record
framing: about 1.12 for ~80-byte log lines); when the caller says the codec is
``none`` the gauge is set to exactly 1. An interval in which nothing was produced
leaves the gauge as it was.

Broker labels are librdkafka's broker names (``host:port/nodeid``); the internal and
logical broker handles are skipped. Nothing here imports Ray: the Producer actor
installs :func:`make_stats_cb` as the client's ``stats_cb``, which runs on the client's
poll thread (the recorder is thread-safe).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipper.telemetry import MetricsRecorder

__all__ = [
    "RdkafkaStatsState",
    "StatsSummary",
    "apply_stats",
    "make_stats_cb",
]

_log = logging.getLogger(__name__)

# Broker handles that are not real brokers: the internal handle (":0/internal") and
# logical ones (e.g. the coordinator alias).
_SKIPPED_SOURCES = frozenset({"internal", "logical"})


@dataclass
class RdkafkaStatsState:
    """What :func:`apply_stats` remembers between documents of one producer.

    ``codec`` is the producer's ``compression.type`` (``None`` if unknown); with
    ``"none"`` the compression ratio is reported as exactly 1. A fresh state assumes a
    fresh client (cumulative counters start at zero); a counter that goes backwards is
    taken as a client restart and its new value counted from zero.
    """

    codec: str | None = None
    retries: dict[str, int] = field(default_factory=dict)
    tx_msg_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StatsSummary:
    """What one document said, for callers that act on it (readiness, logs).

    ``brokers_up`` counts real brokers in state ``UP``; ``compression_ratio`` is
    ``None`` when the interval produced nothing.
    """

    time: float
    brokers_up: int
    brokers_total: int
    queue_messages: int
    compression_ratio: float | None
    retries: int


def _int(value: Any) -> int:
    """librdkafka writes integers; anything else counts as 0 rather than failing."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def apply_stats(
    recorder: MetricsRecorder,
    stats_json: str | bytes,
    broker_set: str,
    state: RdkafkaStatsState,
) -> StatsSummary:
    """Record one librdkafka statistics document in ``recorder``; see the module doc.

    ``ValueError`` if ``stats_json`` is not a JSON object (nothing is recorded then).
    Missing fields are treated as absent, never as an error: the layout differs a
    little between librdkafka versions.
    """
    try:
        doc = json.loads(stats_json)
    except ValueError as exc:
        raise ValueError(f"librdkafka statistics are not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("librdkafka statistics must be a JSON object")

    up = 0
    total = 0
    retried = 0
    with state.lock:  # one document at a time: the deltas depend on the order
        for key, broker in _dict(doc.get("brokers")).items():
            if not isinstance(broker, dict) or broker.get("source") in _SKIPPED_SOURCES:
                continue
            name = str(broker.get("name") or key)
            labels = {"broker": name}
            total += 1
            if broker.get("state") == "UP":
                up += 1
            rtt = _dict(broker.get("rtt"))
            if _int(rtt.get("cnt")) > 0:
                recorder.set(
                    "log_capturer_kafka_broker_rtt_seconds", _int(rtt.get("avg")) / 1e6, labels
                )
            now_retries = _int(broker.get("txretries"))
            before = state.retries.get(name)
            grew = now_retries if before is None or now_retries < before else now_retries - before
            state.retries[name] = now_retries
            # Adding 0 on first sight publishes the series, so rate() works at once.
            recorder.add("log_capturer_kafka_retries_total", grew, labels)
            retried += grew

        queued = _int(doc.get("msg_cnt"))
        recorder.set("log_capturer_kafka_producer_queue_messages", queued)

        tx_bytes = _int(doc.get("txmsg_bytes"))
        payload = tx_bytes - state.tx_msg_bytes if tx_bytes >= state.tx_msg_bytes else tx_bytes
        state.tx_msg_bytes = tx_bytes
        batches = sum(
            _int(_dict(_dict(topic).get("batchsize")).get("sum"))
            for topic in _dict(doc.get("topics")).values()
        )
        ratio: float | None = None
        if payload > 0 and batches > 0:
            ratio = 1.0 if state.codec == "none" else batches / payload
            recorder.set("log_capturer_kafka_compression_ratio", ratio, {"broker_set": broker_set})

    return StatsSummary(
        time=float(_int(doc.get("time"))),
        brokers_up=up,
        brokers_total=total,
        queue_messages=queued,
        compression_ratio=ratio,
        retries=retried,
    )


def make_stats_cb(
    recorder: MetricsRecorder,
    broker_set: str,
    *,
    codec: str | None = None,
    on_summary: Callable[[StatsSummary], None] | None = None,
) -> Callable[[str], None]:
    """A ``stats_cb`` for a ``confluent_kafka.Producer`` config that never raises.

    It runs on the thread that calls ``poll()``; an exception there would surface from
    ``poll()`` and stop the client's poll loop, so a bad document (or a failing
    ``on_summary``) is logged and skipped instead.
    """
    state = RdkafkaStatsState(codec=codec)

    def stats_cb(stats_json: str) -> None:
        try:
            summary = apply_stats(recorder, stats_json, broker_set, state)
            if on_summary is not None:
                on_summary(summary)
        except Exception:
            _log.warning("could not use librdkafka statistics", exc_info=True)

    return stats_cb
