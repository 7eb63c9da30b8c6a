"""The one place that turns a ``sinks.kafka`` section into librdkafka settings.

Every producer the project makes (the Producer actors, ``shipper dlq replay``, the
benchmark's bare loop) takes its settings from :func:`librdkafka_settings`, so a
message produced by any of them lands on the same partition, with the same codec,
acks, timeouts and security.

The result holds the SASL password in clear (librdkafka needs it). Its ``repr`` and
``str`` mask it; callers must not log a copy of it either.
"""

from __future__ import annotations

from typing import Any

from shipper.config import KafkaSinkConfig
from shipper.config.types import MASK, MESSAGE_OVERHEAD_BYTES

__all__ = ["LibrdkafkaSettings", "librdkafka_settings"]

# librdkafka's linger.ms: the Batcher already gathers batch_size entries (or waits
# batch_timeout) and hands a chunk over in one produce_batch call, so the client
# should send almost at once; 1 ms lets librdkafka pack a chunk into few requests
# (5 ms cost the low-latency preset 4 ms at the median and bought no throughput).
_MAX_LINGER = 0.001

_ACKS = {0: "0", 1: "1", -1: "all"}


class LibrdkafkaSettings(dict[str, Any]):
    """A librdkafka settings dict whose repr never shows the SASL password."""

    def __repr__(self) -> str:
        shown = {k: (MASK if k == "sasl.password" else v) for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


def librdkafka_settings(sink: KafkaSinkConfig) -> LibrdkafkaSettings:
    """``confluent_kafka.Producer`` settings that implement ``sink``."""
    conf = LibrdkafkaSettings(
        {
            "bootstrap.servers": ",".join(sink.brokers),
            "compression.type": sink.compression,
            "acks": _ACKS[sink.required_acks],
            # librdkafka only allows idempotence with acks=all and at least one retry;
            # with acks 0/1 a retry may duplicate anyway, so it stays off.
            "enable.idempotence": sink.required_acks == -1 and sink.retry_max >= 1,
            "retries": sink.retry_max,
            "message.timeout.ms": max(1, round(sink.timeout * 1000)),
            # The Batcher has already waited for a full batch or batch_timeout;
            # librdkafka must not add a second wait on top of it.
            "linger.ms": min(sink.batch_timeout, _MAX_LINGER) * 1000,
            "batch.num.messages": sink.batch_size,
            "message.max.bytes": sink.max_message_bytes + MESSAGE_OVERHEAD_BYTES,
            "security.protocol": sink.security_protocol,
            # A broker that comes back is found within 2 s (librdkafka's default backs
            # off to 10 s between reconnects): the breaker's probe waits for it.
            "reconnect.backoff.max.ms": 2000,
            # Keyed messages without an explicit partition land where Kafka's Java
            # client would put them (murmur2), the function our hash partitioner uses.
            "partitioner": "murmur2_random",
            # Requests go out whole (one chunk at a time); Nagle's algorithm would only
            # hold a small one back waiting for the previous one's TCP ack.
            "socket.nagle.disable": True,
            # Partition counts are re-read as often as the Batchers re-read theirs, so
            # a topic that grows partitions is seen by both at about the same time.
            "topic.metadata.refresh.interval.ms": 30_000,
            # librdkafka's own queue must not be what limits a Batcher's queue_size (a
            # full queue makes the client wait and retry); the Batchers bound what is
            # in flight.
            "queue.buffering.max.messages": min(10_000_000, max(100_000, 2 * sink.queue_size)),
        }
    )
    auth = sink.auth
    if auth.enabled:
        conf["sasl.mechanism"] = auth.mechanism
        conf["sasl.username"] = auth.username
        if auth.password is not None:
            conf["sasl.password"] = auth.password.get_secret_value()
    tls = sink.tls
    if tls.enabled:
        for key, value in (
            ("ssl.ca.location", tls.ca_file),
            ("ssl.certificate.location", tls.cert_file),
            ("ssl.key.location", tls.key_file),
        ):
            if value is not None:
                conf[key] = value
        conf["enable.ssl.certificate.verification"] = tls.verify_certificate
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if tls.verify_certificate else "none"
        )
    return conf
