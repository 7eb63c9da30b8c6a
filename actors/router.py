"""Router actor: the pipeline's entrance, one call per submission.

It runs :class:`shipper.intake.Intake` (decode, validate, route, encode once,
size-check, key), hands each topic's segment to that topic's Batcher (created on
first sight, as a named actor so several Routers share it), and answers with the
submission's :class:`~shipper.outcomes.SubmissionResult` once every entry has an
outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import ray
from shipper.config import KafkaSinkConfig
from shipper.entries import LogEntry

from shipper.intake import Intake, Prepared
from shipper.outcomes import EntryFailure, SegmentOutcome, SubmissionResult

from .batcher import start_batcher

__all__ = ["RouterActor", "start_router"]


class RouterActor:
    def __init__(self, sink: KafkaSinkConfig, producers: list[Any], namespace: str) -> None:
        self.sink = sink
        self.producers = producers
        self.namespace = namespace
        self.intake = Intake(sink)
        self.batchers: dict[str, Any] = {}
        self.counts = {"submissions": 0, "entries": 0, "rejected": 0}

    def _batcher(self, topic: str) -> Any:
        handle = self.batchers.get(topic)
        if handle is None:
            handle = start_batcher(topic, self.sink, self.producers, self.namespace)
            self.batchers[topic] = handle
        return handle

    async def submit_lines(
        self, lines: bytes | list[bytes], submitted_at: float, first_line: int = 1
    ) -> SubmissionResult:
        return await self._dispatch(self.intake.prepare_lines(lines, first_line), submitted_at)

    async def submit_objects(
        self, objs: Iterable[LogEntry | Mapping[str, Any] | str], submitted_at: float
    ) -> SubmissionResult:
        return await self._dispatch(self.intake.prepare_objects(objs), submitted_at)

    async def _dispatch(self, prep: Prepared, submitted_at: float) -> SubmissionResult:
        self.counts["submissions"] += 1
        self.counts["entries"] += prep.submitted
        self.counts["rejected"] += len(prep.rejected)
        result = SubmissionResult(
            submitted=prep.submitted, failures=list(prep.rejected), submitted_at=submitted_at
        )
        topics = list(prep.segments)
        refs = [
            self._batcher(t).enqueue.remote(
                prep.segments[t].values,
                prep.segments[t].keys,
                prep.segments[t].levels,
                submitted_at,
            )
            for t in topics
        ]
        outs = await asyncio.gather(*refs, return_exceptions=True)
        for topic, out in zip(topics, outs, strict=True):
            if isinstance(out, SegmentOutcome):
                result.add_segment(out)
                continue
            # The Batcher failed: every entry of the segment is reported, none dropped.
            seg = prep.segments[topic]
            self.batchers.pop(topic, None)
            for i, value in enumerate(seg.values):
                result.failures.append(
                    EntryFailure(
                        "error",
                        f"batcher for {topic} failed: {out}",
                        topic=topic,
                        value=value,
                        key=seg.keys[i] if seg.keys else None,
                    )
                )
        if result.latency == 0.0:
            result.latency = time.time() - submitted_at
        return result

    async def flush(self) -> int:
        """Flush every Batcher this Router knows; return what is still queued."""
        left = await asyncio.gather(*(b.flush.remote() for b in self.batchers.values()))
        return int(sum(left))

    async def batcher_stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(b.stats.remote() for b in self.batchers.values())))

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)


def start_router(
    sink: KafkaSinkConfig, producers: list[Any], namespace: str, index: int = 0
) -> Any:
    cls = ray.remote(RouterActor)
    return cls.options(  # type: ignore[attr-defined]
        name=f"router:{index}",
        namespace=namespace,
        get_if_exists=True,
        max_concurrency=256,
        max_restarts=-1,
        num_cpus=0,
    ).remote(sink, producers, namespace)
