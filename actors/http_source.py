"""The HTTP intake actor: ``POST /v1/logs`` on ``sources.http.host:port``.

It serves with aiohttp in the actor's event loop, by the rules of
:mod:`shipper.sources.http` (auth, sizes, replies), and ships each request's lines to
a node pipeline picked by :class:`actors.client.RouterClient`: its own node's (straight
to the Batchers through its :class:`actors.feeder.Feeder`) unless another has fewer of
this intake's entries in flight (then through that node's Router). It speaks the stop
protocol every actor does (:mod:`actors.stopping`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from shipper.intake import Intake
from shipper.outcomes import SubmissionResult
from shipper.sources import http as rules
from shipper.submissions import RunStats

from ._options import actor_logs, announce_start, named_actor, tune_gc
from .client import RouterClient
from .feeder import Feeder
from .payload import STORE_MIN_BYTES, Stored
from .reporter import Reporter
from .wiring import Wiring

__all__ = ["HttpSourceActor", "start_http_source"]

log = logging.getLogger("shipper.sources")


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
        self.client = RouterClient(wiring, prefer=wiring.node)
        self._closed = False
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
        self.client.set_fleet(fleet)

    async def _fleet_loop(self) -> None:
        while True:
            await asyncio.sleep(self.wiring.config.fleet.reconcile_interval)
            await self._refresh_fleet()

    async def _ship(self, lines: bytes, n: int, now: float) -> SubmissionResult:
        """One request's lines to a node pipeline: this node's own (straight to its
        Batchers) unless another has fewer of this intake's entries in flight (through
        its Router). If that node is lost meanwhile, the request, still held here, goes
        to this node's pipeline and is counted as resent (Kafka may hold part of it)."""
        me = self.wiring.node
        key = self.client.pick() or me
        self.client.add(key, n)
        try:
            if key != me:
                try:
                    payload: bytes | Stored = (
                        Stored.put(lines) if len(lines) >= STORE_MIN_BYTES else lines
                    )
                    router = self.client.router(key)
                    result: SubmissionResult = await router.submit_lines.remote(
                        payload, now, 1, self.client.next_order(key), None
                    )
                    return result
                except Exception as exc:  # the node (or its Router) is gone
                    log.warning("node %s failed a request of %d lines (%s); sending it on "
                                "this node", key, n, str(exc).splitlines()[0][:200])  # fmt: skip
                    self.client.lost(key)
                    self.metrics.recorder.add(
                        "log_capturer_source_resent_total", n, {"source": "http"}
                    )
            prep = self.intake.prepare_lines(lines, 1)
            refs = await self.feeder.hand_over(prep, now)
            return await self.feeder.collect(prep, refs, now)
        finally:
            self.client.done(key, n)

    def run_stats(self) -> RunStats:
        """In, delivered, to the DLQ (by reason), failed: the requests' entries so far."""
        return self.run

    # ------------------------------------------------------------------ stop protocol

    async def stop_intake(self) -> None:
        """Take no more requests (the port is released)."""
        if self._fleet_task is not None:
            self._fleet_task.cancel()
            self._fleet_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drain(self, seconds: float) -> int:
        """Wait up to ``seconds`` for the requests in flight; the entries left."""
        deadline = time.monotonic() + seconds
        while self._inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._inflight

    def park(self) -> int:
        """Nothing of its own to park: a request in flight ends with its entries."""
        return 0

    async def close(self) -> dict[str, Any]:
        """Stop serving; what was done: ``run`` (in, delivered, to the DLQ, failed)."""
        await self.stop_intake()
        if not self._closed:
            self._closed = True
            self.metrics.close()
        return {"counts": {}, "run": self.run}


def start_http_source(wiring: Wiring, env: dict[str, str] | None = None) -> Any:
    """Create (or find) the node's HTTP intake; ``env`` reaches its process (the token)."""
    extra: dict[str, Any] = dict(wiring.placement("source"))
    if env:
        extra["runtime_env"] = {"env_vars": env}
    return named_actor(
        HttpSourceActor, wiring.source_name("http"), wiring.namespace, 1024, **extra
    ).remote(wiring)
