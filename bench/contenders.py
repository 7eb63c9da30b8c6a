"""The benchmark's contenders and the process accounting they are measured with.

Contenders (each one run against a fresh topic by ``bench/run.py``):

- :func:`bare_loop`: one ``confluent_kafka.Producer`` with the settings the shipper
  itself derives from the same config, producing the raw lines in a tight loop;
- :func:`kcat`: ``kcat -P`` reading the data file (the C ceiling);
- :func:`pipeline_api`: the Ray pipeline through ``actors.pipeline.Shipper``;
- :func:`cli`: the ``shipper run`` command on the data file, as a child process;

plus the paced latency scenario (:func:`latency_pipeline`, :func:`latency_bare`) and
:func:`memory_pipeline`. ``python bench/contenders.py reap OUT.json -- CMD...`` is
the child-process wrapper used for the CLI (see :func:`reap_main`).

Process accounting. The suite needs CPU seconds and peak RSS not only of its own process but of
everything a contender runs on: librdkafka threads (inside the process), the Ray
actors of the pipeline (other processes) and child commands (kcat, the CLI and the
Ray instance that the CLI starts). psutil is not a dependency of the project, so this
reads ``/proc`` directly (Linux only).

How CPU is counted:

- :func:`tree_cpu` sums ``utime + stime`` of a process and all its live
  descendants, plus ``cutime + cstime`` (the CPU of children that have exited and
  were reaped by a process in the tree). Two readings of the same tree give the CPU
  spent in between, provided the processes that worked in between are still alive at
  the second reading: the raylet ignores SIGCHLD, so the kernel reaps Ray workers
  without adding their CPU to anyone's ``cutime``. The suite therefore takes the
  second reading before the pipeline's actors are killed.
- :func:`self_cpu` is the calling process alone (all its threads).
- For child commands (the CLI), :func:`reap_main` makes itself a *child subreaper*
  and reaps the whole tree, so ``RUSAGE_CHILDREN`` holds the CPU of every process
  that was reaped with accounting; it also samples each descendant's own CPU every
  100 ms (which catches the Ray workers the raylet lets the kernel reap, but misses
  each process's last moments) and reports the larger of the two totals.

Peak RSS: :func:`reset_peak_rss` clears the kernel's high-water mark of this
process (``/proc/self/clear_refs``), :func:`peak_rss_self` reads it back
(``VmHWM``). Other processes are sampled by :class:`RssSampler` every 200 ms (the process
list is re-read once a second, to pick up new actors).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLK_TCK",
    "Bench",
    "RssSampler",
    "bare_loop",
    "cli",
    "cmdline",
    "descendants",
    "kcat",
    "latency_bare",
    "latency_floor",
    "latency_pipeline",
    "peak_rss_self",
    "pipeline_api",
    "pipeline_config",
    "reap_main",
    "reset_peak_rss",
    "rss_bytes",
    "self_cpu",
    "tree_cpu",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode().split()


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = int(st[1])
    return out


def descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in _ppids().items():
        children[ppid].append(pid)
    out: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _cpu_ticks(pid: int, with_children: bool) -> int:
    st = _stat(pid)
    if st is None:
        return 0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(st[11]) + int(st[12])
    if with_children:
        ticks += int(st[13]) + int(st[14])
    return ticks


def tree_cpu(root: int | None = None) -> float:
    """CPU seconds of ``root`` (default: this process) and its descendants, including
    reaped children of any of them."""
    root = os.getpid() if root is None else root
    pids = [root, *descendants(root)]
    return sum(_cpu_ticks(p, True) for p in pids) / CLK_TCK


def self_cpu() -> float:
    """CPU seconds of this process (every thread), without children."""
    t = os.times()
    return t.user + t.system


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_self() -> int:
    """This process's peak RSS in bytes since start or the last :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def ray_role(cmd: str) -> str | None:
    """The Ray actor class a worker process runs (``RouterActor``...), ``idle`` for a
    pooled worker, ``ray`` for Ray's own daemons, None for anything else."""
    if cmd.startswith("ray::"):
        name = cmd[5:].split(" ", 1)[0].split(".", 1)[0]
        return "idle" if name == "IDLE" else name
    if "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd:
        return "ray"
    return None


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread.

    Keeps the peak of: the root alone, the whole tree, the Ray actor processes
    (anything titled ``ray::Name`` but the idle pool and Ray's agents), and each actor
    class separately.
    """

    AGENTS = frozenset({"idle", "ray", "DashboardAgent", "RuntimeEnvAgent"})

    def __init__(self, root: int | None = None, interval: float = 0.2) -> None:
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.peak_root = 0
        self.peak_tree = 0
        self.peak_actors = 0
        self.peak_by_role: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._cmd: dict[int, str] = {}

    def sample(self, rescan: bool = True) -> None:
        if rescan or not self._cmd:
            self._cmd = {pid: "" for pid in descendants(self.root)}
        root = rss_bytes(self.root)
        tree = root
        actors = 0
        by_role: dict[str, int] = defaultdict(int)
        for pid in self._cmd:
            rss = rss_bytes(pid)
            tree += rss
            # The title changes while an actor runs a method; re-read it each time.
            role = ray_role(cmdline(pid))
            if role is not None and role not in self.AGENTS:
                actors += rss
                by_role[role] += rss
        self.peak_root = max(self.peak_root, root)
        self.peak_tree = max(self.peak_tree, tree)
        self.peak_actors = max(self.peak_actors, actors)
        for role, rss in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)
        self.samples += 1

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            n += 1
            with contextlib.suppress(Exception):  # a process may vanish mid-read
                # Walking all of /proc is the expensive part: do it once a second.
                self.sample(rescan=n % max(1, round(1.0 / self.interval)) == 0)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.sample()


def actor_pids(root: int | None = None, roles: Iterable[str] | None = None) -> dict[int, str]:
    """Ray actor worker processes under ``root``: pid -> actor class name."""
    wanted = set(roles) if roles is not None else None
    out: dict[int, str] = {}
    for pid in descendants(os.getpid() if root is None else root):
        role = ray_role(cmdline(pid))
        if role is None or role in RssSampler.AGENTS:
            continue
        if wanted is None or role in wanted:
            out[pid] = role
    return out


# --------------------------------------------------------------------------- shared


@dataclass
class Bench:
    """Everything the contenders share within one invocation of the suite."""

    bootstrap: str
    lines: list[bytes]
    data_file: Path
    results_dir: Path
    cli_cmd: list[str]
    partitioning: dict[str, Any] = field(default_factory=dict)
    warm: int = 1000
    submission: int = 5000
    broker_log_dir: Path | None = None
    blobs: list[tuple[bytes, int, int]] = field(default_factory=list, repr=False)
    warm_blob: bytes = b""

    def __post_init__(self) -> None:
        self.warm = min(self.warm, len(self.lines) // 10)
        self.warm_blob = b"\n".join(self.lines[: self.warm]) + b"\n"
        self.blobs = []
        for i in range(self.warm, len(self.lines), self.submission):
            chunk = self.lines[i : i + self.submission]
            self.blobs.append((b"\n".join(chunk) + b"\n", i + 1, len(chunk)))

    @property
    def n(self) -> int:
        return len(self.lines)

    @property
    def timed(self) -> int:
        """Entries inside the timed window of the in-process contenders."""
        return self.n - self.warm

    @property
    def payload_bytes(self) -> int:
        return sum(map(len, self.lines))

    def client_conf(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap}


def pipeline_config(
    b: Bench,
    topic: str,
    codec: str | None,
    dlq_dir: str | Path,
    *,
    queue_size: int = 50_000,
    preset: str | None = None,
    headers: bool = False,
) -> dict[str, Any]:
    """The shipper config every pipeline run uses (and the bare loop derives from);
    ``headers``: a static header, one from a label and the entry id on every message.

    Priority routing is off so that every entry goes to the one benchmark topic, like
    the bare loop's; the DLQ stays on (the default) in a throwaway directory.
    """
    kafka: dict[str, Any] = {
        "enabled": True,
        "brokers": [b.bootstrap],
        "topic": topic,
        "routing": {"enabled": False},
        "dlq_config": {"path": str(dlq_dir)},
    }
    if headers:
        kafka.update(
            headers={"env": "bench"},
            headers_from_labels=["service"],
            entry_id_header="x-log-id",
        )
    if preset is not None:
        kafka["preset"] = preset
    else:
        kafka.update(
            compression=codec,
            batch_size=1000,
            batch_timeout="5s",
            queue_size=queue_size,
            partitioning=dict(b.partitioning),
        )
    return {
        "sinks": {"kafka": kafka},
        "metrics": {"enabled": False},
        "pipeline": {"producer_replicas": 1, "max_inflight_submissions": 8},
    }


def producer_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The librdkafka settings the shipper's Producer actor would use for ``cfg``."""
    from shipper.config import load_config
    from shipper.kafka.settings import librdkafka_settings

    return dict(librdkafka_settings(load_config(cfg).sinks.kafka))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in [0, 1]); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def weighted_percentile(pairs: list[tuple[float, int]], q: float) -> float | None:
    """The Shipper's own weighted percentile (``actors.pipeline``); None when empty."""
    from shipper.submissions import weighted_percentile as shipper_percentile

    return shipper_percentile(pairs, q) if pairs else None


def latency_fields(p50: float | None, p95: float | None, p99: float | None) -> dict[str, Any]:
    """Seconds in, milliseconds out (None stays None)."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {"latency_p50_ms": ms(p50), "latency_p95_ms": ms(p95), "latency_p99_ms": ms(p99)}


def _figures(b: Bench, entries: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    payload = b.payload_bytes * entries / b.n
    return {
        "entries": entries,
        "seconds": round(seconds, 4),
        "msg_per_s": round(entries / seconds, 1),
        "payload_mb_per_s": round(payload / seconds / 1e6, 3),
        "cpu_s": round(cpu_s, 3),
        "cpu_s_per_million": round(cpu_s / entries * 1e6, 3),
        "cpu_pct_of_machine": round(100 * cpu_s / seconds / (os.cpu_count() or 1), 1),
    }


# --------------------------------------------------------------------------- contenders


def bare_loop(b: Bench, topic: str, codec: str) -> dict[str, Any]:
    """confluent-kafka in a tight loop: produce, poll(0) once per 1,000, flush.

    The delivery callback counts acks and keeps each message's ``latency()``
    (librdkafka's own produce-to-ack time). The first ``b.warm`` lines are produced
    and flushed before the clock starts (connection and metadata set-up).
    CPU is this process's own (every thread, librdkafka's included).
    """
    from confluent_kafka import Producer

    conf = producer_settings(pipeline_config(b, topic, codec, "/nonexistent"))
    producer = Producer(conf)
    lat: list[float] = []
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            lat.append(msg.latency())
        else:
            errors.append(str(err))

    lines = b.lines
    produce = producer.produce
    poll = producer.poll
    for line in lines[: b.warm]:
        produce(topic, line, on_delivery=on_delivery)
    producer.flush(60)
    lat.clear()
    reset_peak_rss()
    cpu0 = self_cpu()
    t0 = time.perf_counter()
    i, n = b.warm, len(lines)
    while i < n:
        end = min(i + 1000, n)
        while i < end:
            try:
                produce(topic, lines[i], on_delivery=on_delivery)
                i += 1
            except BufferError:
                poll(0.005)  # librdkafka's queue is full: serve delivery reports
        poll(0)
    left = producer.flush(120)
    t1 = time.perf_counter()
    cpu1 = self_cpu()
    out = _figures(b, b.timed, t1 - t0, cpu1 - cpu0)
    out.update(latency_fields(percentile(lat, 0.5), percentile(lat, 0.95), percentile(lat, 0.99)))
    out.update(
        acked=len(lat),
        failed=len(errors) + left,
        peak_rss_driver=peak_rss_self(),
        librdkafka=dict(conf),
    )
    return out


def kcat(b: Bench, topic: str, codec: str) -> dict[str, Any]:
    """``kcat -P`` on the data file; wall and CPU of the child from wait4, peak RSS from
    its /proc status."""
    cmd = [
        "kcat", "-P", "-b", b.bootstrap, "-t", topic, "-z", codec,
        "-X", "linger.ms=5", "-X", "acks=1", "-l", str(b.data_file),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        # wait4's ru_maxrss would report the forked Python parent's pages, so the
        # peak is kcat's own VmHWM, read every 10 ms until it exits.
        peak = 0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            time.sleep(0.01)
        t1 = time.perf_counter()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"kcat exited with {proc.returncode}: {stderr}")
    out = _figures(b, b.n, t1 - t0, ru.ru_utime + ru.ru_stime)
    out.update(latency_fields(None, None, None))
    out.update(peak_rss_driver=peak, command=" ".join(cmd))
    return out


def pipeline_headers(b: Bench, topic: str, codec: str) -> dict[str, Any]:
    """:func:`pipeline_api` with Kafka headers and the entry id on every message."""
    return pipeline_api(b, topic, codec, headers=True)


def pipeline_api(
    b: Bench, topic: str, codec: str, *, queue_size: int = 50_000, headers: bool = False
) -> dict[str, Any]:
    """The Ray pipeline through ``Shipper.submit_lines`` in blobs of ``b.submission``.

    A first blob of ``b.warm`` lines is submitted and acked before the clock starts
    (it creates the topic's Batcher). The clock stops when ``flush()`` has every
    ack. CPU is the driver plus every process of the local Ray instance (workers,
    raylet, GCS), read from /proc before and after. Latency is per submission, from
    ``submit_lines`` to the last Kafka ack of its entries, weighted by its entries.
    """
    from actors.pipeline import Shipper

    with tempfile.TemporaryDirectory(dir=b.results_dir, prefix="dlq-") as dlq:
        cfg = pipeline_config(b, topic, codec, dlq, queue_size=queue_size, headers=headers)
        shipper = Shipper(cfg)
        try:
            shipper.submit_lines(b.warm_blob).result(timeout=120)
            reset_peak_rss()
            with RssSampler() as rss:
                cpu0 = tree_cpu()
                t0 = time.perf_counter()
                acks = [shipper.submit_lines(blob, first_line=f) for blob, f, _ in b.blobs]
                shipper.flush(timeout=600)
                t1 = time.perf_counter()
                cpu1 = tree_cpu()
            results = [a.result() for a in acks]
        finally:
            report = shipper.close(timeout=60)
    delivered = sum(r.delivered for r in results)
    lat = [(r.latency, r.submitted) for r in results]
    out = _figures(b, b.timed, t1 - t0, cpu1 - cpu0)
    out.update(latency_fields(*(weighted_percentile(lat, q) for q in (0.5, 0.95, 0.99))))
    out.update(
        acked=delivered,
        failed=sum(r.failed for r in results) + sum(r.dlq for r in results),
        drained=report.drained,
        peak_rss_driver=peak_rss_self(),
        peak_rss_actors=rss.peak_actors,
        peak_rss_actors_by_class=dict(rss.peak_by_role),
        peak_rss_ray_tree=rss.peak_tree,
        queue_size=queue_size,
    )
    return out


def cli(b: Bench, topic: str, codec: str) -> dict[str, Any]:
    """``shipper run`` on the data file under :func:`reap_main`.

    Wall time and CPU cover the whole command, including the local Ray instance it
    starts and stops (what a user of the command pays); throughput is the summary's
    own rate (delivered / time since the Shipper was created).
    """
    tag = f"cli-{topic}"
    cfg_file = b.results_dir / f"{tag}.yaml"
    summary = b.results_dir / f"{tag}-summary.json"
    reap = b.results_dir / f"{tag}-reap.json"
    with tempfile.TemporaryDirectory(dir=b.results_dir, prefix="dlq-") as dlq:
        # JSON is YAML: the loader reads it as is.
        cfg_file.write_text(json.dumps(pipeline_config(b, topic, codec, dlq)))
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "reap", str(reap), "--",
            *b.cli_cmd, "run", "--config", str(cfg_file), "--input", str(b.data_file),
            "--summary-json", str(summary), "--progress", "never", "--ray-address", "local",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False)
    try:
        info = json.loads(reap.read_text())
        stats = json.loads(summary.read_text())
    except (OSError, ValueError) as exc:
        tail = proc.stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"shipper run failed (rc={proc.returncode}): {exc}\n{tail}") from exc
    finally:
        for f in (cfg_file, summary, reap):
            f.unlink(missing_ok=True)
    if info["rc"] != 0:
        tail = proc.stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"shipper run exited with {info['rc']}\n{tail}")
    wall = info["wall_s"]
    out = _figures(b, b.n, wall, info["cpu_s"])
    # The table's throughput is the summary's rate; the wall-clock rate stays beside it.
    out["msg_per_s_wall"] = out["msg_per_s"]
    out["msg_per_s"] = stats["rate_per_s"]
    out["payload_mb_per_s"] = round(b.payload_bytes / b.n * stats["rate_per_s"] / 1e6, 3)
    out.update(
        latency_p50_ms=stats["latency_p50_ms"],
        latency_p95_ms=stats["latency_p95_ms"],
        latency_p99_ms=stats["latency_p99_ms"],
        acked=stats["delivered"],
        failed=stats["failed"],
        summary_elapsed_s=stats["elapsed_s"],
        peak_rss_driver=info["peak_rss_cli"],
        peak_rss_actors=info["peak_rss_actors"],
        peak_rss_ray_tree=info["peak_rss_tree"],
        command=" ".join(cmd[5:]),
    )
    return out


# --------------------------------------------------------------------------- scenarios


def _stamped(line: bytes, stamp: float) -> bytes:
    """``line`` (a JSON object) with ``"sent_at": stamp`` as its first key."""
    return b'{"sent_at":%.6f,' % stamp + line[1:]


def _append_latencies(b: Bench, topic: str, expected: int) -> list[float]:
    """Seconds from each entry's ``sent_at`` to the broker's LogAppendTime."""
    import msgspec
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    from shipper.testing import consume_all

    out: list[float] = []
    for m in consume_all(b.client_conf(), topic, expected=expected, timeout=120):
        kind, ts_ms = m.timestamp()
        if kind != TIMESTAMP_LOG_APPEND_TIME:
            continue
        obj = msgspec.json.decode(m.value())
        sent = obj.get("sent_at", obj.get("fields", {}).get("sent_at"))
        if isinstance(sent, int | float):
            out.append(ts_ms / 1000 - sent)
    return out


def _paced(
    b: Bench, rate: int, seconds: float, per: int, send: Callable[[bytes, float], None]
) -> tuple[int, float, list[float]]:
    """Call ``send(blob, stamp)`` with ``per`` stamped lines every ``per / rate`` s for
    ``seconds``, on an absolute schedule (a late tick is sent at once and counted).
    Returns the number of ticks, the start (``perf_counter``) and the lateness of
    late ticks."""
    ticks = int(seconds * rate / per)
    interval = per / rate
    lines, n = b.lines, len(b.lines)
    late: list[float] = []
    t0 = time.perf_counter()
    for k in range(ticks):
        target = t0 + k * interval
        now = time.perf_counter()
        if target > now:
            time.sleep(target - now)
        else:
            late.append(now - target)
        stamp = time.time()
        base = k * per
        send(b"\n".join(_stamped(lines[(base + j) % n], stamp) for j in range(per)), stamp)
    return ticks, t0, late


def _latency_report(
    b: Bench,
    topic: str,
    entries: int,
    warm: int,
    seconds: float,
    late: list[float],
    p50_p95_p99: Sequence[float | None],
    **extra: Any,
) -> dict[str, Any]:
    """A latency run's figures, plus the LogAppendTime cross-check read back from
    ``topic`` (``entries`` paced after ``warm`` warm-up entries)."""
    append = _append_latencies(b, topic, entries + warm)
    out: dict[str, Any] = {
        "entries": entries,
        "seconds": round(seconds, 3),
        "msg_per_s": round(entries / seconds, 1),
        **extra,
        "late_submissions": len(late),
        "max_lateness_ms": round(max(late, default=0.0) * 1000, 3),
    }
    out.update(latency_fields(*p50_p95_p99))
    out.update(
        {
            f"append_{k}": v
            for k, v in latency_fields(*(percentile(append, q) for q in (0.5, 0.95, 0.99))).items()
        }
    )
    return out


def latency_pipeline(
    b: Bench, topic: str, *, rate: int = 10_000, seconds: float = 10.0, per: int = 100
) -> dict[str, Any]:
    """The low-latency preset fed ``per`` entries every ``per / rate`` seconds.

    Primary figure: per submission, from the tick's time stamp (taken before the
    blob is built, like the floor's) to the Kafka ack of its last entry (the ack time
    the Producer records), weighted by entries; every entry of a submission is
    submitted at the same instant, so this is an upper bound for each. It includes
    any wait in ``submit_lines`` for a free in-flight slot. Cross-check: per entry,
    the ``sent_at`` stamped into it against the broker's LogAppendTime (the topic is
    created with that timestamp type; 1 ms resolution; the broker appends just before
    it acks).
    """
    from actors.pipeline import Shipper

    with tempfile.TemporaryDirectory(dir=b.results_dir, prefix="dlq-") as dlq:
        shipper = Shipper(pipeline_config(b, topic, None, dlq, preset="low-latency"))
        try:
            shipper.submit_lines(b"\n".join(b.lines[:per])).result(timeout=120)
            acks = []
            stamps: list[float] = []

            def send(blob: bytes, stamp: float) -> None:
                stamps.append(stamp)
                acks.append(shipper.submit_lines(blob))

            ticks, t0, late = _paced(b, rate, seconds, per, send)
            shipper.flush(timeout=120)
            t1 = time.perf_counter()
            results = [a.result() for a in acks]
        finally:
            shipper.close(timeout=60)
    # The Shipper's latency runs from its own submit time; add the time from the
    # tick's stamp to it (building the blob, waiting for an in-flight slot).
    lat = [
        (r.latency + r.submitted_at - s, r.submitted) for r, s in zip(results, stamps, strict=True)
    ]
    return _latency_report(
        b,
        topic,
        ticks * per,
        per,
        t1 - t0,
        late,
        [weighted_percentile(lat, q) for q in (0.5, 0.95, 0.99)],
        delivered=sum(r.delivered for r in results),
    )


def latency_bare(
    b: Bench, topic: str, *, rate: int = 10_000, seconds: float = 10.0, per: int = 100
) -> dict[str, Any]:
    """The bare loop at the same pacing, with the low-latency preset's settings.

    Primary figure: librdkafka's produce-to-ack ``latency()`` of every message; the
    same LogAppendTime cross-check as :func:`latency_pipeline`. Between ticks the
    loop waits in ``poll()``, so delivery reports are served at once.
    """
    from confluent_kafka import Producer

    conf = producer_settings(pipeline_config(b, topic, None, "/nonexistent", preset="low-latency"))
    producer = Producer(conf)
    lat: list[float] = []
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            lat.append(msg.latency())
        else:
            errors.append(str(err))

    lines, n = b.lines, len(b.lines)
    for line in lines[:per]:
        producer.produce(topic, line, on_delivery=on_delivery)
    producer.flush(30)
    lat.clear()
    ticks = int(seconds * rate / per)
    interval = per / rate
    late: list[float] = []
    t0 = time.perf_counter()
    for k in range(ticks):
        target = t0 + k * interval
        while (wait := target - time.perf_counter()) > 0:
            producer.poll(wait)
        now = time.perf_counter()
        if now - target > 0.001:
            late.append(now - target)
        stamp = time.time()
        base = k * per
        for j in range(per):
            producer.produce(topic, _stamped(lines[(base + j) % n], stamp), on_delivery=on_delivery)
        producer.poll(0)
    producer.flush(60)
    t1 = time.perf_counter()
    return _latency_report(
        b,
        topic,
        ticks * per,
        per,
        t1 - t0,
        late,
        [percentile(lat, q) for q in (0.5, 0.95, 0.99)],
        delivered=len(lat),
        failed=len(errors),
        librdkafka=conf,
    )


def _floor_actors() -> tuple[Any, Any]:
    """The two actor classes of :func:`latency_floor` (made remote on first use)."""
    import asyncio
    import threading

    import ray

    class Hop:
        """Passes the blob on to the next actor and returns its answer; no other work."""

        def __init__(self, target: Any) -> None:
            self.target = target

        async def send(self, blob: bytes, stamp: float) -> tuple[float, int, int]:
            # By keyword: a handle to a class defined in a function loses its method
            # signatures when Ray sends it to another process (they read as **kwargs).
            return await self.target.send.remote(blob=blob, stamp=stamp)  # type: ignore[no-any-return]

    class FloorProducer:
        """One confluent-kafka Producer with a poll thread: produce_batch of the blob's
        lines, answer with the time of the last delivery report after ``stamp``."""

        def __init__(self, conf: dict[str, Any], topic: str) -> None:
            from confluent_kafka import Producer

            self.producer = Producer(conf)
            self.topic = topic
            self.stop = threading.Event()
            threading.Thread(target=self._poll, daemon=True).start()

        def _poll(self) -> None:
            while not self.stop.is_set():
                self.producer.poll(0.02)

        async def send(self, blob: bytes, stamp: float) -> tuple[float, int, int]:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            msgs = [{"value": v} for v in blob.split(b"\n")]
            lock = threading.Lock()
            state = {"left": len(msgs), "failed": 0, "last": 0.0}

            def finish() -> None:
                if not done.done():
                    done.set_result(None)

            def settle(n: int, failed: int) -> None:  # poll thread or this one
                with lock:
                    state["left"] -= n
                    state["failed"] += failed
                    if state["left"] == 0:
                        state["last"] = time.time()
                        loop.call_soon_threadsafe(finish)

            def on_delivery(err: Any, _msg: Any) -> None:
                settle(1, int(err is not None))

            queued = self.producer.produce_batch(self.topic, msgs, on_delivery=on_delivery)
            if queued < len(msgs):
                # Refused at once (full queue, too large): no delivery report comes.
                settle(len(msgs) - queued, len(msgs) - queued)
            await done
            failed = int(state["failed"])
            return state["last"] - stamp, len(msgs) - failed, failed

        def close(self) -> int:
            left = self.producer.flush(10)
            self.stop.set()
            return int(left)

    opts = {"num_cpus": 0, "max_concurrency": 256}
    return ray.remote(Hop).options(**opts), ray.remote(FloorProducer).options(**opts)


def latency_floor(
    b: Bench,
    topic: str,
    *,
    rate: int = 10_000,
    seconds: float = 10.0,
    per: int = 100,
    calls: int = 3,
) -> dict[str, Any]:
    """The floor under the pipeline's shape: the same paced submissions through three
    Ray actor calls that do nothing but pass the blob on (driver -> hop -> hop ->
    producer, as driver -> Router -> Batcher -> Producer), the last producing it with
    the low-latency preset's librdkafka settings.

    Figures as :func:`latency_pipeline`: per submission, submit to the last Kafka ack.
    Compared with the pipeline's figure it shows what the shipper's own work adds to
    its shape; compared with the bare loop's (a per-message figure, not per
    submission) roughly what the Ray calls cost on this machine. Percentiles do not
    subtract, so these are comparisons, not exact differences. ``calls`` changes the
    number of Ray calls (at least 1: the driver calling the producer actor directly).
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    import ray

    conf = producer_settings(pipeline_config(b, topic, None, "/nonexistent", preset="low-latency"))
    hop_cls, producer_cls = _floor_actors()
    actors: list[Any] = []
    try:
        producer = producer_cls.remote(conf, topic)
        actors.append(producer)
        for _ in range(calls - 1):
            actors.append(hop_cls.remote(actors[-1]))
        first = actors[-1]
        ray.get(first.send.remote(b"\n".join(b.lines[:per]), time.time()), timeout=120)
        refs: list[Any] = []
        ticks, t0, late = _paced(
            b, rate, seconds, per, lambda blob, stamp: refs.append(first.send.remote(blob, stamp))
        )
        results = ray.get(refs, timeout=120)
        t1 = time.perf_counter()
        unflushed = ray.get(producer.close.remote(), timeout=30)
    finally:
        for h in actors:
            with contextlib.suppress(Exception):
                ray.kill(h)
    lat = [(r[0], per) for r in results]
    return _latency_report(
        b,
        topic,
        ticks * per,
        per,
        t1 - t0,
        late,
        [weighted_percentile(lat, q) for q in (0.5, 0.95, 0.99)],
        delivered=sum(r[1] for r in results),
        failed=sum(r[2] for r in results) + unflushed,
        ray_calls=calls,
    )


# --------------------------------------------------------------------------- child wrapper


def reap_main(argv: list[str]) -> int:
    """``reap OUT.json -- CMD...``: run CMD, account for its whole process tree.

    This process becomes a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so
    every descendant of CMD, including daemons that outlive it (the Ray instance the
    CLI starts), is reaped here and lands in ``RUSAGE_CHILDREN``. Ray workers are
    reaped by the kernel without accounting (the raylet ignores SIGCHLD), so each
    descendant's own CPU is also sampled every 100 ms; ``cpu_s`` is the larger of the
    two totals (both are in the output). RSS of the tree is sampled at the same time.
    After CMD exits, leftovers get 30 s to go, then SIGTERM, then SIGKILL (by pid;
    they are all ours).
    """
    import ctypes
    import resource
    import signal

    out_path, sep, cmd = argv[0], argv[1], argv[2:]
    if sep != "--" or not cmd:
        print("usage: contenders.py reap OUT.json -- CMD...", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    subreaper = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    me = os.getpid()
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    rc: int | None = None
    t_exit = 0.0
    peak_tree = peak_cli = peak_actors = 0
    last_sample = 0.0
    killed: list[int] = []
    seen_cpu: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        now = time.perf_counter()
        if pid == child.pid:
            rc = os.waitstatus_to_exitcode(status)
            child.returncode = rc
            t_exit = now
            continue
        if pid:
            continue
        if now - last_sample >= 0.1:
            last_sample = now
            tree = actors = 0
            for p in descendants(me):
                seen_cpu[p] = max(seen_cpu.get(p, 0), _cpu_ticks(p, False))
                rss = rss_bytes(p)
                tree += rss
                role = ray_role(cmdline(p))
                if role is not None and role not in RssSampler.AGENTS:
                    actors += rss
            peak_tree = max(peak_tree, tree)
            peak_actors = max(peak_actors, actors)
            if rc is None:
                peak_cli = max(peak_cli, rss_bytes(child.pid))
        if rc is not None and now - t_exit > 30:
            sig = signal.SIGKILL if now - t_exit > 40 else signal.SIGTERM
            for p in descendants(me):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
                    killed.append(p)
        time.sleep(0.02)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    info = {
        "rc": rc,
        "wall_s": round(t_exit - t0, 4),
        "tree_wall_s": round(time.perf_counter() - t0, 4),
        "cpu_s": round(max(ru.ru_utime + ru.ru_stime, sum(seen_cpu.values()) / CLK_TCK), 3),
        "cpu_s_rusage": round(ru.ru_utime + ru.ru_stime, 3),
        "cpu_s_sampled": round(sum(seen_cpu.values()) / CLK_TCK, 3),
        "subreaper": subreaper,
        "peak_rss_tree": peak_tree,
        "peak_rss_cli": peak_cli,
        "peak_rss_actors": peak_actors,
        "killed_leftovers": sorted(set(killed)),
    }
    Path(out_path).write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "reap":
        raise SystemExit(reap_main(sys.argv[2:]))
    print("usage: python bench/contenders.py reap OUT.json -- CMD...", file=sys.stderr)
    raise SystemExit(2)
