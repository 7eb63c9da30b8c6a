"""The ``shipper`` command: :mod:`shipper.cli`'s commands plus the ones that run Ray.

``shipper run`` ships JSON lines or text lines from files or stdin.

Reads input in blocks of whole lines, submits each block as one submission, shows
progress on a terminal, stops reading on SIGTERM or Ctrl-C and drains what was
submitted, then prints a summary. Exit code 0 when every entry was delivered (or
handed to the DLQ), 1 when anything failed or was still in flight at the end,
2 for a bad configuration.

Ray is imported only when the command runs, so ``shipper`` itself stays light.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from shipper.cli import main as cli_main
from shipper.cli import register_subcommand

__all__ = ["add_run_arguments", "main", "read_blocks", "run_command"]

BLOCK_BYTES = 1 << 20


def read_blocks(stream: IO[bytes], block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield ``(blob, lines)`` pieces of ``stream`` that end on a line boundary."""
    rest = b""
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        blob, rest = data[: cut + 1], data[cut + 1 :]
        yield blob, blob.count(b"\n")
    if rest:
        yield rest, 1


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=None,
        help="input file of JSON lines or text lines, '-' for stdin (repeatable; default -)",
    )
    p.add_argument("--block-bytes", type=int, default=BLOCK_BYTES, help="bytes per submission")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr (auto: when stderr is a terminal)",
    )
    p.add_argument("--summary-json", help="also write the summary as JSON to this file")
    p.add_argument(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS or a local Ray)"
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


def run_command(args: argparse.Namespace) -> int:
    from shipper.errors import ShipperError

    stop = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum  # type: ignore[assignment]

    # Installed before Ray starts, so a SIGTERM during start-up also ends in a drain
    # and a summary rather than a dead process.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        from actors import local_ray

        local_ray.prepare(args.ray_address)
        from actors.pipeline import Shipper

        shipper = Shipper(args.config, ray_address=args.ray_address)
    except ShipperError as exc:
        for s, h in old.items():
            signal.signal(s, h)
        print(f"shipper run: {exc}", file=sys.stderr)
        return 2
    # ray.init() puts in its own SIGTERM handler (which ends the process): ours again.
    for s in old:
        signal.signal(s, on_signal)
    progress = _Progress(
        args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    )
    inputs = args.input or ["-"]
    try:
        for name in inputs:
            if stop["signal"] is not None:
                print(f"shipper run: got signal {stop['signal']}; stopped reading", file=sys.stderr)
                break
            stream = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
            try:
                line = 1
                for blob, n in read_blocks(stream, args.block_bytes):
                    if stop["signal"] is not None:
                        break
                    shipper.submit_lines(blob, first_line=line)
                    line += n
                    progress.show(shipper.stats())
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
            if stop["signal"] is not None:
                print(
                    f"\nshipper run: got signal {stop['signal']}; stopped reading, draining",
                    file=sys.stderr,
                )
                break
        report = shipper.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    stats = report.stats
    progress.show(stats, force=True)
    progress.end()
    print(stats.table())
    if not report.drained:
        print(f"shipper run: {report}", file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump({**stats.as_dict(), "drained": report.drained}, f, indent=2)
    return 0 if report.drained and stats.failed == 0 else 1


register_subcommand(
    "run",
    "ship JSON lines or text lines from files or stdin to Kafka (starts or joins Ray)",
    add_run_arguments,
    run_command,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shipper`` script."""
    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover - python -m actors.cli
    sys.exit(main())
