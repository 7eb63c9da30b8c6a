"""The benchmark suite: the shipper against a bare producer loop and kcat, per codec.

One invocation generates the data once (``datagen.generate(N, seed)``, about 300
bytes of JSON per entry), then runs, in turn and for each compression codec, four
contenders on the same data, broker and machine, each on a fresh 6-partition topic
that it creates and deletes:

1. ``bare``: a confluent-kafka Producer in a tight loop, with the librdkafka
   settings the shipper derives from the same config (the reference);
2. ``kcat``: ``kcat -P -l FILE`` (the C ceiling; no latency figure);
3. ``pipeline``: the Ray pipeline through ``Shipper.submit_lines`` (5,000-line blobs);
4. ``cli``: the ``shipper run`` command on the same file, as a child process.

Runs are interleaved (run 1 of every codec and contender, then run 2, ...), so a
noisy moment hits all contenders alike; each figure is the median of ``--runs``.
After every run the topic must hold exactly N messages (sum of high watermarks).
Then two scenarios: latency at a steady 10,000 msg/s with the low-latency preset
(pipeline, the floor of three empty Ray actor calls in front of a producer, and the
bare loop), and peak memory with queue_size 10,000 and 100,000.

Prints tables shaped like the spec's compression table plus the pipeline / bare
loop ratio per codec, and writes raw and median figures as JSON
(``bench/results/latest.json`` by default, and a timestamped copy).

Usage::

    python bench/run.py [--quick] [--codecs none,snappy,lz4,gzip,zstd] [--runs 3]
                        [--entries N] [--json OUT] [--contenders bare,kcat,pipeline,cli]
                        [--no-latency] [--no-memory]

Needs the local broker (``scripts/kafka-local up``) and kcat. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import contenders as c  # noqa: E402
from datagen import generate  # noqa: E402

CODECS = ("none", "snappy", "lz4", "gzip", "zstd")
CONTENDERS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "bare": ("bare loop (confluent-kafka)", c.bare_loop),
    "kcat": ("kcat -P (C ceiling)", c.kcat),
    "pipeline": ("pipeline (Python API, Ray actors)", c.pipeline_api),
    "headers": ("pipeline with headers and entry id", c.pipeline_headers),
    "cli": ("CLI (shipper run)", c.cli),
}
PARTITIONS = 6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


def cli_command() -> tuple[list[str], str]:
    """The command that runs ``shipper run`` (the installed entry point)."""
    exe = Path(sys.executable).with_name("shipper")
    probe = subprocess.run([str(exe), "run", "--help"], capture_output=True, check=False)
    if probe.returncode != 0:
        raise SystemExit(f"{exe} run --help failed: is the package installed in this venv?")
    return [str(exe)], f"{exe} run"


def broker_log_dir(kafka: Any) -> Path | None:
    """The local broker's data directory (from its server.properties), if readable."""
    home = kafka.info.get("home")
    if not home:
        return None
    props = Path(home) / "server.properties"
    with contextlib.suppress(OSError):
        for line in props.read_text().splitlines():
            if line.startswith("log.dirs="):
                return Path(line.split("=", 1)[1].split(",")[0])
    return None


def stored_bytes(log_dir: Path | None, topic: str) -> int | None:
    """Bytes of the topic's log segments on the broker (compressed record batches)."""
    if log_dir is None:
        return None
    total = 0
    for p in range(PARTITIONS):
        d = log_dir / f"{topic}-{p}"
        if not d.is_dir():
            return None
        total += sum(f.stat().st_size for f in d.glob("*.log"))
    return total


def topic_messages(conf: dict[str, Any], topic: str) -> int:
    """Messages in ``topic``: the sum of its partitions' high watermarks."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**conf, "group.id": f"bench-{uuid.uuid4().hex[:8]}"})
    try:
        total = 0
        for p in range(PARTITIONS):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high
        return total
    finally:
        consumer.close()


def busy_share(seconds: float = 2.0) -> float:
    """The machine's busy share of all cores over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(longest: float, limit: float = 0.15) -> dict[str, Any]:
    """Wait (up to ``longest`` s) until the machine is below ``limit`` busy, so that a
    latency run does not start while the broker still cleans up after the throughput
    runs (deleting their topics and segments). Returns what happened, for the run's
    record: seconds waited, the last busy share, and whether it settled."""
    t0 = time.monotonic()
    share, settled = None, longest <= 0
    while not settled and time.monotonic() - t0 < longest:
        share = busy_share()
        settled = share < limit
    waited = time.monotonic() - t0
    if not settled:
        log(f"    gave up waiting for the machine to settle after {waited:.0f} s ({share:.0%})")
    elif waited > 5:
        log(f"    waited {waited:.0f} s for the machine to settle")
    return {
        "settle_wait_s": round(waited, 1),
        "busy_before": None if share is None else round(share, 3),
        "settled": settled,
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    import confluent_kafka
    import ray

    info["confluent_kafka"] = confluent_kafka.version()[0]
    info["librdkafka"] = confluent_kafka.libversion()[0]
    info["ray"] = ray.__version__
    with contextlib.suppress(OSError):
        out = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False)
        info["kcat"] = next(
            (ln.strip() for ln in out.stdout.splitlines() if "Version" in ln), "unknown"
        )
    with contextlib.suppress(OSError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        info["git_commit"] = head.stdout.decode().strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "shipper", "actors"], capture_output=True
        )
        info["uncommitted_code"] = [ln[3:] for ln in dirty.stdout.decode().splitlines()]
    return info


# --------------------------------------------------------------------------- runs


def one_run(
    b: c.Bench,
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    topic_config: dict[str, str] | None = None,
    expected: int | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Run ``fn(b, topic, *args)`` on a fresh topic; verify the count; drop the topic."""
    from shipper.testing import create_topic, delete_topic

    conf = b.client_conf()
    topic = f"bench-{uuid.uuid4().hex[:12]}"
    # The broker is shared: if someone restarts it, wait for it rather than give up.
    for attempt in range(6):
        try:
            create_topic(conf, topic, partitions=PARTITIONS, config=topic_config)
            break
        except Exception as exc:  # broker down or restarting
            if attempt == 5:
                log(f"    FAILED: cannot create a topic: {exc!r}")
                return {"error": f"cannot create a topic: {exc!r}"}
            log(f"    broker not answering ({exc!r}); retrying in 10 s")
            delete_topic(conf, topic, timeout=10)
            time.sleep(10)
    try:
        try:
            res = fn(b, topic, *args, **kw)
        except Exception as exc:  # record it, keep the suite going
            log(f"    FAILED: {type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}"}
        want = b.n if expected is None else expected
        # acks=1 results are visible at once; allow a moment for the watermark anyway.
        try:
            for _ in range(20):
                got = topic_messages(conf, topic)
                if got >= want:
                    break
                time.sleep(0.25)
        except Exception as exc:  # the broker went away: this run proves nothing
            log(f"    FAILED: cannot read the topic back: {exc!r}")
            return {"error": f"cannot read the topic back: {exc!r}"}
        res["topic_messages"] = got
        res["verified"] = got == want
        size = stored_bytes(b.broker_log_dir, topic)
        if size is not None and res.get("payload_mb_per_s") is not None:
            res["stored_bytes"] = size
            res["compression_ratio"] = round(b.payload_bytes / size, 3) if size else None
            res["network_mb_per_s"] = round(res["payload_mb_per_s"] * size / b.payload_bytes, 3)
        return res
    finally:
        with contextlib.suppress(Exception):
            delete_topic(conf, topic, timeout=15)


def run_with_retry(
    b: c.Bench, fn: Callable[..., dict[str, Any]], *args: Any, **kw: Any
) -> dict[str, Any]:
    """:func:`one_run`, tried again (up to 3 times) when it failed: the broker is
    shared and may be restarted by other work; failed attempts are kept in the JSON."""
    failures: list[str] = []
    for _attempt in range(3):
        res = one_run(b, fn, *args, **kw)
        if "error" not in res:
            if failures:
                res["failed_attempts"] = failures
            return res
        failures.append(res["error"])
        time.sleep(5)
    return {"error": failures[-1], "failed_attempts": failures}


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over the runs that did not fail."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs_ok": len(ok), "runs_failed": len(runs) - len(ok)}
    if not ok:
        return out
    for key in ok[0]:
        vals = [r.get(key) for r in ok]
        nums = [v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        if nums and len(nums) == len(vals):
            out[key] = round(statistics.median(nums), 4)
        elif all(isinstance(v, bool) for v in vals):
            out[key] = all(vals)
    return out


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:,.1f}k msg/s"


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.1f} ms"


def fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.0f} MB"


def throughput_table(name: str, label: str, by_codec: dict[str, dict[str, Any]]) -> str:
    head = (
        f"\n{label}\n"
        "| Algorithm | Throughput | Latency P99 | CPU (s per 1M entries, % of machine) "
        "| Network Bandwidth | Payload | Latency P50 / P95 | Peak RSS | N in topic |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for codec, m in by_codec.items():
        med = m["median"]
        if not med.get("runs_ok"):
            rows.append(f"| {codec} | failed | | | | | | | |")
            continue
        rss = fmt_mb(med.get("peak_rss_driver"))
        if med.get("peak_rss_actors") is not None:
            rss = f"{rss} + actors {fmt_mb(med.get('peak_rss_actors'))}"
        p50, p95 = med.get("latency_p50_ms"), med.get("latency_p95_ms")
        lat = "n/a" if p50 is None else f"{p50:,.1f} / {p95:,.1f} ms"
        net = med.get("network_mb_per_s")
        rows.append(
            f"| {codec} | {fmt_rate(med.get('msg_per_s'))} | {fmt_ms(med.get('latency_p99_ms'))} "
            f"| {med.get('cpu_s_per_million', 0):.2f} s ({med.get('cpu_pct_of_machine', 0):.0f}%) "
            f"| {'-' if net is None else f'{net:,.1f} MB/s'} "
            f"| {med.get('payload_mb_per_s', 0):,.1f} MB/s | {lat} | {rss} "
            f"| {'ok' if med.get('verified') else 'MISMATCH'} |"
        )
    return "\n".join(rows)


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not a.get("msg_per_s") or not b.get("msg_per_s"):
        return None
    return round(a["msg_per_s"] / b["msg_per_s"], 3)


def paired_ratio(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float | None:
    """Median over run indexes of a/b (runs of the same index ran back to back)."""
    vals = [
        x["msg_per_s"] / y["msg_per_s"]
        for x, y in zip(a, b, strict=False)
        if x.get("msg_per_s") and y.get("msg_per_s")
    ]
    return round(statistics.median(vals), 3) if vals else None


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="30,000 entries instead of 200,000")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated codecs")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median; >= 3)")
    p.add_argument("--entries", type=int, help="entries per run (overrides --quick)")
    p.add_argument("--seed", type=int, default=42, help="datagen seed")
    p.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="comma-separated subset to run"
    )
    p.add_argument(
        "--partitioning",
        choices=("librdkafka", "hash", "round-robin"),
        default="librdkafka",
        help="pipeline partitioning: librdkafka's partitioner like the bare loop "
        "(default), or the shipper's hash on tenant_id / round-robin",
    )
    p.add_argument("--json", default=str(HERE / "results" / "latest.json"), help="output file")
    p.add_argument("--no-latency", action="store_true", help="skip the latency scenario")
    p.add_argument("--no-memory", action="store_true", help="skip the memory scenario")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--latency-rate", type=int, default=10_000)
    p.add_argument(
        "--floor-calls",
        type=int,
        default=3,
        help="Ray calls in the latency floor contender (3: the pipeline's shape)",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=90.0,
        help="before each latency run, wait up to this long for the machine to be "
        "below 15%% busy (0: do not wait)",
    )
    p.add_argument("--memory-codec", default="snappy")
    p.add_argument(
        "--ray-address",
        help="join this Ray cluster instead of starting a private one (for smoke runs; "
        "figures are measured on a private Ray)",
    )
    args = p.parse_args(argv)
    args.codecs = [x for x in args.codecs.split(",") if x]
    args.contenders = [x for x in args.contenders.split(",") if x]
    bad = [x for x in args.codecs if x not in CODECS] + [
        x for x in args.contenders if x not in CONTENDERS
    ]
    if bad:
        p.error(f"unknown codec or contender: {', '.join(bad)}")
    if args.floor_calls < 1:
        p.error("--floor-calls must be at least 1 (the driver calling the producer actor)")
    if args.entries is None:
        args.entries = 30_000 if args.quick else 200_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs < 3:
        log(f"note: --runs {args.runs} is below 3; medians of fewer runs are noisy")
    from shipper.testing import LocalKafka

    kafka = LocalKafka.load()
    results_dir = Path(args.json).resolve().parent
    results_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.time()
    log(f"generating {args.entries:,} entries (seed {args.seed}) ...")
    lines = generate(args.entries, args.seed)
    data_file = results_dir / f"data-{args.entries}-{args.seed}.jsonl"
    with open(data_file, "wb") as f:
        for line in lines:
            f.write(line + b"\n")
    cli_cmd, cli_note = cli_command() if "cli" in args.contenders else ([], "not run")
    if args.partitioning == "librdkafka":
        partitioning: dict[str, Any] = {"enabled": False}
    elif args.partitioning == "hash":
        partitioning = {"enabled": True, "strategy": "hash", "key_field": "tenant_id"}
    else:
        partitioning = {"enabled": True, "strategy": "round-robin"}
    b = c.Bench(
        bootstrap=kafka.bootstrap,
        lines=lines,
        data_file=data_file,
        results_dir=results_dir,
        cli_cmd=cli_cmd,
        partitioning=partitioning,
        broker_log_dir=broker_log_dir(kafka),
    )
    import ray

    # A private local Ray: never join another session's cluster by accident (unless
    # --ray-address names one: the test suite's smoke run joins its own).
    ray.init(
        address=args.ray_address or "local",
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    meta = {
        "machine": machine(),
        "broker": kafka.bootstrap,
        "broker_on_same_machine": kafka.bootstrap.startswith(("127.", "localhost")),
        "entries": b.n,
        "avg_entry_bytes": round(b.payload_bytes / b.n, 1),
        "seed": args.seed,
        "runs": args.runs,
        "codecs": args.codecs,
        "contenders": args.contenders,
        "partitions": PARTITIONS,
        "partitioning": args.partitioning,
        "warm_up_entries": b.warm,
        "submission_entries": b.submission,
        "cli": cli_note,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
    }
    log(f"machine: {meta['machine'].get('cpu')} x{meta['machine']['cores']}; broker {b.bootstrap}")

    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        codec: {name: [] for name in args.contenders} for codec in args.codecs
    }
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(t_start))
    partial = results_dir / f"partial-{stamp}.json"
    extra: dict[str, Any] = {}

    def checkpoint() -> None:
        """Raw figures so far, so that a crash late in a long run loses nothing."""
        partial.write_text(json.dumps({"meta": meta, "raw": raw, **extra}, default=str))

    for run in range(args.runs):
        for codec in args.codecs:
            for name in args.contenders:
                fn = CONTENDERS[name][1]
                log(f"[run {run + 1}/{args.runs}] {codec:<6} {name:<8} ...")
                res = run_with_retry(b, fn, codec)
                res["run"] = run + 1
                raw[codec][name].append(res)
                checkpoint()
                if "error" not in res:
                    log(
                        f"    {res['msg_per_s']:>10,.0f} msg/s  cpu {res['cpu_s_per_million']:.2f}"
                        f" s/1M  p99 {fmt_ms(res.get('latency_p99_ms'))}  "
                        f"topic {res['topic_messages']:,} {'ok' if res['verified'] else 'BAD'}"
                    )
                if name in ("pipeline", "headers"):
                    time.sleep(1.0)  # let Ray retire the killed actors' workers

    throughput = {
        codec: {name: {"runs": runs, "median": medians(runs)} for name, runs in per.items()}
        for codec, per in raw.items()
    }
    ratios: dict[str, dict[str, Any]] = {}
    for codec, per in throughput.items():
        bare = per.get("bare")
        ratios[codec] = {}
        for name in ("pipeline", "headers", "cli", "kcat"):
            if name in per and bare:
                ratios[codec][f"{name}/bare"] = ratio(per[name]["median"], bare["median"])
                ratios[codec][f"{name}/bare_paired"] = paired_ratio(per[name]["runs"], bare["runs"])

    latency: dict[str, Any] = {}
    if not args.no_latency:
        lat_runs: dict[str, list[dict[str, Any]]] = {"pipeline": [], "floor": [], "bare": []}
        contenders = (
            ("pipeline", c.latency_pipeline),
            ("floor", c.latency_floor),
            ("bare", c.latency_bare),
        )
        for run in range(args.runs):
            for name, fn in contenders:
                settle = wait_until_quiet(args.settle_seconds)
                log(
                    f"[latency {run + 1}/{args.runs}] {name}: {args.latency_rate:,} msg/s "
                    f"for {args.latency_seconds:g} s ..."
                )
                entries = int(args.latency_seconds * args.latency_rate / 100) * 100 + 100
                res = run_with_retry(
                    b,
                    fn,
                    rate=args.latency_rate,
                    seconds=args.latency_seconds,
                    **({"calls": args.floor_calls} if name == "floor" else {}),
                    topic_config={"message.timestamp.type": "LogAppendTime"},
                    expected=entries,
                )
                res["run"] = run + 1
                res.update(settle)
                lat_runs[name].append(res)
                extra["latency_runs"] = lat_runs
                checkpoint()
                if "error" not in res:
                    log(
                        f"    p50/p95/p99 {res['latency_p50_ms']:.2f} / {res['latency_p95_ms']:.2f}"
                        f" / {res['latency_p99_ms']:.2f} ms (append p99 "
                        f"{res['append_latency_p99_ms']} ms), late ticks "
                        f"{res['late_submissions']}"
                    )
        latency = {
            "rate": args.latency_rate,
            "seconds": args.latency_seconds,
            "preset": "low-latency",
            "floor_calls": args.floor_calls,
            **{name: {"runs": r, "median": medians(r)} for name, r in lat_runs.items()},
        }

    memory: dict[str, Any] = {}
    if not args.no_memory:
        for run in range(args.runs):
            for qs in (10_000, 100_000):
                log(f"[memory {run + 1}/{args.runs}] queue_size {qs:,} ...")
                res = run_with_retry(b, c.pipeline_api, args.memory_codec, queue_size=qs)
                res["run"] = run + 1
                memory.setdefault(str(qs), {"runs": []})["runs"].append(res)
                extra["memory_runs"] = memory
                checkpoint()
                if "error" not in res:
                    log(
                        f"    driver {fmt_mb(res['peak_rss_driver'])}, actors "
                        f"{fmt_mb(res['peak_rss_actors'])} {res['peak_rss_actors_by_class']}"
                    )
                time.sleep(1.0)
        for v in memory.values():
            v["median"] = medians(v["runs"])
        memory = {"codec": args.memory_codec, "by_queue_size": memory}

    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta["duration_s"] = round(time.time() - t_start, 1)
    targets = target_checks(throughput, ratios, latency)
    report = {
        "meta": meta,
        "throughput": throughput,
        "ratios": ratios,
        "latency": latency,
        "memory": memory,
        "targets": targets,
    }
    out = Path(args.json)
    out.write_text(json.dumps(report, indent=1, default=str))
    (results_dir / f"run-{stamp}.json").write_text(out.read_text())
    partial.unlink(missing_ok=True)
    print(render(report))
    log(f"\nwrote {out} (and run-{stamp}.json) in {meta['duration_s']:.0f} s")
    data_file.unlink(missing_ok=True)
    ok = all(
        r.get("verified")
        for per in throughput.values()
        for m in per.values()
        for r in m["runs"]
        if "error" not in r
    )
    failed = any(
        "error" in r for per in throughput.values() for m in per.values() for r in m["runs"]
    )
    return 0 if ok and not failed else 1


def target_checks(
    throughput: dict[str, Any], ratios: dict[str, Any], latency: dict[str, Any]
) -> dict[str, Any]:
    """Issue 7's targets, as measured in this run (None when not measured)."""
    out: dict[str, Any] = {}
    for codec in ("snappy", "lz4"):
        r = ratios.get(codec, {}).get("pipeline/bare")
        out[f"pipeline/bare >= 0.8 ({codec})"] = None if r is None else r >= 0.8
    snappy = throughput.get("snappy", {}).get("pipeline", {}).get("median", {})
    rate = snappy.get("msg_per_s")
    out[">= 100,000 msg/s end to end (snappy, pipeline)"] = None if rate is None else rate >= 1e5
    p99 = latency.get("pipeline", {}).get("median", {}).get("latency_p99_ms")
    out["P99 < 12 ms at 10,000 msg/s (low-latency preset)"] = None if p99 is None else p99 < 12
    return out


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    mach = meta["machine"]
    parts = [
        f"\nMachine: {mach.get('cpu', '?')}, {mach['cores']} cores, {mach.get('memory_gb')} GB; "
        f"broker {meta['broker']} (same machine: {meta['broker_on_same_machine']}). "
        f"{meta['entries']:,} entries of ~{meta['avg_entry_bytes']:.0f} B, "
        f"median of {meta['runs']} runs. librdkafka {mach['librdkafka']}, Ray {mach['ray']}."
    ]
    tp = report["throughput"]
    for name in meta["contenders"]:
        label = CONTENDERS[name][0]
        parts.append(throughput_table(name, label, {k: v[name] for k, v in tp.items()}))
    parts.append(
        "\nThroughput ratios (median msg/s over median msg/s of the bare loop, same run)\n"
        "| Algorithm | bare loop | pipeline | pipeline / bare | CLI / bare | kcat / bare |\n"
        "|---|---|---|---|---|---|"
    )
    for codec, r in report["ratios"].items():

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        bare = tp[codec].get("bare", {}).get("median", {}).get("msg_per_s")
        pipe = tp[codec].get("pipeline", {}).get("median", {}).get("msg_per_s")
        parts.append(
            f"| {codec} | {fmt_rate(bare)} | {fmt_rate(pipe)} | {f(r.get('pipeline/bare'))} "
            f"| {f(r.get('cli/bare'))} | {f(r.get('kcat/bare'))} |"
        )
    lat = report["latency"]
    if lat:
        parts.append(
            f"\nLatency at a steady {lat['rate']:,} msg/s for {lat['seconds']:g} s "
            "(100 entries every 10 ms), low-latency preset\n"
            "| Contender | P50 | P95 | P99 | P99 submit->broker append | achieved msg/s |\n"
            "|---|---|---|---|---|---|"
        )
        for name in ("pipeline", "floor", "bare"):
            if name not in lat:
                continue
            m = lat[name]["median"]
            label = f"floor ({lat.get('floor_calls', 3)} Ray calls)" if name == "floor" else name
            if not m.get("runs_ok"):
                parts.append(f"| {label} | failed | | | | |")
                continue
            parts.append(
                f"| {label} | {fmt_ms(m['latency_p50_ms'])} | {fmt_ms(m['latency_p95_ms'])} "
                f"| {fmt_ms(m['latency_p99_ms'])} | {fmt_ms(m.get('append_latency_p99_ms'))} "
                f"| {m['msg_per_s']:,.0f} |"
            )
    mem = report["memory"]
    if mem:
        parts.append(
            f"\nPeak RSS by queue_size ({mem['codec']}, same load)\n"
            "| queue_size | driver | pipeline actors | whole Ray tree + driver | msg/s |\n"
            "|---|---|---|---|---|"
        )
        for qs, v in mem["by_queue_size"].items():
            m = v["median"]
            if not m.get("runs_ok"):
                parts.append(f"| {int(qs):,} | failed | | | |")
                continue
            parts.append(
                f"| {int(qs):,} | {fmt_mb(m['peak_rss_driver'])} | {fmt_mb(m['peak_rss_actors'])} "
                f"| {fmt_mb(m['peak_rss_ray_tree'])} | {m['msg_per_s']:,.0f} |"
            )
    parts.append("\nTargets (issue 7)")
    for k, v in report["targets"].items():
        parts.append(f"  {k}: {'n/a' if v is None else ('yes' if v else 'NO')}")
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
