"""Source actors: they read on the node that has the input and feed its Router directly.

- :class:`FileSourceActor` follows the configured files
  (:class:`shipper.sources.files.FileTailer`), validates and routes each whole-line
  block with the file's labels (:class:`shipper.intake.Intake`) and hands it to the
  node's Batchers itself (:class:`actors.feeder.Feeder`: no Router hop). A file's
  position is checkpointed only once every block before it is acknowledged; a block
  Kafka refused and the DLQ could not take is sent again later: the file has it.
- :class:`HttpSourceActor` serves ``POST /v1/logs`` (aiohttp, in the actor's event
  loop) with the rules of :mod:`shipper.sources.http`, feeding the Batchers the same
  way.

The driver is off the data path: it only starts, watches and stops them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from typing import Any

from shipper.errors import brief
from shipper.fleet import Spreader, node_path
from shipper.intake import Intake, Prepared
from shipper.outcomes import SegmentOutcome, SubmissionResult
from shipper.sources import http as rules
from shipper.sources.checkpoints import open_checkpoints
from shipper.sources.files import Block, FileTailer
from shipper.sources.watch import DirWatch, WatchUnavailable, watched_dirs
from shipper.submissions import RunStats

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .feeder import Feeder
from .handles import Order, Ref, RouterHandle
from .payload import STORE_MIN_BYTES, Stored
from .telemetry import Reporter
from .wiring import Wiring

__all__ = ["FileSourceActor", "HttpSourceActor", "start_file_source", "start_http_source"]

log = logging.getLogger("shipper.sources")

RESEND_SECONDS = 2.0  # wait before a refused block goes again
#: Least time between two rounds that follow file-system events: a file written to
#: line by line is read in blocks of what came meanwhile, not once per write (every
#: block costs a Ray call per topic). The lines wait that much longer, at most.
EVENT_GAP_SECONDS = 0.05


class FileSourceActor:
    def __init__(self, wiring: Wiring) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.name = wiring.source_name("files")
        cfg = wiring.config
        self.tail = cfg.sources.tail
        self.metrics = Reporter(
            wiring.telemetry(), self.name, node=wiring.node, refresh=self._refresh
        )
        rec = self.metrics.recorder
        rec.add("log_capturer_source_lines_total", 0, {"source": "file"})
        rec.add("log_capturer_source_resent_total", 0, {"source": "file"})
        store, note = open_checkpoints(
            wiring.checkpoint_path(), cfg.sources.checkpoints.map_size_bytes
        )
        # "{node}" in a glob names this node's own files (simulated nodes on one
        # machine, or a shared directory with a folder per node).
        groups = [
            g.model_copy(update={"paths": [node_path(p, wiring.node) for p in g.paths]})
            for g in cfg.sources.files
        ]
        self.tailer = FileTailer(groups, store, self.tail)
        if note:
            log.warning("%s", note)
            rec.add("log_capturer_source_problems_total", 1, _kind("checkpoint_error"))
        # Reads, validates and routes on this node, and feeds its Batchers directly.
        self.intake = Intake(wiring.sink)
        self.feeder = Feeder(wiring, rec, "source")
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_bytes = 0
        self._inflight_lines = 0
        # Like the driver's own budget: lines in flight stay under the queues' warning
        # band, so reading slows down before the Batchers have to.
        self.max_inflight_lines = wiring.sink.inflight_entries
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._last_scan = float("-inf")
        self._last_round = float("-inf")
        self._freed = False  # the last wake-up came from an ack (room in the budget)
        self._watch: DirWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = {"blocks": 0, "lines": 0, "resends": 0, "resent": 0}
        #: What became of the lines read, counted like the driver's own submissions.
        self.run = RunStats()
        announce_start(wiring.namespace, "source", self.name)
        self.metrics.push_now()

    def _refresh(self) -> None:
        self.metrics.recorder.set(
            "log_capturer_source_files", len(self.tailer.files), {"source": "file"}
        )

    async def start(self) -> None:
        """Start following the files (idempotent)."""
        if self._task is None and not self._stopping:
            self.metrics.start_periodic()
            if self.tail.watch:
                self._start_watch()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _start_watch(self) -> None:
        try:
            self._watch = DirWatch()
        except WatchUnavailable as exc:
            # Off Linux this is expected; on Linux it means no inotify instance was left
            # (fs.inotify.max_user_instances): worth a warning and a count.
            level = logging.INFO if exc.errno == errno.ENOSYS else logging.WARNING
            log.log(level, "%s; files are checked every %gs", exc.strerror, self.tail.poll_interval)
            self.metrics.recorder.add(
                "log_capturer_source_problems_total", 1, _kind("watch_unavailable")
            )
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._watch.fd, self._on_events)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._watch.fd)
            self._watch.close()
            self._watch = None

    def _on_events(self) -> None:
        assert self._watch is not None
        changes = self._watch.take()
        if changes.layout:
            self._last_scan = float("-inf")  # look at the globs again in this round
        if changes:
            self._room.set()

    def _update_watch(self) -> bool:
        """Watch the directories of the globs and the followed files; True when it
        began to watch one."""
        if self._watch is None:
            return False
        patterns = [p for g in self.tailer.groups for p in g.paths]
        files = [f.path for f in self.tailer.files.values()]
        for d, err in self._watch.update(watched_dirs(patterns, files)):
            log.warning("cannot watch %s for changes (%s); its files are checked every %gs",
                        d, os.strerror(err), self.tail.poll_interval)  # fmt: skip
            self.metrics.recorder.add(
                "log_capturer_source_problems_total", 1, _kind("watch_unavailable")
            )
        return self._watch.added > 0

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = self._round()
            except Exception:  # a bug must not end the loop: the files stay followed
                log.exception("file source round failed")
                busy = False
            self._report()
            self._commit(force=False)
            if busy:
                await asyncio.sleep(0)
            else:
                self._room.clear()
                self._freed = False
                try:
                    await asyncio.wait_for(self._room.wait(), self.tail.poll_interval)
                except TimeoutError:
                    pass
                if not self._freed:
                    # Woken by a file event (not by room in the budget): let the writes
                    # that follow it gather for a moment, to be read as one block.
                    gap = self._last_round + min(EVENT_GAP_SECONDS, self.tail.poll_interval)
                    if gap > time.monotonic() and not self._stopping:
                        await asyncio.sleep(gap - time.monotonic())

    def _round(self) -> bool:
        """Scan, read what fits in the in-flight budget, hand it over. True when it
        read something (there may be more at once), or should scan again at once."""
        now = self._last_round = time.monotonic()
        again = False
        if now - self._last_scan >= self.tail.poll_interval:
            # Globs, stats and first bytes of every file: once per poll_interval (or
            # after an event that files came or went), not on every round of a busy read.
            self._last_scan = now
            self.tailer.scan()
            if self._update_watch():
                # A file created in a newly watched directory between the scan and
                # the watch raised no event: scan once more, now.
                self._last_scan = float("-inf")
                again = True
        budget = self.tail.max_inflight_bytes - self._inflight_bytes
        if budget <= 0 or self._inflight_lines >= self.max_inflight_lines:
            return again
        blocks = self.tailer.read(budget, self.max_inflight_lines - self._inflight_lines)
        if not blocks:
            return again
        # The "sent" marks are durable before the hand-over: after a crash, exactly the
        # lines between them and the acknowledged marks are counted as re-sent.
        self._commit(force=True)
        for b in blocks:
            self._send(b)
        return True

    def _send(self, b: Block, delay: float = 0.0) -> None:
        self._inflight_bytes += len(b.data)
        self._inflight_lines += b.lines
        # Handed over at once (unless this is a retry): blocks reach the Batchers in
        # the order they were read, so a file's entries keep their order per topic.
        started = None
        if not delay:
            try:
                started = self._hand_over(b)
            except Exception as exc:  # e.g. a Batcher that cannot be created now
                self._hand_over_failed(b, exc)
                delay = RESEND_SECONDS
        task = asyncio.get_running_loop().create_task(self._deliver(b, delay, started))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _hand_over(self, b: Block) -> tuple[Prepared, list[Ref[SegmentOutcome]], float]:
        self.counts["blocks"] += 1
        now = time.time()
        prep = self.intake.prepare_lines(b.data, b.first_line, b.labels)
        return prep, self.feeder.hand_over(prep, now), now

    async def _deliver(
        self,
        b: Block,
        delay: float,
        started: tuple[Prepared, list[Ref[SegmentOutcome]], float] | None,
    ) -> None:
        if started is None:
            await asyncio.sleep(delay)
            try:
                started = self._hand_over(b)
            except Exception as exc:
                self._hand_over_failed(b, exc)
                self._inflight_bytes -= len(b.data)
                self._inflight_lines -= b.lines
                if not self._stopping:
                    self._send(b, RESEND_SECONDS)
                return
        result = await self.feeder.collect(*started)
        refused = result.dlq_refused
        why = f"{refused} entries neither in Kafka nor in the DLQ (full)"
        self._inflight_bytes -= len(b.data)
        self._inflight_lines -= b.lines
        if refused and not self._stopping:
            # Not acknowledged: keep the position, send the block again later.
            self.counts["resends"] += 1
            self.metrics.recorder.add("log_capturer_source_problems_total", 1, _kind("resend"))
            log.warning("%s lines %d-%d: %s; sending them again in %gs", b.path,
                        b.first_line, b.first_line + b.lines - 1, why, RESEND_SECONDS)  # fmt: skip
            self._send(b, RESEND_SECONDS)
            return
        self.run.record(result)
        self.tailer.acked(b)
        self.counts["lines"] += b.lines
        self.metrics.recorder.add("log_capturer_source_lines_total", b.lines, {"source": "file"})
        self._freed = True
        self._room.set()

    def _hand_over_failed(self, b: Block, exc: BaseException) -> None:
        self.metrics.recorder.add("log_capturer_source_problems_total", 1, _kind("resend"))
        log.warning("%s lines %d-%d could not be handed over (%s); sending them again in %gs",
                    b.path, b.first_line, b.first_line + b.lines - 1, brief(exc),
                    RESEND_SECONDS)  # fmt: skip

    def _commit(self, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last_commit >= 0.2:
            self._last_commit = now
            self.tailer.commit()

    def _report(self) -> None:
        rec = self.metrics.recorder
        for n in self.tailer.take_notices():
            level = logging.INFO if n.kind == "no_match" else logging.WARNING
            log.log(level, "%s", n.text)
            rec.add("log_capturer_source_problems_total", 1, _kind(n.kind))
        if self.tailer.resent_lines:
            self.counts["resent"] += self.tailer.resent_lines
            rec.add(
                "log_capturer_source_resent_total", self.tailer.resent_lines, {"source": "file"}
            )
            self.tailer.resent_lines = 0
        if self.tailer.cut_lines:
            rec.add("log_capturer_source_problems_total", self.tailer.cut_lines, _kind("line_cut"))
            self.tailer.cut_lines = 0
        self.metrics.maybe_push()

    async def stop_reading(self) -> int:
        """Read no more; returns the blocks still in flight."""
        self._stopping = True
        self._stop_watch()
        self._room.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        return len(self._inflight)

    async def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """After :meth:`stop_reading`: wait up to ``timeout`` for what is in flight,
        write the positions, and return what was done."""
        await self.stop_reading()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)
        self._report()
        self.tailer.commit()
        self.metrics.push_now()
        return {**self.counts, "in_flight": len(self._inflight), "files": len(self.tailer.files)}

    def run_stats(self) -> RunStats:
        """In, delivered, to the DLQ (by reason), failed: the lines read so far."""
        return self.run

    def status(self) -> dict[str, Any]:
        return {
            **self.counts,
            "in_flight_bytes": self._inflight_bytes,
            "files": {
                path: {"read": read, "acknowledged": acked}
                for path, read, acked in self.tailer.positions().values()
            },
        }

    def close(self) -> None:
        self._stop_watch()
        self.tailer.close()
        self.tailer.store.close()


def _kind(kind: str, source: str = "file") -> dict[str, str]:
    return {"source": source, "kind": kind}


class HttpSourceActor:
    """``POST /v1/logs`` on ``sources.http.host:port``; see :mod:`shipper.sources.http`."""

    def __init__(self, wiring: Wiring) -> None:
        tune_gc()
        actor_logs(wiring)
        self.wiring = wiring
        self.name = wiring.source_name("http")
        self.cfg = wiring.config.sources.http
        env = self.cfg.auth_token_env
        self.token = os.environ.get(env) if env else None
        if env and not self.token:
            log.warning(
                "sources.http.auth_token_env names %s, which is not set where the HTTP "
                "intake runs: requests are not authenticated",
                env,
            )
        # Entries in flight from HTTP stay under the queue's warning band, like the
        # driver's own submissions; past that, requests get 429.
        self.max_inflight = wiring.sink.inflight_entries
        self.run = RunStats()
        self._inflight = 0
        self._unavailable_until = 0.0
        self._runner: Any = None
        self.port = 0
        self.metrics = Reporter(wiring.telemetry(), self.name, node=wiring.node)
        self.intake = Intake(wiring.sink)
        self.feeder = Feeder(wiring, self.metrics.recorder, "source")
        # Requests go to the node pipeline with the fewest of this intake's entries in
        # flight, its own node on a tie (see _ship).
        self.spreader = Spreader()
        self.spreader.set_pipelines([wiring.node])
        self._routers: dict[str, RouterHandle] = {}
        self._router_ids: dict[str, str] = {}  # key -> node id when last asked
        self._seq: dict[str, int] = {}
        self._fleet_task: asyncio.Task[None] | None = None
        for code in ("200", "429", "503"):
            self.metrics.recorder.add("log_capturer_http_requests_total", 0, {"code": code})
        self.metrics.recorder.add("log_capturer_source_lines_total", 0, {"source": "http"})
        self.metrics.recorder.add("log_capturer_source_resent_total", 0, {"source": "http"})
        announce_start(wiring.namespace, "source", self.name)
        self.metrics.push_now()

    async def start(self) -> str:
        """Serve; returns the base URL (idempotent)."""
        if self._runner is None:
            from aiohttp import web

            app = web.Application(client_max_size=self.cfg.max_body_bytes + 1)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            # Bound here, so port 0 gives the port the OS picked.
            family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.cfg.host, self.cfg.port))
            self.port = sock.getsockname()[1]
            ssl_ctx = rules.server_ssl_context(self.cfg.tls)
            await web.SockSite(self._runner, sock, ssl_context=ssl_ctx).start()
            warning = rules.clear_token_warning(self.cfg)
            if warning:
                log.warning("%s", warning)
            self.metrics.start_periodic()
            await self._refresh_fleet()
            self._fleet_task = asyncio.get_running_loop().create_task(self._fleet_loop())
        host = self.cfg.host if self.cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if self.cfg.tls.enabled else "http"
        return f"{scheme}://{host}:{self.port}"

    async def _handle(self, request: Any) -> Any:
        reply = await self._answer(request)
        self.metrics.recorder.add(
            "log_capturer_http_requests_total", 1, {"code": str(reply.status)}
        )
        self.metrics.maybe_push()
        from aiohttp import web

        return web.Response(
            status=reply.status,
            body=reply.encode(),
            content_type="application/json",
            headers=reply.headers,
        )

    async def _answer(self, request: Any) -> rules.HttpReply:
        early = rules.check_request(
            request.method,
            request.path,
            request.headers.get("Authorization"),
            request.content_length,
            self.token,
            self.cfg.max_body_bytes,
        )
        if early is not None:
            return early
        try:
            body = await request.read()
        except Exception:  # aiohttp's own "payload too large" (no Content-Length)
            return rules.too_large(self.cfg.max_body_bytes)
        if len(body) > self.cfg.max_body_bytes:
            return rules.too_large(self.cfg.max_body_bytes)
        lines = rules.lines_of_body(body, request.content_type)
        if isinstance(lines, rules.HttpReply):
            return lines
        n = lines.count(b"\n") + 1
        if time.monotonic() < self._unavailable_until:
            return rules.unavailable()
        if self._inflight and self._inflight + n > self.max_inflight:
            return rules.busy()
        self._inflight += n
        try:
            result = await self._ship(lines, n, time.time())
        finally:
            self._inflight -= n
        self.run.record(result)
        reply = rules.reply_for(result)
        if reply.status == 503:
            # Kafka is refusing and the DLQ is full: refuse at once for a while instead
            # of taking requests that would end the same way.
            self._unavailable_until = time.monotonic() + 5.0
        self.metrics.recorder.add(
            "log_capturer_source_lines_total", result.submitted, {"source": "http"}
        )
        return reply

    # ------------------------------------------------------------------ spreading

    async def _refresh_fleet(self) -> None:
        try:
            fleet = await self.wiring.supervisor().fleet.remote()
        except Exception as exc:  # the supervisor restarts: keep what is known
            log.debug("could not ask the supervisor for the fleet: %s", exc)
            return
        self.spreader.set_pipelines(sorted({*fleet, self.wiring.node}))
        for key in list(self._routers):
            # Gone, or back under its name with a new Router.
            if key not in fleet or fleet[key]["node_id"] != self._router_ids.get(key):
                del self._routers[key]
        self._router_ids = {key: info["node_id"] for key, info in fleet.items()}

    async def _fleet_loop(self) -> None:
        while True:
            await asyncio.sleep(self.wiring.config.fleet.reconcile_interval)
            await self._refresh_fleet()

    def _router(self, key: str) -> RouterHandle:
        handle = self._routers.get(key)
        if handle is None:
            handle = self._routers[key] = self.wiring.on_node(key, "").router()
        return handle

    def _order(self, key: str) -> Order:
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        return (self.feeder.source, seq)

    async def _ship(self, lines: bytes, n: int, now: float) -> SubmissionResult:
        """One request's lines to a node pipeline: this node's own (straight to its
        Batchers) unless another has fewer of this intake's entries in flight (through
        its Router). If that node is lost meanwhile, the request, still held here, goes
        to this node's pipeline and is counted as resent (Kafka may hold part of it)."""
        me = self.wiring.node
        key = self.spreader.pick(prefer=me) or me
        self.spreader.add(key, n)
        try:
            if key != me:
                try:
                    payload: bytes | Stored = (
                        Stored.put(lines) if len(lines) >= STORE_MIN_BYTES else lines
                    )
                    result: SubmissionResult = await self._router(key).submit_lines.remote(
                        payload, now, 1, self._order(key), None
                    )
                    return result
                except Exception as exc:  # the node (or its Router) is gone
                    log.warning("node %s failed a request of %d lines (%s); sending it on "
                                "this node", key, n, str(exc).splitlines()[0][:200])  # fmt: skip
                    self._routers.pop(key, None)
                    self.metrics.recorder.add(
                        "log_capturer_source_resent_total", n, {"source": "http"}
                    )
            prep = self.intake.prepare_lines(lines, 1)
            return await self.feeder.collect(prep, self.feeder.hand_over(prep, now), now)
        finally:
            self.spreader.done(key, n)

    def run_stats(self) -> RunStats:
        """In, delivered, to the DLQ (by reason), failed: the requests' entries so far."""
        return self.run

    async def stop_reading(self) -> int:
        """Take no more requests (the port is released)."""
        await self.stop()
        return 0

    async def stop(self) -> None:
        if self._fleet_task is not None:
            self._fleet_task.cancel()
            self._fleet_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.metrics.push_now()


def start_file_source(wiring: Wiring) -> Any:
    """Create (or find) the node's file source, pinned to the node."""
    return named_actor(
        FileSourceActor,
        wiring.source_name("files"),
        wiring.namespace,
        64,
        **wiring.placement("source"),
    ).remote(wiring)


def start_http_source(wiring: Wiring, env: dict[str, str] | None = None) -> Any:
    """Create (or find) the node's HTTP intake; ``env`` reaches its process (the token)."""
    extra: dict[str, Any] = dict(wiring.placement("source"))
    if env:
        extra["runtime_env"] = {"env_vars": env}
    return named_actor(
        HttpSourceActor, wiring.source_name("http"), wiring.namespace, 1024, **extra
    ).remote(wiring)
