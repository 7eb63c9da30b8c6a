"""The fault matrix: every way in, against a broker that dies, hangs or comes back.

Ways in (paths):

- ``api``: ``Shipper.submit_lines`` in this process, retrying on ``BackpressureError``
  as an API caller should;
- ``pipe``: ``shipper run`` reading its stdin;
- ``input``: ``shipper run --input FILE``; FILE is a named pipe that the harness writes
  at a steady rate, so a fault lands in the middle of the input (a regular file would
  be read to its end in a second);
- ``file``: ``shipper run`` serving a tailed file (``sources.files``);
- ``http``: the same service's HTTP intake (``sources.http``).

Faults, each against the real local broker (``scripts/kafka-local``):

- ``down_at_start``: the broker is down when the shippers start, and comes back;
- ``kill``: ``kill -9`` in mid-stream, started again ``outage`` seconds later;
- ``freeze``: ``SIGSTOP`` for longer than the sink's ``timeout``, then ``SIGCONT``;
- ``back_during_replay``: killed near the end, so the inputs end and the shippers drain
  while it is down; ``shipper dlq replay --wait`` starts while it is still down, and it
  comes back in the middle of that replay;
- ``group_sigterm``: the broker stays up; ``SIGTERM`` goes to the whole process group
  of a ``shipper run`` on a pipe and of a service (file and HTTP), each on a Ray of its
  own (not for ``api``, a library call in its caller's process).

Every line carries its path and a sequence number. For each cell (path x fault): no
traceback and exit code 0, every line the path took in Kafka or the DLQ before any
replay, every one in Kafka after ``shipper dlq replay`` (read back by kcat), the
duplicates that at-least-once delivery made, and how long the path took to deliver
again once the broker was back.

Two schedules share the code:

- ``chain`` (``make test``): one run of all five paths in which the faults follow each
  other (down at start, kill, freeze, back during the replay), small and quick; each
  line is checked against the fault during which it was offered;
- ``separate`` (``make chaos``): a fresh run per fault at full size, with the spec's
  timings, and the table written into ``docs/operations.md``::

      python -m tests.faultmatrix --full --docs docs/operations.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shipper.testing import (
    LocalKafka,
    create_topic,
    delete_topic,
    kafka_local_script,
    kill_tree,
)

PATHS = ("api", "pipe", "input", "file", "http")
FAULTS = ("down_at_start", "kill", "freeze", "back_during_replay", "group_sigterm")
SHIPPER = str(Path(sys.executable).parent / "shipper")
TICK = 0.1  # seconds between two blocks a feeder offers


@dataclass
class Sizes:
    """How big and how long: per path lines per second, outage lengths, timings."""

    rate: int  # lines per second offered by each path
    steady: float  # seconds of normal traffic before a fault
    outage: float  # seconds a killed broker stays down before its start is begun
    freeze: float  # seconds a frozen broker stays frozen (> timeout)
    sink: dict[str, Any]  # sinks.kafka settings that differ from the spec's
    drain_timeout: str
    recover_limit: float  # longest wait for a path to deliver again

    def total_hint(self) -> str:
        return f"{self.rate:,} lines/s per path"


SMALL = Sizes(
    rate=300,
    steady=1.0,
    outage=2.5,
    freeze=5.0,
    sink={
        "timeout": "3s",
        "circuit_breaker": {
            "failure_threshold": 3,
            "success_threshold": 1,
            "timeout": "2s",
            "unreachable_after": "2s",
        },
        "dlq_config": {"reprocessing_config": {"interval": "2s", "batch_size": 500}},
    },
    drain_timeout="20s",
    recover_limit=90.0,
)

FULL = Sizes(
    rate=2500,
    steady=15.0,
    outage=25.0,
    freeze=40.0,  # the spec's timeout is 30 s
    sink={},  # the spec's defaults: timeout 30s, breaker 10 / 2 / 60s, unreachable 3s
    drain_timeout="60s",
    recover_limit=240.0,
)


def line(path: str, seq: int) -> bytes:
    return json.dumps(
        {
            "message": f"{path} line {seq}",
            "level": ("info", "warn", "error", "debug")[seq % 4],
            "fields": {"seq": seq, "path": path, "tenant_id": f"t{seq % 7}"},
        },
        separators=(",", ":"),
    ).encode()


def http_line(path: str, seq: int, topic: str) -> bytes:
    doc = json.loads(line(path, seq))
    doc["labels"] = {"kafka_topic": topic}
    return json.dumps(doc, separators=(",", ":")).encode()


def parse(value: bytes | None) -> tuple[str, int] | None:
    try:
        f = json.loads(value or b"")["fields"]
        return str(f["path"]), int(f["seq"])
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- broker


class Broker:
    """The local broker, killed, frozen and started for real."""

    def __init__(self) -> None:
        self.script = str(kafka_local_script())
        self.frozen: int | None = None
        self.events: list[tuple[str, float]] = []

    def _run(self, what: str) -> None:
        subprocess.run([self.script, what], check=True, capture_output=True, timeout=180)

    def pid(self) -> int:
        out = subprocess.run(
            [self.script, "status", "--json"], capture_output=True, text=True, timeout=30
        )
        pid = json.loads(out.stdout).get("pid")
        if not pid:
            raise RuntimeError(f"the broker does not run: {out.stdout[-500:]}")
        return int(pid)

    def kill(self) -> float:
        self._run("kill")
        return self._note("killed")

    def start(self) -> float:
        self._run("up")
        return self._note("back")

    def freeze(self) -> float:
        self.frozen = self.pid()
        os.kill(self.frozen, signal.SIGSTOP)
        return self._note("frozen")

    def thaw(self) -> float:
        if self.frozen is not None:
            os.kill(self.frozen, signal.SIGCONT)
            self.frozen = None
        return self._note("back")

    def ensure_up(self) -> None:
        """Whatever happened, leave a running broker behind."""
        with contextlib.suppress(Exception):
            self.thaw()
        self._run("up")

    def _note(self, what: str) -> float:
        t = time.monotonic()
        self.events.append((what, t))
        return t


# --------------------------------------------------------------------------- drivers


@dataclass
class Offered:
    """What a path offered and took, and during which fault."""

    phase_at: list[tuple[int, str]] = field(default_factory=list)  # (first seq, phase)
    taken: set[int] = field(default_factory=set)  # only for paths that know it (api, http)
    next_seq: int = 0

    def phase_of(self, seq: int) -> str:
        phase = self.phase_at[0][1] if self.phase_at else ""
        for first, name in self.phase_at:
            if seq >= first:
                phase = name
        return phase


class Driver:
    """One way in. ``offer`` hands over a block; returns how many lines were taken."""

    path = ""

    def __init__(self, run: Run, topic: str) -> None:
        self.run = run
        self.topic = topic
        self.dir = run.workdir / self.path
        self.dir.mkdir(parents=True, exist_ok=True)
        self.offered = Offered()
        self.stop = threading.Event()
        self.feeder: threading.Thread | None = None
        self.error: str | None = None

    # the config of the shipper behind this path (a service shares one)
    def config(self) -> dict[str, Any]:
        return self.run.config(self.dir / "dlq", self.topic)

    def start(self) -> None:
        raise NotImplementedError

    def offer(self, first: int, n: int) -> int:
        raise NotImplementedError

    def end(self) -> None:
        """The input ends (EOF, close, SIGTERM)."""
        raise NotImplementedError

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the shipper to end; what it said (code, stderr, summary)."""
        raise NotImplementedError

    def taken(self, result: dict[str, Any]) -> set[int]:
        """The sequence numbers the path took (read, accepted): its promise."""
        raise NotImplementedError

    def feed(self) -> None:
        per_tick = max(1, round(self.run.sizes.rate * TICK))
        nxt = time.monotonic()
        try:
            while not self.stop.is_set():
                o = self.offered
                if not o.phase_at or o.phase_at[-1][1] != self.run.phase:
                    o.phase_at.append((o.next_seq, self.run.phase))
                taken = self.offer(o.next_seq, per_tick)
                o.next_seq += taken
                nxt += TICK
                self.stop.wait(max(0.0, nxt - time.monotonic()))
                nxt = max(nxt, time.monotonic() - TICK)
        except Exception as exc:  # reported as the cell's error
            if not self.stop.is_set():
                self.error = f"feeder: {type(exc).__name__}: {exc}"

    def release(self) -> None:
        """Close what this driver holds open (files, pipes)."""

    def start_feeding(self) -> None:
        self.feeder = threading.Thread(target=self.feed, name=f"feed-{self.path}", daemon=True)
        self.feeder.start()

    def stop_feeding(self) -> None:
        self.stop.set()
        if self.feeder is not None:
            self.feeder.join(timeout=120)


class ApiDriver(Driver):
    """``Shipper.submit_lines`` in this process: waits out backpressure, keeps every
    acknowledgement (with when it came) to time the switch to the DLQ."""

    path = "api"

    def start(self) -> None:
        from actors.pipeline import Shipper

        self.shipper = Shipper(self.config())
        self.pending: list[tuple[Any, float, range]] = []
        self.acks: list[tuple[float, float, int, int]] = []  # submitted, settled, n, dlq

    def _settle(self, block: bool = False) -> None:
        still = []
        for ack, t0, seqs in self.pending:
            if block or ack.done():
                r = ack.result()
                self.acks.append((t0, time.monotonic(), r.submitted, r.dlq))
                if not r.ok:
                    self.error = f"a submission was not ok: {r.summary()}"
                self.offered.taken.update(seqs)
            else:
                still.append((ack, t0, seqs))
        self.pending = still

    def offer(self, first: int, n: int) -> int:
        from shipper.errors import BackpressureError

        block = b"\n".join(line("api", s) for s in range(first, first + n))
        offered = time.monotonic()  # the caller waits from here (for room, then the ack)
        while True:
            try:
                ack = self.shipper.submit_lines(block, timeout=1.0)
                break
            except BackpressureError:
                if self.stop.is_set():
                    return 0
        self.pending.append((ack, offered, range(first, first + n)))
        self._settle()
        return n

    def end(self) -> None:
        self.stop_feeding()

    def finish(self, timeout: float) -> dict[str, Any]:
        self._settle(block=True)
        #: every breaker transition of the run: (wall time, broker set, old, new)
        self.breaker_moves = self.shipper.breaker_history()
        report = self.shipper.close()
        return {"code": 0 if report.drained else 1, "stderr": "", "summary": report.stats.as_dict()}

    def taken(self, result: dict[str, Any]) -> set[int]:
        return set(self.offered.taken)

    def breakers_closed(self) -> bool:
        return all(b["state"] == 0 for b in self.shipper.breaker_states().values())

    def to_dlq(self, gone: float, back: float) -> float | None:
        """The longest a submission offered while the broker was away (from ``gone`` to
        ``back``) waited, for room and then for its acknowledgement (None: none of them
        went to the DLQ): how soon new entries end in the DLQ once Kafka is gone."""
        during = [(t0, settled, dlq) for t0, settled, _n, dlq in self.acks if gone <= t0 < back]
        if not any(dlq for _t0, _s, dlq in during):
            return None
        return max(settled - t0 for t0, settled, _dlq in during)


class CliDriver(Driver):
    """A ``shipper run`` process."""

    own_ray = False  # True: no RAY_ADDRESS, a Ray of its own in a process group of its own

    def argv(self) -> list[str]:
        return []

    def launch(self, stdin: Any = subprocess.DEVNULL) -> None:
        cfg = self.dir / "shipper.yaml"
        cfg.write_text(yaml.safe_dump(self.config()))
        self.cfg_file = cfg
        self.summary = self.dir / "summary.json"
        self.out = open(self.dir / "stdout.txt", "w")  # noqa: SIM115 - closed in finish
        self.err = open(self.dir / "stderr.txt", "w")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        if not self.own_ray:
            env["RAY_ADDRESS"] = self.run.ray_address
        self.proc = subprocess.Popen(
            [SHIPPER, "run", "--config", str(cfg), "--summary-json", str(self.summary),
             *self.argv()],
            stdin=stdin, stdout=self.out, stderr=self.err, env=env,
            start_new_session=self.own_ray,
        )  # fmt: skip

    def stderr(self) -> str:
        return (self.dir / "stderr.txt").read_text(errors="replace")

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            code = self.proc.wait()
            self.error = f"did not end within {timeout:.0f}s"
        self.out.close()
        self.err.close()
        summary = json.loads(self.summary.read_text()) if self.summary.exists() else {}
        return {"code": code, "stderr": self.stderr(), "summary": summary}

    def taken(self, result: dict[str, Any]) -> set[int]:
        # Read in order: the first entries_in lines.
        return set(range(int(result["summary"].get("entries_in", 0))))


class PipeDriver(CliDriver):
    path = "pipe"

    def start(self) -> None:
        self.launch(stdin=subprocess.PIPE)

    def offer(self, first: int, n: int) -> int:
        assert self.proc.stdin is not None
        data = b"".join(line("pipe", s) + b"\n" for s in range(first, first + n))
        try:
            self.proc.stdin.write(data)  # blocks while the pipe is full: backpressure
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.stop.set()
            return 0
        return n

    def end(self) -> None:
        self.stop_feeding()
        self.release()

    def release(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


class InputDriver(CliDriver):
    path = "input"

    def argv(self) -> list[str]:
        return ["--input", str(self.fifo)]

    def start(self) -> None:
        self.fifo = self.dir / "input.fifo"
        os.mkfifo(self.fifo)
        self.launch()
        self.writer: Any = None

    def offer(self, first: int, n: int) -> int:
        if self.writer is None:
            self.writer = open(self.fifo, "wb")  # noqa: SIM115 - waits for the reader
        data = b"".join(line("input", s) + b"\n" for s in range(first, first + n))
        try:
            self.writer.write(data)
            self.writer.flush()
        except (BrokenPipeError, ValueError):
            self.stop.set()
            return 0
        return n

    def end(self) -> None:
        self.stop_feeding()
        self.release()

    def release(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()


class ServiceDriver(CliDriver):
    """``shipper run`` serving a tailed file and an HTTP intake: two paths, one
    process. This driver feeds the file; :class:`HttpDriver` posts to its intake."""

    path = "file"

    def __init__(self, run: Run, topic: str, http_topic: str) -> None:
        super().__init__(run, topic)
        self.http_topic = http_topic
        self.url: str | None = None

    def config(self) -> dict[str, Any]:
        cfg = self.run.config(self.dir / "dlq", self.topic)
        cfg["sources"] = {
            "files": [
                {"paths": [str(self.dir / "app.log")], "labels": {"kafka_topic": self.topic}}
            ],
            "checkpoints": {"path": str(self.dir / "checkpoints")},
            "tail": {"poll_interval": "200ms"},
            "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
        }
        return cfg

    def start(self) -> None:
        self.log = open(self.dir / "app.log", "ab")  # noqa: SIM115 - closed in end
        self.launch()

    def wait_url(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"HTTP intake at (http://\S+) on", self.stderr())
            if m:
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the service never started its HTTP intake:\n{self.stderr()[-3000:]}")

    def offer(self, first: int, n: int) -> int:
        self.log.write(b"".join(line("file", s) + b"\n" for s in range(first, first + n)))
        self.log.flush()
        return n

    def release(self) -> None:
        self.log.close()

    def end(self) -> None:
        self.stop_feeding()
        self.log.close()
        self.run.http.stop_feeding()
        # Let the source read what was written before the stop (it follows the file).
        time.sleep(1.0)
        self.proc.send_signal(signal.SIGTERM)

    def taken(self, result: dict[str, Any]) -> set[int]:
        files = result["summary"].get("by_source", {}).get("files", {})
        return set(range(int(files.get("entries_in", 0))))


class HttpDriver(Driver):
    """Posts NDJSON to the service's intake; a request answered 200 was taken."""

    path = "http"

    def __init__(self, run: Run, topic: str, service: ServiceDriver) -> None:
        super().__init__(run, topic)
        self.service = service
        self.codes: Counter[int] = Counter()

    def config(self) -> dict[str, Any]:
        return self.service.config()

    def start(self) -> None:
        pass  # the service runs it

    def offer(self, first: int, n: int) -> int:
        url = self.service.url or self.service.wait_url()
        body = b"\n".join(http_line("http", s, self.topic) for s in range(first, first + n))
        while not self.stop.is_set():
            req = urllib.request.Request(url, data=body, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=300) as resp:
                    self.codes[resp.status] += 1
                    answer = json.loads(resp.read())
                    if answer.get("accepted") != n:
                        self.error = f"a request was not taken whole: {answer}"
                    self.offered.taken.update(range(first, first + n))
                    return n
            except urllib.error.HTTPError as exc:
                self.codes[exc.code] += 1
                exc.close()
                time.sleep(0.5)  # 429 / 503: the same request again shortly
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if self.stop.is_set():
                    break
                time.sleep(0.5)
        return 0

    def end(self) -> None:
        self.stop_feeding()

    def finish(self, timeout: float) -> dict[str, Any]:
        return self.service.result

    def taken(self, result: dict[str, Any]) -> set[int]:
        return set(self.offered.taken)


# --------------------------------------------------------------------------- a run


class Sampler(threading.Thread):
    """How many messages each topic holds, every quarter second (high watermarks)."""

    def __init__(self, kafka: LocalKafka, topics: dict[str, str]) -> None:
        super().__init__(name="sampler", daemon=True)
        from confluent_kafka import Consumer

        self.topics = topics
        self.consumer = Consumer(
            {**kafka.client_config(), "group.id": f"sampler-{uuid.uuid4().hex}",
             "logger": _quiet_logger()}
        )  # fmt: skip
        self.samples: dict[str, list[tuple[float, int]]] = {p: [] for p in topics}
        self.done = threading.Event()

    def run(self) -> None:
        from confluent_kafka import TopicPartition

        while not self.done.wait(0.25):
            for path, topic in self.topics.items():
                try:
                    total = sum(
                        self.consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=0.5, cached=False
                        )[1]
                        for p in range(3)
                    )
                except Exception:
                    continue
                self.samples[path].append((time.monotonic(), total))

    def grew_after(self, path: str, t: float) -> float | None:
        """Seconds from ``t`` to the first sample that holds more than the last one
        taken before ``t`` (None: it did not grow)."""
        before = [n for at, n in self.samples[path] if at <= t]
        base = before[-1] if before else 0
        for at, n in self.samples[path]:
            if at > t and n > base:
                return at - t
        return None

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        self.consumer.close()


def _quiet_logger() -> Any:
    import logging

    logger = logging.getLogger("faultmatrix.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


@dataclass
class Cell:
    path: str
    fault: str
    lines: int = 0
    in_kafka: int = 0
    in_dlq: int = 0
    missing: int = 0  # taken, in neither Kafka nor the DLQ (before any replay)
    missing_after_replay: int = 0  # taken, not in Kafka after the replay
    duplicates: int = 0
    #: entries the path's shipper handed to its DLQ in the whole run (all faults of a
    #: chain together; the file and HTTP paths share a service)
    through_dlq: int = 0
    recover_s: float | None = None  # broker back -> the path delivers again
    to_dlq_s: float | None = None  # broker gone -> first entries acknowledged in the DLQ
    code: int | None = 0
    problems: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)  # what the user saw (shipper run: ...)

    @property
    def ok(self) -> bool:
        return not self.problems and self.missing == 0 and self.missing_after_replay == 0


class Run:
    """Shippers on every path, one topic each, against the one local broker."""

    def __init__(
        self,
        kafka: LocalKafka,
        workdir: Path,
        sizes: Sizes,
        ray_address: str,
        paths: tuple[str, ...] = PATHS,
        own_ray: bool = False,
    ) -> None:
        self.kafka = kafka
        self.workdir = workdir
        self.sizes = sizes
        self.ray_address = ray_address
        self.phase = "steady"
        self.broker = Broker()
        self.topics = {p: f"fm-{p}-{uuid.uuid4().hex[:8]}" for p in paths}
        self.drivers: dict[str, Driver] = {}
        self.service: ServiceDriver | None = None
        self.http: HttpDriver
        if "file" in paths or "http" in paths:
            self.service = ServiceDriver(self, self.topics["file"], self.topics["http"])
            self.service.own_ray = own_ray
            self.http = HttpDriver(self, self.topics["http"], self.service)
        for p in paths:
            if p == "api":
                self.drivers[p] = ApiDriver(self, self.topics[p])
            elif p == "pipe":
                self.drivers[p] = PipeDriver(self, self.topics[p])
            elif p == "input":
                self.drivers[p] = InputDriver(self, self.topics[p])
            elif p == "file":
                assert self.service is not None
                self.drivers[p] = self.service
            elif p == "http":
                self.drivers[p] = self.http
        for d in self.drivers.values():
            if isinstance(d, CliDriver):
                d.own_ray = own_ray
        self.results: dict[str, dict[str, Any]] = {}
        self.recoveries: list[tuple[str, float]] = []  # (fault, broker back at)
        self.kills: list[tuple[str, float]] = []  # (fault, broker gone at)
        self.replay_outputs: list[str] = []
        self.started_at = time.monotonic()

    def config(self, dlq: Path, topic: str) -> dict[str, Any]:
        sink: dict[str, Any] = {
            "enabled": True,
            "brokers": [self.kafka.address()],
            "topic": topic,
            "compression": "snappy",
            "partitioning": {"enabled": True, "strategy": "hash", "key_field": "tenant_id"},
            "routing": {"enabled": False},
            "batch_timeout": "50ms",
            "dlq_config": {"path": str(dlq)},
        }
        for k, v in self.sizes.sink.items():
            if isinstance(v, dict) and isinstance(sink.get(k), dict):
                sink[k] = {**sink[k], **v}
            else:
                sink[k] = v
        return {
            "sinks": {"kafka": sink},
            "metrics": {"enabled": False},
            "pipeline": {"drain_timeout": self.sizes.drain_timeout},
            "logging": {"file": str(dlq.parent / "shipper.log")},
        }

    # -- life of a run ------------------------------------------------------------

    def create_topics(self) -> None:
        for topic in self.topics.values():
            create_topic(self.kafka.client_config(), partitions=3, name=topic)

    def start(self) -> None:
        self.sampler = Sampler(self.kafka, self.topics)
        self.sampler.start()
        for d in self.drivers.values():
            if d is not self.http:
                d.start()
        if self.service is not None:
            self.service.wait_url()
        for d in self.drivers.values():
            d.start_feeding()

    def end(self) -> None:
        """Every input ends; every shipper drains and stops."""
        for path in ("http", "api", "pipe", "input", "file"):
            if path in self.drivers:
                self.drivers[path].end()
        for path, d in self.drivers.items():
            if path == "http":
                continue
            self.results[path] = d.finish(timeout=240)
        if self.service is not None:
            self.service.result = self.results.get("file", {})
            self.results["http"] = self.service.result

    def replay(self, wait: str = "0s") -> None:
        """``shipper dlq replay`` for every shipper's DLQ, side by side."""
        procs = []
        for path, d in self.drivers.items():
            if path == "http":
                continue
            cfg = d.dir / "replay.yaml"
            cfg.write_text(yaml.safe_dump(d.config()))
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            procs.append(
                subprocess.Popen(
                    [SHIPPER, "dlq", "replay", "--config", str(cfg), "--wait", wait],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                )
            )
        for p in procs:
            out, _ = p.communicate(timeout=600)
            self.replay_outputs.append(out)

    def wait_delivering(self, since: float, fault: str) -> None:
        """Until every path that still feeds delivers again after ``since`` (and the
        API shipper's breaker is closed: the next fault must find it closed)."""
        deadline = since + self.sizes.recover_limit
        feeding = [p for p, d in self.drivers.items() if not d.stop.is_set()]
        api = self.drivers.get("api")
        while time.monotonic() < deadline:
            if all(self.sampler.grew_after(p, since) is not None for p in feeding) and (
                not isinstance(api, ApiDriver) or api.breakers_closed()
            ):
                return
            time.sleep(0.5)
        late = [p for p in feeding if self.sampler.grew_after(p, since) is None]
        raise AssertionError(f"{fault}: {late} did not deliver again within "
                             f"{self.sizes.recover_limit:.0f}s of the broker's return")  # fmt: skip

    def stop(self) -> None:
        self.sampler.stop()
        for d in self.drivers.values():
            d.stop.set()
        for d in self.drivers.values():
            if isinstance(d, CliDriver) and hasattr(d, "proc"):
                if d.proc.poll() is None:
                    kill_tree(d.proc.pid)
                    d.proc.wait()
                d.out.close()
                d.err.close()
            with contextlib.suppress(Exception):
                d.release()

    def delete_topics(self) -> None:
        for topic in self.topics.values():
            with contextlib.suppress(Exception):
                delete_topic(self.kafka.client_config(), topic)

    # -- faults -------------------------------------------------------------------

    def _outage(
        self, fault: str, gone: Callable[[], float], length: float, back: Callable[[], float]
    ) -> None:
        """Steady traffic, then the broker away for ``length`` seconds, then back; waits
        until every path delivers again."""
        self.phase = fault
        time.sleep(self.sizes.steady)
        self.kills.append((fault, gone()))
        time.sleep(length)
        t = back()
        self.recoveries.append((fault, t))
        self.wait_delivering(t, fault)

    def fault_kill(self) -> None:
        self._outage("kill", self.broker.kill, self.sizes.outage, self.broker.start)

    def fault_freeze(self) -> None:
        self._outage("freeze", self.broker.freeze, self.sizes.freeze, self.broker.thaw)

    def begin_down(self) -> None:
        """Before :meth:`start`: the broker is down when the shippers start."""
        self.phase = "down_at_start"
        self.kills.append(("down_at_start", self.broker.kill()))

    def come_back(self) -> None:
        """After :meth:`start` with the broker down: it comes back after the outage
        (what ``shipper status`` says meanwhile is kept)."""
        t0 = time.monotonic()
        self.status_during_outage = self.status()
        time.sleep(max(0.0, self.sizes.outage - (time.monotonic() - t0)))
        back = self.broker.start()
        self.recoveries.append(("down_at_start", back))
        self.wait_delivering(back, "down_at_start")

    def status(self, want: str = "OPEN", timeout: float = 20.0) -> str:
        """``shipper status`` on the run's Ray, again until it shows ``want`` (or the
        time is up): the last answer."""
        env = {**os.environ, "RAY_ADDRESS": self.ray_address}
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                [SHIPPER, "status"], capture_output=True, text=True, timeout=120, env=env
            )
            text = out.stdout + out.stderr
            if want in text or time.monotonic() > deadline:
                return text
            time.sleep(1.0)

    def fault_back_during_replay(self) -> None:
        """Killed near the end: the inputs end and drain while it is down; the replay
        starts while it is down and it comes back in the middle of it."""
        self.phase = "back_during_replay"
        time.sleep(self.sizes.steady)
        self.kills.append(("back_during_replay", self.broker.kill()))
        time.sleep(self.sizes.outage / 2)
        self.end()
        # Kafka cannot be read now; the DLQs can (their shippers are gone). A replay
        # only moves DLQ records into Kafka, so "in Kafka after it, or in the DLQ now"
        # is "in Kafka or the DLQ before it".
        self.dlq_before = self.read_dlqs()
        replays = threading.Thread(target=self.replay, kwargs={"wait": "5m"})
        replays.start()
        time.sleep(2.0)  # the replays meet a dead broker first
        back = self.broker.start()
        self.recoveries.append(("back_during_replay", back))
        replays.join(timeout=900)
        self.replay_done = time.monotonic()

    def group_sigterm(self) -> None:
        """SIGTERM to each shipper run's whole process group (the broker stays up)."""
        self.phase = "group_sigterm"
        time.sleep(self.sizes.steady * 2)
        for d in self.drivers.values():
            d.stop_feeding()
        for d in self.drivers.values():
            if isinstance(d, CliDriver):
                d.signal_group(signal.SIGTERM)
        for path, d in self.drivers.items():
            if path != "http":
                self.results[path] = d.finish(timeout=240)
        if self.service is not None:
            self.service.result = self.results.get("file", {})
            self.results["http"] = self.service.result

    # -- what happened ------------------------------------------------------------

    def read_kafka(self) -> dict[str, Counter[int]]:
        """Every line in each path's topic, read back by kcat (an independent client)."""
        out: dict[str, Counter[int]] = {}
        kcat = shutil.which("kcat") or shutil.which("kafkacat")
        if kcat is None:
            raise RuntimeError("kcat is not installed (make test installs it: system-deps)")
        for path, topic in self.topics.items():
            res = subprocess.run(
                [kcat, "-C", "-b", self.kafka.address(), "-t", topic, "-e", "-q", "-f", "%s\n"],
                capture_output=True, timeout=600, check=True,
            )  # fmt: skip
            seqs: Counter[int] = Counter()
            for raw in res.stdout.splitlines():
                got = parse(raw)
                if got is not None and got[0] == path:
                    seqs[got[1]] += 1
            out[path] = seqs
        return out

    def read_dlqs(self) -> dict[str, set[int]]:
        from shipper.dlq import LmdbDlqStore

        out: dict[str, set[int]] = {p: set() for p in self.topics}
        seen: set[Path] = set()
        for d in self.drivers.values():
            where = d.dir / "dlq" if not isinstance(d, HttpDriver) else d.service.dir / "dlq"
            if where in seen or not where.exists():
                continue
            seen.add(where)
            with LmdbDlqStore(str(where)) as store:
                for r in store.fetch(10**9, include_parked=True):
                    got = parse(r.value)
                    if got is not None and got[0] in out:
                        out[got[0]].add(got[1])
        return out

    def cells(self, faults: list[str], before: dict[str, Any], after: dict[str, Counter[int]],
              ) -> list[Cell]:  # fmt: skip
        """One cell per path and fault, from what was offered when and where it is."""
        kafka, dlq = before["kafka"], before["dlq"]
        cells: list[Cell] = []
        for path, d in self.drivers.items():
            result = self.results.get(path, {})
            taken = d.taken(result) if result else set()
            by_phase: dict[str, set[int]] = {f: set() for f in faults}
            for seq in taken:
                phase = d.offered.phase_of(seq)
                by_phase.setdefault(phase if phase in by_phase else faults[0], set()).add(seq)
            stderr = result.get("stderr", "")
            user_lines = [ln for ln in stderr.splitlines() if ln.startswith("shipper run:")]
            for fault in faults:
                seqs = by_phase[fault]
                c = Cell(path, fault, lines=len(seqs), code=result.get("code"))
                c.in_dlq = len(seqs & dlq[path])
                c.in_kafka = len((seqs & set(kafka[path])) - dlq[path])
                c.missing = len(seqs - set(kafka[path]) - dlq[path])
                c.missing_after_replay = len(seqs - set(after[path]))
                c.duplicates = sum(after[path][s] - 1 for s in seqs if after[path][s] > 1)
                c.stderr = user_lines
                if not result:
                    c.problems.append("the shipper never reported")
                if "Traceback" in stderr:
                    c.problems.append("a traceback on stderr")
                if "Failed to connect to GCS" in stderr:
                    c.problems.append("its Ray died under it (Failed to connect to GCS)")
                if result and result.get("code") != 0:
                    c.problems.append(f"exit code {result.get('code')}")
                if d.error:
                    c.problems.append(d.error)
                if fault != "group_sigterm" and not seqs:
                    c.problems.append("no line was taken during this fault")
                for name, t in self.recoveries:
                    if name == fault:
                        grew = self.sampler.grew_after(path, t)
                        c.recover_s = None if grew is None else round(grew, 1)
                if fault == "back_during_replay" and self.recoveries:
                    t = dict(self.recoveries).get(fault)
                    if t is not None and hasattr(self, "replay_done"):
                        c.recover_s = round(self.replay_done - t, 1)
                if isinstance(d, ApiDriver) and fault == "kill":
                    gone, back = dict(self.kills).get(fault), dict(self.recoveries).get(fault)
                    if gone is not None and back is not None:
                        got = d.to_dlq(gone, back)
                        c.to_dlq_s = None if got is None else round(got, 1)
                c.through_dlq = int(result.get("summary", {}).get("dlq", 0)) if result else 0
                cells.append(c)
        return cells


# --------------------------------------------------------------------------- schedules


def chain(
    kafka: LocalKafka, workdir: Path, ray_address: str, sizes: Sizes = SMALL
) -> tuple[Run, list[Cell]]:
    """All five paths; down at start, kill, freeze, back during the replay, in a row."""
    run = Run(kafka, workdir, sizes, ray_address)
    faults = ["down_at_start", "kill", "freeze", "back_during_replay"]
    run.create_topics()
    try:
        run.begin_down()
        run.start()
        run.come_back()
        run.fault_kill()
        run.fault_freeze()
        run.fault_back_during_replay()
        run.broker.ensure_up()
        before = {"kafka": run.read_kafka(), "dlq": run.dlq_before}
        run.replay()  # whatever the waiting replay left
        after = run.read_kafka()
        return run, run.cells(faults, before, after)
    finally:
        run.stop()
        run.broker.ensure_up()
        run.delete_topics()


def separate(kafka: LocalKafka, workdir: Path, ray_address: str, fault: str, sizes: Sizes
             ) -> list[Cell]:  # fmt: skip
    """One fault in a run of its own."""
    # The group SIGTERM: a pipe and a service (the --input path differs from the pipe
    # only in what it opens; its signal handling is the same process's).
    paths = PATHS if fault != "group_sigterm" else ("pipe", "file", "http")
    run = Run(kafka, workdir / fault, sizes, ray_address, paths, own_ray=fault == "group_sigterm")
    run.create_topics()
    try:
        if fault == "down_at_start":
            run.begin_down()
            run.start()
            run.come_back()
        else:
            run.phase = fault
            run.start()
            if fault == "kill":
                run.fault_kill()
            elif fault == "freeze":
                run.fault_freeze()
        if fault == "back_during_replay":
            run.fault_back_during_replay()
        elif fault == "group_sigterm":
            run.group_sigterm()
        else:
            time.sleep(sizes.steady)
            run.end()
        run.broker.ensure_up()
        if fault == "back_during_replay":
            before = {"kafka": run.read_kafka(), "dlq": run.dlq_before}
        else:
            before = {"kafka": run.read_kafka(), "dlq": run.read_dlqs()}
        run.replay()
        after = run.read_kafka()
        return run.cells([fault], before, after)
    finally:
        run.stop()
        run.broker.ensure_up()
        run.delete_topics()


# --------------------------------------------------------------------------- reporting


def table(cells: list[Cell]) -> str:
    head = (
        "| fault | path | lines | in Kafka | in the DLQ | through the DLQ | lost | "
        "lost after replay | duplicates | new entries in the DLQ within | delivers again "
        "after | result |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in sorted(cells, key=lambda c: (FAULTS.index(c.fault), PATHS.index(c.path))):
        rows.append(
            f"| {c.fault} | {c.path} | {c.lines:,} | {c.in_kafka:,} | {c.in_dlq:,} | "
            f"{c.through_dlq:,} | "
            f"{c.missing} | {c.missing_after_replay} | {c.duplicates:,} | "
            f"{'' if c.to_dlq_s is None else f'{c.to_dlq_s} s'} | "
            f"{'' if c.recover_s is None else f'{c.recover_s} s'} | "
            f"{'ok' if c.ok else '; '.join(c.problems) or 'LOST LINES'} |"
        )
    return head + "\n".join(rows) + "\n"


def describe(cells: list[Cell]) -> str:
    lines = [table(cells)]
    said: dict[str, list[str]] = {}
    for c in cells:
        if c.stderr and c.path in ("pipe", "file"):
            said.setdefault(c.fault, c.stderr)
    for fault, user in said.items():
        lines.append(f"\nWhat `shipper run` printed on stderr ({fault}, "
                     f"{'service' if 'HTTP intake' in ' '.join(user) else 'pipe'}):\n")  # fmt: skip
        lines.append("```")
        lines += [re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", u)[:300]
                  for u in user[:12]]  # fmt: skip
        lines.append("```")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- fault-matrix: begin (written by `make chaos`) -->"
END = "<!-- fault-matrix: end -->"


def write_docs(doc: Path, text: str, header: str) -> None:
    body = doc.read_text()
    block = f"{BEGIN}\n{header}\n\n{text}{END}"
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + block + body[body.index(END) + len(END) :]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    doc.write_text(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faultmatrix", description=__doc__)
    p.add_argument("--full", action="store_true", help="full size, one run per fault")
    p.add_argument("--fault", action="append", choices=FAULTS, help="only these (repeatable)")
    p.add_argument("--docs", type=Path, help="write the table into this Markdown file")
    p.add_argument("--json", type=Path, help="write the cells as JSON")
    args = p.parse_args(argv)
    import ray

    from actors import local_ray

    local_ray.prepare("local")
    kafka = LocalKafka.ensure_up()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    workdir = Path(tempfile.mkdtemp(prefix="faultmatrix-"))
    t0 = time.monotonic()
    cells: list[Cell] = []
    if args.full:
        for fault in args.fault or FAULTS:
            print(f"faultmatrix: {fault} ...", file=sys.stderr, flush=True)
            cells += separate(kafka, workdir, address, fault, FULL)
            print(table([c for c in cells if c.fault == fault]), file=sys.stderr, flush=True)
    else:
        cells = chain(kafka, workdir, address)[1]
        cells += separate(kafka, workdir, address, "group_sigterm", SMALL)
    took = time.monotonic() - t0
    text = describe(cells)
    print(text)
    print(f"faultmatrix: {len(cells)} cells in {took:.0f} s; work folder {workdir}",
          file=sys.stderr)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([c.__dict__ for c in cells], indent=2))
    if args.docs:
        sizes = FULL if args.full else SMALL
        header = (
            f"Measured {time.strftime('%Y-%m-%d')} by `make chaos` on the development VM (2 "
            f"cores, the broker on the same machine): {sizes.total_hint()}, kill -9 for "
            f"{sizes.outage:.0f} s (plus the broker's own restart), SIGSTOP for "
            f"{sizes.freeze:.0f} s, sink settings {sizes.sink or 'of the spec'}; "
            f"{took / 60:.0f} minutes in all."
        )
        write_docs(args.docs, text, header)
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
