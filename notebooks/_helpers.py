"""Shared code of the notebooks: paths, configs, the local broker, a paced feeder.

Kept out of the notebooks so that they show the experiment, not the plumbing. Every
notebook starts with ``import _helpers as h`` (its working directory is
``notebooks/``), which also puts the repository root on ``sys.path``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _repo_root() -> Path:
    here = Path(__file__).resolve().parent
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "actors").is_dir():
            return p
    raise RuntimeError(f"no repository root above {here}")


REPO = _repo_root()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.datagen import generate  # noqa: E402
from shipper.testing import (  # noqa: E402
    LocalKafka,
    create_topic,
    delete_topic,
    kafka_local_script,
)

__all__ = [
    "REPO",
    "SMALL",
    "Feeder",
    "LocalKafka",
    "blob",
    "create_topic",
    "delete_topic",
    "generate",
    "kafka_local",
    "make_config",
    "new_dlq_dir",
    "pareto_front",
    "pick",
    "wait_acks",
]

#: ``NOTEBOOK_SMALL=1`` (CI) selects small parameters; unset or ``0`` the full ones.
SMALL = os.environ.get("NOTEBOOK_SMALL", "").strip() not in ("", "0", "false", "no")


def pick(small: Any, full: Any) -> Any:
    """``small`` under ``NOTEBOOK_SMALL=1``, else ``full``."""
    return small if SMALL else full


def ray_address() -> str:
    """The Ray to use: ``RAY_ADDRESS`` when set (a cluster), else a local Ray of this
    notebook's own (never one another session left on the machine)."""
    return os.environ.get("RAY_ADDRESS") or "local"


def new_dlq_dir(prefix: str) -> str:
    """A fresh temporary folder for one notebook's dead-letter queue."""
    return tempfile.mkdtemp(prefix=f"nb-{prefix}-dlq-")


def make_config(
    kafka: LocalKafka,
    topic: str,
    dlq_dir: str,
    *,
    metrics: bool = False,
    pipeline: dict[str, Any] | None = None,
    **sink: Any,
) -> dict[str, Any]:
    """A whole Shipper config for ``topic`` on the local broker (PLAINTEXT).

    ``sink`` overrides the ``sinks.kafka`` keys (compression, batch_size, ...)."""
    kafka_section: dict[str, Any] = {
        "enabled": True,
        **kafka.sink_settings("PLAINTEXT"),
        "topic": topic,
        "compression": "snappy",
        "batch_size": 1000,
        "batch_timeout": "100ms",
        "queue_size": 50_000,
        "timeout": "10s",
        "dlq_config": {"path": dlq_dir},
        "circuit_breaker": {"failure_threshold": 3, "success_threshold": 2, "timeout": "5s"},
        # Level routing would send error/debug entries to the shared default priority
        # topics; a notebook keeps everything in its own topic.
        "routing": {"enabled": False},
    }
    kafka_section.update(sink)
    cfg: dict[str, Any] = {
        "sinks": {"kafka": kafka_section},
        "metrics": {"enabled": True, "port": 0} if metrics else {"enabled": False},
    }
    if pipeline:
        cfg["pipeline"] = dict(pipeline)
    return cfg


def blob(lines: Sequence[bytes]) -> bytes:
    """One newline-separated submission out of JSON lines."""
    return b"\n".join(lines)


def kafka_local(cmd: str) -> str:
    """Run ``scripts/kafka-local CMD`` (up, stop, start, status) and return its output."""
    proc = subprocess.run(
        [str(kafka_local_script()), cmd], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 and cmd != "status":
        raise RuntimeError(f"kafka-local {cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return (proc.stdout + proc.stderr).strip()


def wait_acks(acks: Sequence[Any], timeout: float) -> bool:
    """Wait (without settling them) until every ack is done; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(a.done() for a in acks):
            return True
        time.sleep(0.05)
    return False


class Feeder(threading.Thread):
    """Submits ``lines`` to a Shipper from a background thread, ``chunk`` at a time.

    ``rate`` (entries/s) paces the submissions; ``None`` submits as fast as the
    Shipper takes them. The Shipper is not meant to be driven from two threads at
    once, so every call on it (here and in the sampling loop) holds ``lock``.
    ``submitting`` is False once the last chunk was handed over; ``error`` holds what
    went wrong in the thread, and ``join_or_raise`` re-raises it.
    """

    def __init__(
        self,
        shipper: Any,
        lines: Sequence[bytes],
        lock: threading.Lock,
        chunk: int = 500,
        rate: float | None = None,
    ) -> None:
        super().__init__(name="feeder", daemon=True)
        self.shipper = shipper
        self.lines = lines
        self.lock = lock
        self.chunk = chunk
        self.rate = rate
        self.max_inflight = int(shipper.config.pipeline.max_inflight_submissions)
        self.acks: list[Any] = []
        self._oldest = 0
        self.submitted = 0
        self.submitting = True
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            for i in range(0, len(self.lines), self.chunk):
                part = self.lines[i : i + self.chunk]
                if self.rate:
                    due = self.started_at + i / self.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                # Wait for room outside the lock, so that submit() does not block
                # while holding it and the sampling loop keeps its 0.2 s rhythm.
                while self._pending(self.acks) >= self.max_inflight:
                    time.sleep(0.002)
                with self.lock:
                    self.acks.append(self.shipper.submit_lines(blob(part), first_line=i + 1))
                self.submitted += len(part)
        except BaseException as exc:  # surfaced by join_or_raise
            self.error = exc
        finally:
            self.submitting = False
            self.finished_at = time.monotonic()

    def _pending(self, acks: list[Any]) -> int:
        # Acks finish roughly in order: skip the done ones from the oldest on.
        while self._oldest < len(acks) and acks[self._oldest].done():
            self._oldest += 1
        return len(acks) - self._oldest

    def all_done(self) -> bool:
        """Every chunk handed over and every acknowledgement has an outcome."""
        return not self.submitting and all(a.done() for a in self.acks)

    def join_or_raise(self, timeout: float | None = None) -> None:
        self.join(timeout)
        if self.error is not None:
            raise self.error


def pareto_front(
    points: Sequence[Any], x: Callable[[Any], float], y: Callable[[Any], float]
) -> list[Any]:
    """Points no other point beats on both: higher ``x`` (throughput), lower ``y``
    (latency). Returned by increasing ``x``."""
    front = []
    for p in points:
        dominated = any(
            x(q) >= x(p) and y(q) <= y(p) and (x(q) > x(p) or y(q) < y(p)) for q in points
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=x)


def log_distance_to_ideal(
    p: Any, points: Sequence[Any], x: Callable[[Any], float], y: Callable[[Any], float]
) -> float:
    """How far ``p`` is from the (unreachable) best-of-both point, each axis on a log
    scale normalised to the spread of the measured points: the balanced pick is the
    point where this is smallest."""
    xs = [math.log(max(x(q), 1e-9)) for q in points]
    ys = [math.log(max(y(q), 1e-9)) for q in points]
    dx = (max(xs) - math.log(max(x(p), 1e-9))) / ((max(xs) - min(xs)) or 1.0)
    dy = (math.log(max(y(p), 1e-9)) - min(ys)) / ((max(ys) - min(ys)) or 1.0)
    return math.hypot(dx, dy)


def topic_count(kafka: LocalKafka, topic: str) -> int:
    """Messages ``topic`` holds: the sum of its partitions' high watermarks."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka.client_config(**{"group.id": f"nb-count-{uuid.uuid4().hex}"}))
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions
        )
    finally:
        c.close()


_cleanups: list[Callable[[], None]] = []


def at_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` when the kernel exits, in case the notebook stopped before its last
    cell (the last cell runs every cleanup itself, through :func:`cleanup`)."""
    if not _cleanups:
        import atexit

        atexit.register(cleanup)
    _cleanups.append(fn)


def cleanup() -> None:
    """Run (once) every cleanup registered with :func:`at_exit`, newest first."""
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # cleanup must go on
            print(f"cleanup {getattr(fn, '__name__', fn)} failed: {exc}", file=sys.stderr)
