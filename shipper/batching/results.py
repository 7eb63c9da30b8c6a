"""Send results made without Kafka: a chunk failed whole, and the probe's outcome.

Both are used by the Batcher (:mod:`shipper.batching.topic` and its actor): a chunk
diverted while the breaker is open or parked at shutdown fails whole with its reason
(:func:`failed_result`), and the breaker's probe that Kafka failed is relabelled so
its entries spend no retry (:func:`probe_failed`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from shipper.kafka.client import Failure, SendResult
from shipper.outcomes import Reason

__all__ = ["failed_result", "probe_failed"]


def failed_result(
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None,
    reason: Reason,
    error: str,
    headers: Any = None,
) -> SendResult:
    """A result in which every value failed with ``reason`` (nothing was produced)."""
    now = time.time()
    r = SendResult(topic=topic, sent=len(values), started=now, finished=now)
    r.failures = [
        Failure(
            v,
            keys[i] if keys else None,
            reason,
            error,
            headers[i] if headers is not None else None,
        )
        for i, v in enumerate(values)
    ]
    return r


def probe_failed(results: list[SendResult]) -> list[SendResult]:
    """The outcome of the breaker's probe, as its entries should see it. A probe that
    Kafka failed (timeout, error) says that Kafka is still away, not that something is
    wrong with those entries: they fail as ``circuit_open``, so a DLQ record that served
    as the probe spends no retry (a backlog is the probe when no new entries come, and
    would otherwise be parked after a few probes of a long outage). The breaker still
    hears a failure (``circuit_open`` from a Producer counts as one)."""
    out = []
    for r in results:
        if any(f.reason.retried and f.reason.from_broker for f in r.failures):
            r = SendResult(
                topic=r.topic,
                sent=r.sent,
                delivered=r.delivered,
                failures=[
                    Failure(
                        f.value,
                        f.key,
                        Reason.CIRCUIT_OPEN,
                        f"the breaker's probe failed: {f.error}",
                        f.headers,
                    )
                    if f.reason.retried and f.reason.from_broker
                    else f
                    for f in r.failures
                ],
                started=r.started,
                finished=r.finished,
            )
        out.append(r)
    return out
