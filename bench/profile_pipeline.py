"""Profile the Ray pipeline under load: py-spy on the driver and on every actor process.

Runs the same pipeline as ``bench/run.py`` (API, ``submit_lines`` blobs of 5,000
lines, batch_size 1,000, one topic of 6 partitions, priority routing off) on N
entries (default 200,000). After a warm-up submission has created the Batcher, it
finds the worker processes of the Router, Batcher and Producer actors (Ray titles
them ``ray::RouterActor`` etc.; read from /proc), attaches ``py-spy record`` to each
of them and to the driver, ships the entries, stops py-spy and:

- writes one speedscope file per process to ``bench/results/profile-<role>.speedscope.json``
  (open them at https://www.speedscope.app);
- prints, per process, the CPU it used during the run (from /proc: cores busy on
  average), the share of samples per thread, and the top functions by self and by
  inclusive samples.

py-spy must be installed in the environment (``pip install py-spy``; a dev tool, not a
dependency) and allowed to ptrace the workers (root, or ptrace_scope 0).

Usage: ``python bench/profile_pipeline.py [--entries N] [--codec snappy] [--rate 100]
[--native] [--top 15]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import contenders as c  # noqa: E402
from datagen import generate  # noqa: E402

ROLES = ("RouterActor", "BatcherActor", "ProducerActor")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of one live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    st = raw[raw.rfind(b")") + 2 :].split()
    return (int(st[11]) + int(st[12])) / c.CLK_TCK


def cpu_by_process(root: int, extra: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds of every process under ``root`` (and of ``extra``), with a label."""
    out: dict[int, tuple[str, float]] = {root: ("driver", proc_cpu(root))}
    for pid in c.descendants(root):
        cmd = c.cmdline(pid)
        role = c.ray_role(cmd)
        if role == "ray":
            label = Path(cmd.split()[0]).name if cmd else "?"
            if label.startswith("python"):
                label = Path(cmd.split()[1]).name if len(cmd.split()) > 1 else label
        else:
            label = role or (Path(cmd.split()[0]).name if cmd else "?")
        out[pid] = (label, proc_cpu(pid))
    for pid, label in extra.items():
        out[pid] = (label, proc_cpu(pid))
    return out


def broker_pid() -> int | None:
    """The local Kafka broker's pid (scripts/kafka-local writes it next to its state)."""
    from shipper.testing import LocalKafka

    home = LocalKafka.load().info.get("home")
    try:
        return int((Path(home) / "broker.pid").read_text().split()[0]) if home else None
    except (OSError, ValueError, IndexError):
        return None


def summarize(path: Path, top: int) -> dict[str, Any]:
    """Self and inclusive time per function from a py-spy speedscope file (py-spy
    writes sample weights in seconds)."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]

    def name(i: int) -> str:
        f = frames[i]
        file = Path(f.get("file") or "?").name
        line = f.get("line")
        return f"{f['name']} ({file}{f':{line}' if line else ''})"

    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for prof in doc["profiles"]:
        samples = prof.get("samples", [])
        weights = prof.get("weights") or [1] * len(samples)
        for stack, w in zip(samples, weights, strict=False):
            if not stack:
                continue
            total += w
            threads[prof.get("name", "?")] += w
            self_c[name(stack[-1])] += w
            for fn in {name(i) for i in stack}:
                incl[fn] += w
    return {
        "samples": total,
        "threads": threads.most_common(),
        "self": self_c.most_common(top),
        "inclusive": incl.most_common(top),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--codec", default="snappy")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="also sample C frames (slower)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    import ray

    from actors.pipeline import Shipper
    from shipper.testing import LocalKafka, create_topic, delete_topic

    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    kafka = LocalKafka.load()
    lines = generate(args.entries)
    b = c.Bench(
        bootstrap=kafka.bootstrap,
        lines=lines,
        data_file=out_dir / "unused",
        results_dir=out_dir,
        cli_cmd=[],
        partitioning={"enabled": False},
    )
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    conf = b.client_conf()
    topic = create_topic(conf, f"bench-profile-{os.getpid()}", partitions=6)
    spies: dict[str, tuple[int, subprocess.Popen[bytes], Path]] = {}
    try:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix="dlq-") as dlq:
            shipper = Shipper(c.pipeline_config(b, topic, args.codec, dlq))
            try:
                shipper.submit_lines(b.warm_blob).result(timeout=120)
                targets = {"driver": os.getpid()}
                for pid, role in c.actor_pids(roles=ROLES).items():
                    key = role if role not in targets else f"{role}-{pid}"
                    targets[key] = pid
                missing = [r for r in ROLES if r not in targets]
                if missing:
                    print(f"warning: no process found for {missing}", file=sys.stderr)
                for role, pid in targets.items():
                    path = out_dir / f"profile-{role}.speedscope.json"
                    cmd = [
                        pyspy, "record", "--pid", str(pid), "--rate", str(args.rate),
                        "--format", "speedscope", "--output", str(path), "--nonblocking",
                    ]  # fmt: skip
                    if args.native:
                        cmd.append("--native")
                    spies[role] = (
                        pid,
                        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                        path,
                    )
                time.sleep(1.0)  # py-spy attaches
                bpid = broker_pid()
                extra = {bpid: "kafka broker (java)"} if bpid else {}
                spy_pids = {spy.pid for _pid, spy, _path in spies.values()}
                cpu0 = {role: proc_cpu(pid) for role, (pid, _, _) in spies.items()}
                tree0 = cpu_by_process(os.getpid(), extra)
                t0 = time.perf_counter()
                acks = [shipper.submit_lines(blob, first_line=f) for blob, f, _ in b.blobs]
                shipper.flush(timeout=600)
                t1 = time.perf_counter()
                cpu1 = {role: proc_cpu(pid) for role, (pid, _, _) in spies.items()}
                tree1 = cpu_by_process(os.getpid(), extra)
                delivered = sum(a.result().delivered for a in acks)
            finally:
                for _pid, spy, _path in spies.values():
                    spy.send_signal(signal.SIGINT)
                for _pid, spy, _path in spies.values():
                    try:
                        spy.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                shipper.close(timeout=60)
    finally:
        delete_topic(conf, topic)

    wall = t1 - t0
    print(
        f"\n{delivered:,} of {b.timed:,} entries delivered in {wall:.2f} s "
        f"({b.timed / wall:,.0f} msg/s, {args.codec}) while profiled at {args.rate} Hz"
    )
    report: dict[str, Any] = {"entries": b.timed, "seconds": wall, "codec": args.codec}
    by_label: Counter[str] = Counter()
    for pid, (label, cpu) in tree1.items():
        if pid in spy_pids:
            label = "py-spy (profiler overhead)"
        by_label[label] += cpu - tree0.get(pid, (label, 0.0))[1]
    total_cpu = sum(by_label.values())
    print(
        f"\nCPU during the run, by process ({total_cpu / wall:.2f} of "
        f"{os.cpu_count()} cores busy on average):"
    )
    for label, cpu in by_label.most_common():
        if cpu >= 0.005:
            print(f"  {cpu / wall:5.2f} cores  {cpu:7.2f} s  {label}")
    report["cpu_by_process"] = {k: round(v, 3) for k, v in by_label.items()}
    for role, (pid, spy, path) in spies.items():
        busy = (cpu1[role] - cpu0[role]) / wall
        print(f"\n=== {role} (pid {pid}): {busy:.2f} cores busy on average ===")
        if not path.exists():
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            print(f"  no profile written: {err.strip()[-500:]}")
            continue
        s = summarize(path, args.top)
        report[role] = {"pid": pid, "cores_busy": round(busy, 3), **s}
        total = s["samples"] or 1
        print(f"  active (non-idle) sampled time: {total:.1f} s")
        print("  threads: " + ", ".join(f"{t} {n / total:.0%}" for t, n in s["threads"][:5]))
        print("  top self:")
        for fn, n in s["self"]:
            print(f"    {n / total:6.1%}  {fn}")
        print("  top inclusive:")
        for fn, n in s["inclusive"]:
            print(f"    {n / total:6.1%}  {fn}")
        print(f"  speedscope: {path}")
    (out_dir / "profile-summary.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
