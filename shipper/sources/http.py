"""The HTTP intake's rules, without a server: what a request may be, what it is answered.

``POST /v1/logs`` (over HTTPS, and mutual TLS, with ``sources.http.tls``) takes NDJSON
(one entry per line, JSON or plain text) or a JSON array of entries, and is answered
once every accepted entry is acknowledged::

    200  {"accepted": 998, "delivered": 998, "dlq": 0,
          "rejected": [{"line": 3, "reason": "serialization_error", "error": "..."}]}

The good lines of a request go even when some are bad; the bad ones are listed by
line number (for an array: by element, counted from 1). The other answers:

====  ==========================================================================
400   the body is not NDJSON or a JSON array (nothing of it was taken)
401   a token is configured and the request has no ``Authorization: Bearer <token>``
404   another path; 405 another method
413   the body is larger than ``max_body_bytes``
429   the intake has as much in flight as it takes; ``Retry-After`` says when to retry
503   Kafka is refusing (breaker open) and the DLQ is full, or the DLQ refused part of
      this request; ``Retry-After`` says when to retry (send the whole request again)
====  ==========================================================================
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

import msgspec

from shipper.config.sources import HttpSourceConfig, HttpTlsConfig
from shipper.outcomes import SubmissionResult

__all__ = [
    "LOGS_PATH",
    "HttpReply",
    "check_request",
    "clear_token_warning",
    "lines_of_body",
    "reply_for",
    "server_ssl_context",
]

LOGS_PATH = "/v1/logs"


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What to answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body)


def _error(status: int, text: str, retry_after: int | None = None) -> HttpReply:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return HttpReply(status, {"error": text}, headers)


def check_request(
    method: str,
    path: str,
    authorization: str | None,
    content_length: int | None,
    token: str | None,
    max_body_bytes: int,
) -> HttpReply | None:
    """The answer to give without reading the body, or None to go on."""
    if path.rstrip("/") != LOGS_PATH:
        return _error(404, f"not found: POST log entries to {LOGS_PATH}")
    if method != "POST":
        return HttpReply(405, {"error": f"use POST on {LOGS_PATH}"}, {"Allow": "POST"})
    if token is not None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        # Compared in constant time; the token is never echoed.
        if not authorization or not hmac.compare_digest(given.encode(), token.encode()):
            return HttpReply(
                401,
                {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                {"WWW-Authenticate": "Bearer"},
            )
    if content_length is not None and content_length > max_body_bytes:
        return too_large(max_body_bytes)
    return None


def too_large(max_body_bytes: int) -> HttpReply:
    return _error(
        413,
        f"request body larger than max_body_bytes ({max_body_bytes} bytes); send fewer "
        "entries per request",
    )


def busy(retry_after: int = 1) -> HttpReply:
    return _error(
        429,
        "the shipper has as much in flight as it takes; retry after the given seconds",
        retry_after,
    )


def unavailable(retry_after: int = 5) -> HttpReply:
    return _error(
        503,
        "Kafka is not taking entries and the DLQ is full; nothing of this request is "
        "kept; retry after the given seconds",
        retry_after,
    )


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def lines_of_body(body: bytes, content_type: str | None) -> bytes | HttpReply:
    """The request's entries as newline-separated lines, or a 400 answer.

    A body that starts with ``[`` (after white space) is a JSON array: each element
    becomes one line (compacted when it spans lines). Anything else is NDJSON.
    """
    head = body.lstrip()
    if not head.startswith(b"["):
        return body
    try:
        items = _raw_list.decode(body)
    except msgspec.DecodeError as exc:
        return _error(400, f"the body starts with '[' but is not a JSON array: {exc}")
    lines = []
    for raw in items:
        item = bytes(raw)
        if b"\n" in item or b"\r" in item:
            item = msgspec.json.encode(msgspec.json.decode(item))
        lines.append(item)
    return b"\n".join(lines)


def reply_for(result: SubmissionResult) -> HttpReply:
    """The answer once every accepted entry has an outcome."""
    refused = sorted(
        (f for f in [*result.dead_lettered, *result.failures] if f.line is not None),
        key=lambda f: f.line or 0,
    )
    rejected = [{"line": f.line, "reason": str(f.reason), "error": f.error} for f in refused]
    body = {
        "accepted": result.submitted - len(rejected),
        "delivered": result.delivered,
        "dlq": result.dlq,
        "rejected": rejected,
    }
    if result.dlq_refused:
        # Part of the request is in neither Kafka nor the DLQ: the sender still has it.
        body["error"] = (
            f"{result.dlq_refused} entries could not be kept (Kafka refused them and the "
            "DLQ is full); send the request again later"
        )
        return HttpReply(503, body, {"Retry-After": "5"})
    failed = [f for f in result.failures if f.line is None]
    if failed:
        body["failed"] = len(failed)
    return HttpReply(200, body, {})


def server_ssl_context(tls: HttpTlsConfig) -> ssl.SSLContext | None:
    """The intake's TLS context: None for plain HTTP; HTTPS with ``cert_file`` and
    ``key_file``; clients must present a certificate signed by ``client_ca_file`` when
    that is set (mutual TLS). TLS 1.2 at least."""
    if not tls.enabled:
        return None
    assert tls.cert_file is not None and tls.key_file is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def clear_token_warning(cfg: HttpSourceConfig) -> str | None:
    """A warning when a bearer token would travel in clear: a token is configured, the
    intake serves plain HTTP, and it listens beyond the loopback interface."""
    if not cfg.enabled or cfg.auth_token_env is None or cfg.tls.enabled or _loopback(cfg.host):
        return None
    return (
        f"warning: the HTTP intake on {cfg.host}:{cfg.port} takes a bearer token "
        f"(${cfg.auth_token_env}) over plain HTTP, so the token travels in clear; set "
        "sources.http.tls.cert_file and key_file for HTTPS, or listen on 127.0.0.1"
    )
