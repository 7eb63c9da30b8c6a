"""``shipper run``: ship files, stdin or the config's sources until done or stopped.

``shipper run --config FILE`` works in one of three ways:

- ``--input FILE`` (repeatable): ship those files once, then stop. ``-`` is stdin.
- no ``--input``, and ``sources`` in the config (files, HTTP): serve. The sources run
  in actors on every node pipeline until SIGTERM, Ctrl-C or ``ray job stop``; the
  metrics endpoint is up the whole time.
- neither: stream stdin. Each line goes as soon as it has been read (``tail -F app.log |
  shipper run ...`` ships while the pipe stays open).

An outage never ends the command. When Kafka is away the breaker opens within
seconds and entries go to the DLQ; when the pipeline has no room (Kafka hung, the DLQ
full) reading waits (a pipe backs up, as it should) and stderr says why every 10 s.

SIGHUP, or ``shipper reload``, reads the configuration file again: a file that does
not validate is refused and the run goes on; a changed one is switched over to
(:mod:`actors.reload`).

Every way out ends the same way: SIGTERM or Ctrl-C (also in the middle of a wait),
the end of the input, or an error after start. Reading stops, what was read is
drained for ``pipeline.drain_timeout``, whatever is still queued is parked in the DLQ
(reason ``shutdown``), a summary is printed, and the exit code says how it went: 0
when every entry was delivered or handed to the DLQ, 1 when anything failed, could not
be parked, or an error stopped the run, 2 for a bad configuration, an input that
cannot be read, a Ray cluster that does not answer or pipelines that do not start. An
error prints one line; its traceback goes to ``logging.file`` (and to stderr with
``--debug``).

Started on a Ray of its own, the command keeps that Ray out of its caller's process
group (:mod:`actors.shield`), so a stop sent to the whole group (``kill -TERM -PGID``,
``timeout``, a process supervisor) reaches the command, which drains, and not Ray.

Ray is imported only when the command runs, so ``shipper`` itself stays light.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys
import threading
import traceback
from typing import Any

from .terminal import Progress, Watch, say, summary

__all__ = ["add_run_arguments", "run_command"]

RAY_CONNECT_TIMEOUT = 30.0
#: Seconds a submission waits for room before the command looks again (and may speak).
WAIT_STEP = 1.0


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
    p.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error on stderr too (it always goes to logging.file)",
    )


class _Stop:
    """SIGTERM / SIGINT seen: stop reading. SIGHUP: read the configuration again
    (``reload``, see :mod:`actors.reload`)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.signal: int | None = None
        self.event = threading.Event()
        self.reload = threading.Event()

    def __call__(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
            return
        self.signal = signum
        self.event.set()

    def maybe_reload(self, shipper: Any, tell: Any) -> None:
        """Reload when SIGHUP or ``shipper reload`` asked (a flag: nothing else runs on
        the reading path; the keeper is asked from ``Switched.listen``'s thread)."""
        if self.reload.is_set() and self.signal is None:
            self.reload.clear()
            shipper.reload(tell)

    def install(self) -> dict[int, Any]:
        return {s: signal.signal(s, self) for s in self.SIGNALS}


def _watchdog(address: str, timeout: float) -> threading.Timer:
    """End the process with a clear message if joining Ray takes longer than
    ``timeout`` (Ray keeps retrying a head that does not answer)."""

    def give_up() -> None:
        say(
            f"the Ray cluster at {address} did not answer within {timeout:.0f}s. Check "
            f"that it runs (`ray status --address {address}`), or leave out "
            "--ray-address and RAY_ADDRESS to run on a local Ray of its own"
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


def _address(args: argparse.Namespace) -> str | None:
    return args.ray_address or os.environ.get("RAY_ADDRESS") or None


def _start(args: argparse.Namespace) -> Any:
    """Join Ray (guarded by the watchdog: joining only), then start the Shipper, whose
    node pipelines have ``fleet.start_timeout`` and report their progress."""
    from actors import local_ray

    address = _address(args)
    local_ray.prepare(address)
    from actors.local_ray import join_ray
    from shipper.config import load_config

    load_config(args.config)  # a bad config is reported before Ray starts
    timer = None
    if address and address != "local":  # joining a cluster: it must answer
        _probe(address)
        timer = _watchdog(address, RAY_CONNECT_TIMEOUT)
        timer.start()
    try:
        join_ray(address)
    finally:
        if timer is not None:
            timer.cancel()
    return _shipper(args.config)


def _shipper(config: Any) -> Any:
    from actors.pipeline import Shipper

    return Shipper(config, on_progress=lambda line: say(f"starting: {line}"))


def _check_inputs(names: list[str] | None) -> str | None:
    """Why an input cannot be read (checked before anything starts), or None."""
    for name in names or []:
        if name == "-":
            continue
        try:
            st = os.stat(name)  # no open: a named pipe would wait here for its writer
        except OSError as exc:
            return f"cannot read --input {name}: {exc.strerror or exc}"
        if stat.S_ISDIR(st.st_mode):
            return f"--input {name} is a directory; name the files in it"
        if not os.access(name, os.R_OK):
            return f"cannot read --input {name}: permission denied"
    return None


class _Sender:
    """Submits the CLI's blocks: waits through backpressure (the pipe backs up), says
    why every 10 s, and after a stop signal hands over what it already read anyway."""

    def __init__(self, shipper: Any, stop: _Stop, notices: Any, progress: Progress) -> None:
        self.shipper = shipper
        self.stop = stop
        self.notices = notices
        self.progress = progress

    def send(self, piece: bytes, first_line: int) -> None:
        from shipper.errors import BackpressureError

        s = self.shipper
        while True:
            if self.stop.signal is not None:
                # Read already: it is ours to deliver or park, never to drop.
                s.submit_lines(piece, first_line=first_line, overflow=True)
                return
            try:
                s.submit_lines(piece, first_line=first_line, timeout=WAIT_STEP)
            except BackpressureError:
                dlq = s.dlq_count() if s.config.sinks.kafka.dlq_config.enabled else None
                line = self.notices.waiting(s.breaker_states(), dlq, s.in_flight_entries)
                if line:
                    self.progress.say(line)
                continue
            line = self.notices.took()
            if line:
                self.progress.say(line)
            return


def _ship_inputs(
    shipper: Any, names: list[str], stop: _Stop, progress: Progress, block: int | None
) -> None:
    """Ship each input (a file, or ``-`` for stdin) as its lines arrive."""
    from shipper.cli.notices import RunNotices
    from shipper.sources.lines import LineCutter, split_lines
    from shipper.sources.multiline import Combiner, rule_of
    from shipper.sources.stdin import StreamReader

    tail = shipper.config.sources.tail
    read_bytes = block or tail.read_bytes
    sender = _Sender(shipper, stop, RunNotices(), progress)
    for name in names:
        if stop.signal is not None:
            break
        fd = sys.stdin.fileno() if name == "-" else os.open(name, os.O_RDONLY)
        try:
            cutter = LineCutter(tail.max_line_bytes, tail.partial_line_timeout)
            ml = shipper.config.sources.stdin.multiline
            combiner = Combiner(rule_of(ml)) if ml is not None else None
            reader = StreamReader(
                fd,
                cutter,
                read_bytes,
                stopped=stop.event.is_set,
                combiner=combiner,
                idle=lambda: stop.maybe_reload(shipper, progress.say),
            )
            line = 1
            for blob in reader.blobs():
                for piece in split_lines(blob, shipper.max_submission_lines):
                    # With multiline, a piece's first entry starts on its first line
                    # exactly only for the blob's first piece; the rest are close.
                    sender.send(piece, line)
                    line += piece.count(b"\n")
                line = reader.lines + 1
                progress.show(shipper.stats())
                stop.maybe_reload(shipper, progress.say)
            if cutter.cut:
                progress.say(
                    f"{cutter.cut} lines of {name} were longer than "
                    f"sources.tail.max_line_bytes ({tail.max_line_bytes}) and were cut"
                )
            if combiner is not None and combiner.cut:
                progress.say(
                    f"{combiner.cut} entries of {name} reached sources.stdin.multiline's "
                    "max_lines or max_bytes and were cut (the rest went on as the next entry)"
                )
        finally:
            if name != "-":
                os.close(fd)


def _serve(shipper: Any, stop: _Stop) -> str | None:
    """Run the config's sources until a stop signal (None) or until the fleet cannot
    go on (why)."""
    started = shipper.start_sources()
    for line in started:
        say(line)
    if shipper.metrics_url:
        say(f"metrics at {shipper.metrics_url}")
    say("serving until SIGTERM or Ctrl-C (SIGHUP reads the configuration again)")
    ticks = 0
    while not stop.event.wait(1.0):
        stop.maybe_reload(shipper, say)
        ticks += 1
        if ticks % 5 == 0 and (problem := shipper.fleet_problem()) is not None:
            say(str(problem))
            return str(problem)
    return None  # close() stops the sources, after the drain


def _log_failure(shipper: Any, exc: BaseException, debug: bool) -> None:
    """The traceback of an error that stopped the run: to ``logging.file``, and to
    stderr with ``--debug``."""
    from shipper.logs import append_traceback

    where = append_traceback(shipper.log_file(), "shipper run stopped by an error", exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    elif where:
        say(f"the traceback is in {where} (or run with --debug)")


def run_command(args: argparse.Namespace) -> int:
    problem = _check_inputs(args.input)
    if problem is not None:
        say(problem)
        return 2
    if not _address(args):  # a Ray of its own: out of the caller's process group
        from actors.shield import shield

        return shield(lambda: _run(args))
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from shipper.errors import ShipperError, brief

    stop = _Stop()
    # Installed before Ray starts, so a SIGTERM during start-up also ends in a drain
    # and a summary rather than a dead process.
    old = stop.install()
    try:
        from actors.reload import Switched

        shipper = Switched(_start(args), _shipper, args.config)
        shipper.listen(stop.reload)
    except (ShipperError, ConnectionError) as exc:
        for s, h in old.items():
            signal.signal(s, h)
        say(str(exc))
        return 2
    except Exception as exc:
        for s, h in old.items():
            signal.signal(s, h)
        say(f"could not start: {brief(exc)}")
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        return 2
    # ray.init() puts in its own SIGTERM handler (which ends the process): ours again.
    stop.install()
    progress = Progress(
        args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    )
    from shipper.cli.notices import RunNotices

    fatal: str | None = None
    try:
        with Watch(shipper, RunNotices(), progress):
            try:
                if args.input:
                    _ship_inputs(shipper, args.input, stop, progress, args.block_bytes)
                elif shipper.config.sources.any:
                    fatal = _serve(shipper, stop)
                else:
                    _ship_inputs(shipper, ["-"], stop, progress, args.block_bytes)
            except Exception as exc:  # after start: still drain, park and report
                fatal = brief(exc)
                progress.say(
                    f"stopped by an error: {type(exc).__name__}: {fatal}; draining and "
                    "parking what is in flight"
                )
                _log_failure(shipper, exc, args.debug)
            if stop.signal is not None:
                progress.say(f"got signal {stop.signal}; stopped reading, draining")
            try:
                report = shipper.close()
            except Exception as exc:
                progress.say(f"closing the shipper failed: {type(exc).__name__}: {brief(exc)}")
                _log_failure(shipper, exc, args.debug)
                return 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return summary(args, shipper, report, progress, fatal)
