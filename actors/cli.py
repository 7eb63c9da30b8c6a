"""The ``shipper`` command: :mod:`shipper.cli`'s commands plus ``run``, which needs Ray.

``shipper run --config FILE`` works in one of three ways:

- ``--input FILE`` (repeatable): ship those files once, then stop. ``-`` is stdin.
- no ``--input``, and ``sources`` in the config (files, HTTP): serve. The sources run
  in actors on this node until SIGTERM, Ctrl-C or ``ray job stop``; the metrics
  endpoint is up the whole time.
- neither: stream stdin. Each line goes as soon as it has been read (``tail -F app.log |
  shipper run ...`` ships while the pipe stays open).

On SIGTERM or Ctrl-C it stops reading at once (also in the middle of a wait for
input), drains what it took for ``pipeline.drain_timeout``, parks whatever is still
queued in the DLQ (reason ``shutdown``), prints a summary and exits: 0 when every
entry was delivered or handed to the DLQ, 1 when anything failed or could not be
parked, 2 for a bad configuration or a Ray cluster that does not answer.

Ray is imported only when the command runs, so ``shipper`` itself stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from shipper.cli import main as cli_main
from shipper.cli import register_subcommand

__all__ = ["add_run_arguments", "main", "run_command"]

RAY_CONNECT_TIMEOUT = 30.0


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=None,
        help="input file of JSON lines or text lines, '-' for stdin (repeatable); "
        "without it: serve the config's sources, or stream stdin",
    )
    p.add_argument(
        "--block-bytes",
        type=int,
        default=None,
        help="most bytes per submission (default: sources.tail.read_bytes, 8 MiB)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr (auto: when stderr is a terminal)",
    )
    p.add_argument("--summary-json", help="also write the summary as JSON to this file")
    p.add_argument(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)"
    )


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def show(self, stats: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        sys.stderr.write(
            f"\r{stats.entries_in:>12,} in  {stats.delivered:>12,} delivered  "
            f"{stats.failed:>8,} failed  {stats.rate:>10,.0f} entries/s"
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class _Stop:
    """SIGTERM / SIGINT seen: stop reading."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.event = threading.Event()

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signal = signum
        self.event.set()

    def install(self) -> dict[int, Any]:
        return {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}


def _watchdog(address: str, timeout: float) -> threading.Timer:
    """End the process with a clear message if joining Ray takes longer than
    ``timeout`` (Ray keeps retrying a head that does not answer)."""

    def give_up() -> None:
        print(
            f"shipper run: the Ray cluster at {address} did not answer within "
            f"{timeout:.0f}s. Check that it runs (`ray status --address {address}`), or "
            "leave out --ray-address and RAY_ADDRESS to run on a local Ray of its own",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    return timer


def _probe(address: str) -> None:
    """Fail at once when nothing listens at a ``host:port`` address."""
    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return  # "auto", ray://..., left to Ray (and the watchdog)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(
            f"nothing answers at the Ray address {address} ({exc.strerror or exc}). Start "
            "the cluster (`ray start --head`), fix --ray-address / RAY_ADDRESS, or leave "
            "both out to run on a local Ray of its own"
        ) from None


def _start(args: argparse.Namespace) -> Any:
    """The Shipper, with Ray joined or started (guarded by the watchdog)."""
    from actors import local_ray

    address = args.ray_address or os.environ.get("RAY_ADDRESS") or None
    local_ray.prepare(address)
    from actors.pipeline import Shipper

    timer = None
    if address and address != "local":  # joining a cluster: it must answer
        _probe(address)
        timer = _watchdog(address, RAY_CONNECT_TIMEOUT)
    if timer is not None:
        timer.start()
    try:
        return Shipper(args.config, ray_address=address)
    finally:
        if timer is not None:
            timer.cancel()


def _ship_inputs(
    shipper: Any, names: list[str], stop: _Stop, progress: _Progress, block: int | None
) -> None:
    """Ship each input (a file, or ``-`` for stdin) as its lines arrive."""
    from shipper.sources.lines import LineCutter, split_lines
    from shipper.sources.stdin import StreamReader

    tail = shipper.config.sources.tail
    read_bytes = block or tail.read_bytes
    for name in names:
        if stop.signal is not None:
            break
        fd = sys.stdin.fileno() if name == "-" else os.open(name, os.O_RDONLY)
        try:
            cutter = LineCutter(tail.max_line_bytes, tail.partial_line_timeout)
            reader = StreamReader(fd, cutter, read_bytes, stopped=stop.event.is_set)
            line = 1
            for blob in reader.blobs():
                for piece in split_lines(blob, shipper.max_submission_lines):
                    shipper.submit_lines(piece, first_line=line)
                    line += piece.count(b"\n")
                progress.show(shipper.stats())
            if cutter.cut:
                print(
                    f"shipper run: {cutter.cut} lines of {name} were longer than "
                    f"sources.tail.max_line_bytes ({tail.max_line_bytes}) and were cut",
                    file=sys.stderr,
                )
        finally:
            if name != "-":
                os.close(fd)


def _serve(shipper: Any, stop: _Stop) -> str | None:
    """Run the config's sources until a stop signal (None) or until the fleet cannot
    go on (why)."""
    started = shipper.start_sources()
    for line in started:
        print(f"shipper run: {line}", file=sys.stderr, flush=True)
    if shipper.metrics_url:
        print(f"shipper run: metrics at {shipper.metrics_url}", file=sys.stderr, flush=True)
    print("shipper run: serving until SIGTERM or Ctrl-C", file=sys.stderr, flush=True)
    ticks = 0
    while not stop.event.wait(1.0):
        ticks += 1
        if ticks % 5 == 0 and (problem := shipper.fleet_problem()) is not None:
            print(f"shipper run: {problem}", file=sys.stderr, flush=True)
            return str(problem)
    return None  # close() stops the sources, after the drain


def run_command(args: argparse.Namespace) -> int:
    from shipper.errors import ShipperError

    stop = _Stop()
    # Installed before Ray starts, so a SIGTERM during start-up also ends in a drain
    # and a summary rather than a dead process.
    old = stop.install()
    try:
        shipper = _start(args)
    except (ShipperError, ConnectionError) as exc:
        for s, h in old.items():
            signal.signal(s, h)
        print(f"shipper run: {exc}", file=sys.stderr)
        return 2
    # ray.init() puts in its own SIGTERM handler (which ends the process): ours again.
    stop.install()
    progress = _Progress(
        args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    )
    sources: dict[str, Any] = {}
    fatal: str | None = None
    try:
        if args.input:
            _ship_inputs(shipper, args.input, stop, progress, args.block_bytes)
        elif shipper.config.sources.any:
            fatal = _serve(shipper, stop)
        else:
            _ship_inputs(shipper, ["-"], stop, progress, args.block_bytes)
        if stop.signal is not None:
            print(
                f"\nshipper run: got signal {stop.signal}; stopped reading, draining",
                file=sys.stderr,
            )
        report = shipper.close()
        sources = dict(shipper.source_counts)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    stats = report.stats
    progress.show(stats, force=True)
    progress.end()
    print(stats.table())
    if sources:
        print(
            "sources: " + ", ".join(f"{k} {v:,}" for k, v in sources.items() if isinstance(v, int))
        )
    if report.parked:
        print(f"parked in the DLQ at shutdown: {report.parked:,} entries (reason shutdown)")
    if not report.drained:
        print(f"shipper run: {report}", file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(
                {
                    **stats.as_dict(),
                    "drained": report.drained,
                    "parked": report.parked,
                    "sources": sources,
                    "fatal": fatal,
                },
                f,
                indent=2,
            )
    return 0 if report.drained and stats.failed == 0 and fatal is None else 1


def _status_arguments(p: argparse.ArgumentParser) -> None:
    from actors.status import add_status_arguments

    add_status_arguments(p)


def _status(args: argparse.Namespace) -> int:
    from actors.status import status_command

    return status_command(args)


register_subcommand(
    "status",
    "per node of a running shipper: actors, queues, breaker, DLQ depth, entries/s",
    _status_arguments,
    _status,
)

register_subcommand(
    "run",
    "ship JSON lines or text lines from files, stdin or the config's sources to Kafka",
    add_run_arguments,
    run_command,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shipper`` script."""
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover - python -m actors.cli
    sys.exit(main())
