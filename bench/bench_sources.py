"""The sources against the API pipeline and kcat, in one run, on the same data and broker.

N datagen lines (~300 bytes) with JSON validation, level routing (three topics),
hash partitioning on ``tenant_id`` and snappy:

- **api**: ``Shipper.submit_lines`` in blobs of 5,000 from this process, timed from the
  first submit to the last ack, without a ``flush`` inside the clock (the driver on the
  data path; its last partial batches wait out ``batch_timeout`` as a tailed file's
  do); **api + label** the same
  with the ``file`` label the file source adds to every entry (like for like);
- **file**: ``shipper run --config`` (service mode) tails a file that holds the
  warm-up lines; once they are in Kafka and 3 s more have passed, the N lines are appended, in
  writes of 5,000 lines (the API's blob size) as fast as the file takes them.
  Reported: the time from the command's start to the first entry in Kafka, and the
  rate from the append to the last entry in Kafka;
- **http**: ``POST /v1/logs`` from a second process (4 threads, 5,000 lines per
  request) to the HTTP intake, timed by the client from the first request to the last
  answer;
- **kcat**: the same file produced by kcat (no validation, no routing: a reference).

For api, file and http a thread also reads the topics' message count every 50 ms (one
ListOffsets request through an open admin client). Two rates come from it, on the same
clock for every path: *in Kafka*, from the first line in to the look that saw the last
one in Kafka (the whole burst, start and end included); and *steady*, between the
moments 10 % and 90 % of the lines were in Kafka (without the start, where a file
source notices an append, and the end, where the last partial batches wait out
``batch_timeout``).

Before any clock starts, one line per routed topic has gone through, so every topic's
Batcher is up (a Batcher starts with its topic's first entry: a process start, not the
pipeline's rate). Each contender runs in a fresh process, ``--rounds`` times (3 by
default) in an order that turns each round; the figures are medians, the ratios taken
within a round.
Every topic is read back and must hold N. Results go to ``--json``.

    .venv/bin/python bench/bench_sources.py [--entries 200000] [--rounds 3]

Needs the local broker (scripts/kafka-local up) and kcat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datagen import generate

from actors import local_ray

local_ray.prepare()

from actors.pipeline import Shipper  # noqa: E402
from shipper.testing import LocalKafka, create_topic, delete_topic  # noqa: E402

SHIPPER = str(Path(sys.executable).with_name("shipper"))


class Offsets:
    """Messages in some fresh topics (nothing deleted: the count is the sum of the
    latest offsets), asked in one ListOffsets request per look through one admin
    client kept open: the bench looks every 100 ms on the cores it measures, so a
    look must cost little (one watermark request per partition cost four times the
    CPU)."""

    def __init__(self, conf: dict[str, Any], topics: list[str]) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec

        self.admin = AdminClient({**conf, "log_level": 4})
        parts: list[Any] = []
        for t in topics:
            md = self.admin.list_topics(t, timeout=10).topics[t]
            parts += [TopicPartition(t, p) for p in md.partitions]
        self.request = {p: OffsetSpec.latest() for p in parts}

    def total(self) -> int:
        from confluent_kafka import KafkaException

        for attempt in range(20):
            try:
                futures = self.admin.list_offsets(self.request, request_timeout=10)
                return sum(f.result().offset for f in futures.values())
            except KafkaException:  # e.g. a leader moving just after a broker restart
                if attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


def config(kafka: LocalKafka, base: str, dlq: str) -> dict[str, Any]:
    return {
        "sinks": {
            "kafka": {
                "enabled": True,
                "brokers": [kafka.bootstrap],
                "topic": base,
                "compression": "snappy",
                "batch_size": 1000,
                "batch_timeout": "200ms",
                "partitioning": {"enabled": True, "strategy": "hash", "key_field": "tenant_id"},
                "routing": {
                    "enabled": True,
                    "high_priority_topic": f"{base}-high",
                    "low_priority_topic": f"{base}-low",
                },
                "dlq_config": {"path": dlq},
            }
        },
        "metrics": {"enabled": False},
    }


class Sampler:
    """The topics' message count every 50 ms in a thread, as (monotonic time, count),
    so every path is timed the same way: by what is in Kafka."""

    def __init__(self, topics: Topics) -> None:
        import threading

        self.topics = topics
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.topics.count()))
            self._stop.wait(0.05)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), self.topics.count()))
        return self.samples


def crossing(samples: list[tuple[float, int]], count: float) -> float | None:
    """When the count reached ``count`` (linear between the two samples around it)."""
    prev = None
    for t, c in samples:
        if c >= count:
            if prev is None or c == prev[1]:
                return t
            t0, c0 = prev
            return t0 + (t - t0) * (count - c0) / (c - c0)
        prev = (t, c)
    return None


# One line per topic of the level routing: every topic's Batcher is up before a
# clock starts (a Batcher is created at its topic's first entry, which costs a process
# start, about 0.5 s here: a start-up cost, not the pipeline's rate).
WARM_UP = b"\n".join(
    b'{"message":"warm-up","level":"%s","fields":{"tenant_id":"t"}}' % level
    for level in (b"info", b"error", b"debug")
)
WARMED = 3


def steady_rate(samples: list[tuple[float, int]], base: int, n: int, t0: float) -> dict[str, Any]:
    """The rate between 10 % and 90 % of the ``n`` lines in Kafka (start-up and the
    last partial batches left out), the time to the first of them, and to the last."""
    # The first entry: the first look that saw it (not interpolated: at this
    # resolution a line between two looks would put it before the clock started).
    first = next((t for t, c in samples if c > base), None)
    t10 = crossing(samples, base + 0.1 * n)
    t90 = crossing(samples, base + 0.9 * n)
    last = crossing(samples, base + n)
    out: dict[str, Any] = {}
    if t10 is not None and t90 is not None and t90 > t10:
        out["steady_lines_per_s"] = round(0.8 * n / (t90 - t10))
    if first is not None:
        out["to_first_s"] = round(first - t0, 3)
    if t10 is not None and t90 is not None:
        out["to_10_90_s"] = [round(t10 - t0, 3), round(t90 - t0, 3)]
    if last is not None:
        out["to_last_s"] = round(last - t0, 3)
        if last > t0:
            # The whole burst on the same clock for every path: from its first line in
            # to the moment the Sampler saw the last one in Kafka.
            out["in_kafka_lines_per_s"] = round(n / (last - t0))
    return out


class Topics:
    def __init__(self, kafka: LocalKafka, name: str) -> None:
        self.admin = kafka.client_config()
        self.base = f"bench-{name}-{os.urandom(4).hex()}"
        self.names = [self.base, f"{self.base}-high", f"{self.base}-low"]
        for t in self.names:
            create_topic(self.admin, t, partitions=6)

        self.offsets = Offsets(self.admin, self.names)

    def count(self) -> int:
        return self.offsets.total()

    def drop(self) -> None:
        self.offsets.close()
        for t in self.names:
            delete_topic(self.admin, t)


def api(
    kafka: LocalKafka, values: list[bytes], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    topics = Topics(kafka, "api")
    try:
        with tempfile.TemporaryDirectory() as dlq, Shipper(config(kafka, topics.base, dlq)) as s:
            s.submit_lines(WARM_UP).result(60)
            blobs = [b"\n".join(values[i : i + 5000]) for i in range(0, len(values), 5000)]
            sampler = Sampler(topics)
            t0 = time.monotonic()
            acks = [s.submit_lines(b, labels=labels) for b in blobs]
            # Timed to the last ack, as a client of the API waits: no flush inside the
            # clock (a tailed file has nobody to call it, so its last partial batches
            # wait out batch_timeout; here they do too).
            delivered = sum(a.result(600).delivered for a in acks)
            took = time.monotonic() - t0
            samples = sampler.stop()
            s.flush(timeout=60)
        held = topics.count() - WARMED
    finally:
        topics.drop()
    return {"lines_per_s": round(len(values) / took), "seconds": round(took, 3),
            **steady_rate(samples, WARMED, len(values), t0),
            "delivered": delivered, "topics_hold": held}  # fmt: skip


def java_log(values: list[bytes]) -> list[bytes]:
    """The entries as a Java service writes them: 20 % stack traces of 10-40 lines
    (text), the rest one JSON line each."""
    out = []
    for i, v in enumerate(values):
        if i % 5:
            out.append(v + b"\n")
            continue
        frames = 10 + (i * 7) % 31
        out.append(
            b"2026-01-01 10:00:00 ERROR request %d failed\n" % i
            + b"java.lang.IllegalStateException: boom\n"
            + b"".join(
                b"\tat com.example.Handler.step%d(Handler.java:%d)\n" % (k, k)
                for k in range(frames - 1)
            )
        )
    return out


def cri_log(values: list[bytes]) -> list[bytes]:
    """The entries as containerd writes them: a CRI prefix each, 10 % split in two
    partial lines."""
    ts = b"2026-01-01T00:00:00.123456789Z stdout "
    out = []
    for i, v in enumerate(values):
        if i % 10:
            out.append(ts + b"F " + v + b"\n")
        else:
            half = len(v) // 2
            out.append(ts + b"P " + v[:half] + b"\n" + ts + b"F " + v[half:] + b"\n")
    return out


def file_source(
    kafka: LocalKafka, values: list[bytes], work: Path, variant: str = "plain"
) -> dict[str, Any]:
    """The file source; ``variant`` java (multiline: java on java_log) or cri (format:
    cri on cri_log) ships the same number of entries from more lines."""
    topics = Topics(kafka, "file")
    logs = work / "logs"
    logs.mkdir()
    log_file = logs / "app.log"
    group: dict[str, Any] = {"paths": [str(logs / "*.log")]}
    entries = [v + b"\n" for v in values]
    warm = WARM_UP + b"\n"
    if variant == "java":
        entries = java_log(values)
        group["multiline"] = "java"
    elif variant == "cri":
        entries = cri_log(values)
        warm = b"".join(b"2026-01-01T00:00:00Z stdout F " + w + b"\n" for w in WARM_UP.split(b"\n"))
        group["format"] = "cri"
    log_file.write_bytes(warm)
    cfg = config(kafka, topics.base, str(work / "dlq"))
    cfg["sources"] = {
        "files": [group],
        "checkpoints": {"path": str(work / "cp")},
    }
    if os.environ.get("BENCH_READ_BYTES"):  # to compare sizes; else the default
        cfg["sources"]["tail"] = {"read_bytes": int(os.environ["BENCH_READ_BYTES"])}
    path = work / "file.yaml"
    path.write_text(json.dumps(cfg))
    n = len(values)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [SHIPPER, "run", "--config", str(path), "--summary-json", str(work / "file.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def wait_for(count: int, deadline: float, sampler: Sampler | None = None) -> float | None:
        # With a sampler running, its looks are read rather than adding polls of our own
        # on the cores being measured.
        while time.monotonic() < deadline:
            if sampler is not None:
                if sampler.samples and sampler.samples[-1][1] >= count:
                    return sampler.samples[-1][0]
            elif topics.count() >= count:
                return time.monotonic()
            time.sleep(0.05 if sampler is not None else 0.1)
        return None

    try:
        first = last = appended = None
        samples: list[tuple[float, int]] = []
        first = wait_for(1, t0 + 300)
        if first is not None and wait_for(WARMED, first + 60) is None:
            first = None
        if first is not None:
            # Steady state: the lines are appended once the service runs and Ray's
            # start-up work (worker start, agents) has settled, as a tailed log grows
            # (BENCH_SETTLE_SECONDS: the smoke run in the test suite measures nothing).
            time.sleep(float(os.environ.get("BENCH_SETTLE_SECONDS", "3")))
            # Appended in writes of 5,000 lines, joined off the clock: the file's
            # counterpart of the API's 5,000-line blobs (a log grows write by write; one
            # 64 MB write would hold every line back until it ended).
            writes = [b"".join(entries[i : i + 5000]) for i in range(0, n, 5000)]
            sampler = Sampler(topics)
            with log_file.open("ab", buffering=0) as fh:
                appended = time.monotonic()
                for w in writes:
                    fh.write(w)
            last = wait_for(n + WARMED, appended + 600, sampler)
            samples = sampler.stop()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
        held = topics.count() - WARMED
    finally:
        if proc.poll() is None:
            proc.kill()
        topics.drop()
    if first is None or last is None or appended is None:
        raise RuntimeError(f"the file source shipped {held} of {n}: {err.decode()[-2000:]}")
    took = last - appended
    lines = sum(e.count(b"\n") for e in entries)
    return {
        "lines_per_s": round(n / took) if took > 0 else None,
        "file_lines": lines,
        "file_lines_per_s": round(lines / took) if took > 0 else None,
        "start_to_first_entry_s": round(first - t0, 3),
        "append_to_last_s": round(took, 3),
        **steady_rate(samples, WARMED, n, appended),
        "exit_code": proc.returncode,
        "topics_hold": held,
    }


CLIENT = r"""
import json, sys, time, urllib.request, urllib.error, concurrent.futures as cf
url, path, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(path, "rb").read().split(b"\n")[:-1]
bodies = [b"\n".join(lines[i:i + per]) for i in range(0, len(lines), per)]
def send(body):
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as r:
                return json.loads(r.read())["accepted"]
        except urllib.error.HTTPError as err:
            if err.code not in (429, 503):
                raise
            time.sleep(0.05)
t0 = time.monotonic()
with cf.ThreadPoolExecutor(4) as pool:
    accepted = sum(pool.map(send, bodies))
print(json.dumps({"accepted": accepted, "seconds": time.monotonic() - t0}))
"""


def http_source(kafka: LocalKafka, values: list[bytes], work: Path) -> dict[str, Any]:
    topics = Topics(kafka, "http")
    data = work / "http.jsonl"
    data.write_bytes(b"\n".join(values) + b"\n")
    cfg = config(kafka, topics.base, str(work / "http-dlq"))
    cfg["sources"] = {"http": {"enabled": True, "port": 0}}
    try:
        with Shipper(cfg) as s:
            s.start_sources()
            assert s.http_url is not None
            s.submit_lines(WARM_UP).result(60)  # the Batchers the intake feeds too
            sampler = Sampler(topics)
            t0 = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-c", CLIENT, s.http_url, str(data), "5000"],
                capture_output=True,
                timeout=900,
                check=True,
            )
            samples = sampler.stop()
        res = json.loads(out.stdout)
        held = topics.count() - WARMED
    finally:
        topics.drop()
    return {"lines_per_s": round(res["accepted"] / res["seconds"]),
            "seconds": round(res["seconds"], 3), "accepted": res["accepted"],
            **steady_rate(samples, WARMED, len(values), t0),
            "topics_hold": held}  # fmt: skip


def kcat(kafka: LocalKafka, values: list[bytes], work: Path) -> dict[str, Any]:
    exe = shutil.which("kcat") or shutil.which("kafkacat")
    if exe is None:
        return {"error": "kcat not installed (scripts/install-test-tools)"}
    topics = Topics(kafka, "kcat")
    data = work / "kcat.jsonl"
    data.write_bytes(b"\n".join(values) + b"\n")
    try:
        t0 = time.monotonic()
        subprocess.run(
            [exe, "-P", "-b", kafka.bootstrap, "-t", topics.base, "-z", "snappy", "-l",
             "-X", "linger.ms=5", "-X", "batch.num.messages=1000", str(data)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        took = time.monotonic() - t0
        held = topics.count()
    finally:
        topics.drop()
    return {"lines_per_s": round(len(values) / took), "seconds": round(took, 3),
            "topics_hold": held}  # fmt: skip


CONTENDERS = ("file", "file_java", "file_cri", "api", "api_labels", "http")


def one(name: str, entries: int, work: Path) -> dict[str, Any]:
    """Run one contender in this process (a fresh one: no Ray left from another)."""
    kafka = LocalKafka.ensure_up()
    values = generate(entries)
    if name == "file":
        return file_source(kafka, values, work)
    if name == "file_java":
        return file_source(kafka, values, work, "java")
    if name == "file_cri":
        return file_source(kafka, values, work, "cri")
    if name == "api":
        return api(kafka, values)
    if name == "api_labels":
        # The label the file source adds (its path): the like-for-like figure for what
        # the file source does on top of the API pipeline's work.
        return api(kafka, values, {"file": str(work / "logs" / "app.log")})
    if name == "http":
        return http_source(kafka, values, work)
    raise ValueError(name)


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every contender")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    ap.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)} (default: all)",
    )
    ap.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.entries, Path(args.work))))
        return 0
    chosen = tuple(c for c in CONTENDERS if c in args.contenders.split(","))
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown or not chosen:
        ap.error(f"--contenders: unknown {sorted(unknown)}; use some of {', '.join(CONTENDERS)}")
    kafka = LocalKafka.ensure_up()
    n = args.entries
    results: dict[str, Any] = {"entries": n, "rounds": [], "contenders": list(chosen)}
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        work = Path(tmp)
        results["kcat"] = kcat(kafka, generate(n), work)
        for r in range(args.rounds):
            # Each contender in a process of its own (an idle Ray left by one would take
            # some of the two cores from the next), in an order that turns each round.
            turn = r % len(chosen)
            order = chosen[turn:] + chosen[:turn]
            rnd: dict[str, Any] = {}
            for name in order:
                sub = work / f"r{r}-{name}"
                sub.mkdir()
                out = subprocess.run(
                    [sys.executable, __file__, "--one", name, "--entries", str(n),
                     "--work", str(sub)],
                    capture_output=True, text=True, timeout=1800,
                )  # fmt: skip
                if out.returncode != 0:
                    # Keep what the finished runs measured, then stop.
                    results["failed"] = {"round": r + 1, "contender": name,
                                         "stderr": out.stderr[-3000:]}  # fmt: skip
                    if args.json:
                        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                        Path(args.json).write_text(json.dumps(results, indent=2))
                    raise RuntimeError(f"{name} failed: {out.stderr[-3000:]}")
                rnd[name] = json.loads(out.stdout.strip().splitlines()[-1])
                got = rnd[name]
                print(f"  round {r + 1} {name:<10} {got['lines_per_s']:>8,} lines/s "
                      f"(in Kafka {got.get('in_kafka_lines_per_s', 0):,}, "
                      f"steady {got.get('steady_lines_per_s', 0):,})", flush=True)  # fmt: skip
            results["rounds"].append(rnd)
    rounds = results["rounds"]
    ok = results["kcat"].get("topics_hold", n) == n and all(
        rnd[k].get("topics_hold") == n for rnd in rounds for k in chosen
    )

    def figures(name: str, key: str) -> list[float]:
        return [rnd[name][key] for rnd in rounds if rnd[name].get(key) is not None]

    def ratios(name: str, base: str, key: str) -> list[float]:
        return [
            rnd[name][key] / rnd[base][key]
            for rnd in rounds
            if rnd[name].get(key) and rnd[base].get(key)
        ]

    summary: dict[str, Any] = {}
    for name in chosen:
        whole, steady = figures(name, "lines_per_s"), figures(name, "steady_lines_per_s")
        in_kafka = figures(name, "in_kafka_lines_per_s")
        summary[name] = {
            "lines_per_s": round(median(whole)),
            "lines_per_s_range": [min(whole), max(whole)],
            "in_kafka_lines_per_s": round(median(in_kafka)) if in_kafka else None,
            "steady_lines_per_s": round(median(steady)) if steady else None,
        }
    for name, base in (
        ("file", "api"),
        ("file", "api_labels"),
        ("http", "api"),
        ("file_java", "file"),
        ("file_cri", "file"),
    ):
        for key, label in (
            ("lines_per_s", "whole"),
            ("in_kafka_lines_per_s", "in_kafka"),
            ("steady_lines_per_s", "steady"),
        ):
            rs = ratios(name, base, key) if {name, base} <= set(chosen) else []
            if rs:
                summary[name][f"{label}_over_{base}"] = {
                    "median": round(median(rs), 2), "min": round(min(rs), 2),
                    "max": round(max(rs), 2)}  # fmt: skip
    starts = figures("file", "start_to_first_entry_s") if "file" in chosen else []
    firsts = figures("file", "to_first_s") if "file" in chosen else []
    starts, firsts = starts or [0.0], firsts or [0.0]
    if "file" in chosen:
        summary["file"]["start_to_first_entry_s"] = [min(starts), max(starts)]
        summary["file"]["append_to_first_entry_s"] = [min(firsts), max(firsts)]
    results["summary"] = summary

    def rate(name: str) -> str:
        f = summary[name]
        lo, hi = f["lines_per_s_range"]
        return (f"{f['lines_per_s']:>8,} lines/s whole ({lo:,}-{hi:,}), "
                f"{f['in_kafka_lines_per_s'] or 0:>8,} in Kafka, "
                f"{f['steady_lines_per_s'] or 0:>8,} steady")  # fmt: skip

    def fl(name: str) -> str:
        got = figures(name, "file_lines_per_s")
        return f"{round(median(got)):,}" if got else "-"

    def ratio(name: str, base: str) -> str:
        out = []
        for label in ("whole", "in_kafka", "steady"):
            r = summary[name].get(f"{label}_over_{base}")
            if r:
                out.append(f"{label} x{r['median']} ({r['min']}-{r['max']})")
        return ", ".join(out)

    print(f"{n:,} lines, validation + level routing + hash keys + snappy; medians of "
          f"{len(rounds)} rounds, each contender in a fresh process")  # fmt: skip
    print("(whole: first line in to last ack, or last line seen in Kafka for the file;")
    print(" in Kafka: the same, timed for every path by the 50 ms looks at the topics;")
    print(" steady: the rate between 10 % and 90 % of the lines in Kafka)")
    lines: dict[str, Any] = {
        "api": lambda: [f"  api pipeline   {rate('api')}"],
        "api_labels": lambda: [f"  api + label    {rate('api_labels')} (the file label)"],
        "file": lambda: [
            f"  file source    {rate('file')}",
            f"                 against api: {ratio('file', 'api')}",
            f"                 against api + label: {ratio('file', 'api_labels')}",
            f"                 start to first entry {min(starts):.1f}-{max(starts):.1f} s, "
            f"append to first entry {min(firsts):.2f}-{max(firsts):.2f} s",
        ],
        "file_java": lambda: [
            f"  file, java     {rate('file_java')} (entries: 20 % traces of 10-40 lines)",
            f"                 against file: {ratio('file_java', 'file')}; file lines/s: "
            f"{fl('file_java')} against {fl('file')}",
        ],
        "file_cri": lambda: [
            f"  file, cri      {rate('file_cri')} (10 % partial lines joined)",
            f"                 against file: {ratio('file_cri', 'file')}; file lines/s: "
            f"{fl('file_cri')} against {fl('file')}",
        ],
        "http": lambda: [
            f"  http intake    {rate('http')}",
            f"                 against api: {ratio('http', 'api')}",
        ],
    }
    for name in CONTENDERS:
        if name in chosen:
            print("\n".join(lines[name]()))
    kc = results["kcat"]
    if "error" in kc:
        print(f"  kcat           {kc['error']}")
    else:
        print(f"  kcat           {kc['lines_per_s']:>8,} lines/s (no validation, one topic)")
    print(f"  every topic holds {n:,}: {'yes' if ok else 'NO'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
