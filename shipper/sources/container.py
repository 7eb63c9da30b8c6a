"""Container log files: the CRI format (containerd, CRI-O) and Docker's json-file.

Kubernetes nodes keep each container's output in files whose lines carry a prefix:

- CRI: ``2026-01-01T00:00:00.123456789Z stdout F the message`` (``P`` instead of
  ``F`` for a partial line: the runtime split a long line, the next ones continue it);
- Docker json-file: ``{"log":"the message\\n","stream":"stdout","time":"..."}`` (a
  ``log`` without its final newline is a partial line).

:class:`ContainerDecoder` turns such lines into :class:`Record` s: the message (partial
lines joined with the line that ends them), its timestamp and its stream. With
``format: auto`` each line is taken for what it looks like. A line that is not in the
format is shipped as a plain line and counted (:attr:`ContainerDecoder.bad`, metric
kind ``bad_format``), never dropped.

:func:`pod_labels` reads ``namespace``, ``pod`` and ``container`` from the file's
path under ``/var/log/containers/`` or ``/var/log/pods/`` (no API server call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ["ContainerDecoder", "Record", "pod_labels", "record_line"]

# /var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log
_CONTAINERS = re.compile(r"/containers/([^/_]+)_([^/_]+)_(.+)-[0-9a-f]{64}\.log$")
# /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log
_PODS = re.compile(r"/pods/([^/_]+)_([^/_]+)_[^/]+/([^/]+)/[^/]+\.log$")


class _DockerLine(msgspec.Struct):
    log: str
    stream: str | None = None
    time: str | None = None


_docker = msgspec.json.Decoder(_DockerLine)
_decode_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder()


@dataclass(slots=True)
class Record:
    """One whole message read from a container log, with what its prefix said."""

    message: bytes
    timestamp: str | None = None
    stream: str | None = None
    #: file bytes (newlines included) of the lines it was read from
    size: int = 0
    #: file lines it was read from
    lines: int = 1


@dataclass
class ContainerDecoder:
    """Container log lines into records (see the module docstring). Not thread-safe."""

    format: str  # "cri", "docker" or "auto"
    #: lines not in the format, shipped as plain lines
    bad: int = 0
    _parts: list[bytes] = field(default_factory=list)
    _size: int = 0
    _first: tuple[str | None, str | None] = (None, None)

    @property
    def pending_bytes(self) -> int:
        """File bytes of partial lines held until the line that ends them."""
        return self._size

    @property
    def pending_lines(self) -> int:
        return len(self._parts)

    def feed(self, blob: bytes) -> list[Record]:
        """Whole lines (``blob`` ends with a newline) into the records they complete."""
        out: list[Record] = []
        for line in blob.split(b"\n")[:-1]:
            self._line(line, out)
        return out

    def flush(self) -> list[Record]:
        """Partial lines still held, as a record (their ending line never came)."""
        if not self._parts:
            return []
        ts, stream = self._first
        rec = Record(b"".join(self._parts), ts, stream, self._size, len(self._parts))
        self._parts, self._size = [], 0
        return [rec]

    def _line(self, line: bytes, out: list[Record]) -> None:
        fmt = self.format
        if fmt == "auto":
            fmt = "docker" if line.startswith(b'{"log"') else "cri"
        parsed = _cri(line) if fmt == "cri" else _docker_line(line)
        if parsed is None:
            self.bad += 1
            out.extend(self.flush())
            out.append(Record(line, size=len(line) + 1))
            return
        text, ts, stream, partial = parsed
        if not self._parts:
            self._first = (ts, stream)
        self._parts.append(text)
        self._size += len(line) + 1
        if not partial:
            first_ts, first_stream = self._first
            out.append(
                Record(b"".join(self._parts), first_ts, first_stream, self._size, len(self._parts))
            )
            self._parts, self._size = [], 0


_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}


def _cri(line: bytes) -> tuple[bytes, str, str, bool] | None:
    # "<time> <stream> <P|F> <message>": split, not a regex (this runs per line).
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    stream = _STREAMS.get(parts[1])
    tag = parts[2]
    if stream is None or tag not in (b"P", b"F") or not parts[0][:1].isdigit():
        return None
    text = parts[3] if len(parts) == 4 else b""
    return text, parts[0].decode("ascii", "replace"), stream, tag == b"P"


def _docker_line(line: bytes) -> tuple[bytes, str | None, str | None, bool] | None:
    try:
        d = _docker.decode(line)
    except msgspec.MsgspecError:
        return None
    text = d.log.encode("utf-8", "surrogatepass")
    partial = not text.endswith(b"\n")
    return (text if partial else text[:-1]), d.time, d.stream, partial


def record_line(rec: Record, message: bytes | None = None) -> bytes:
    """``rec`` as one input line (with its newline) for the intake: a JSON object whose
    message is the record's, with its timestamp and a ``stream`` label. A message that
    is itself a JSON object keeps its own keys (its own timestamp and labels win)."""
    text = rec.message if message is None else message
    obj: dict[str, Any] | None = None
    stripped = text.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        try:
            decoded = _decode_any.decode(stripped)
        except msgspec.MsgspecError:
            decoded = None
        if isinstance(decoded, dict) and (
            "message" in decoded or "msg" in decoded or "log" in decoded
        ):
            obj = decoded
    if obj is None:
        obj = {"message": text.decode("utf-8", "replace")}
    if rec.timestamp and obj.get("timestamp") is None:
        obj["timestamp"] = rec.timestamp
    if rec.stream:
        labels = obj.get("labels")
        if not isinstance(labels, dict):
            labels = {}
        obj["labels"] = {"stream": rec.stream, **labels}
    return _encode.encode(obj) + b"\n"


def pod_labels(path: str) -> dict[str, str]:
    """``namespace``, ``pod`` and ``container`` from a Kubernetes log file's path."""
    m = _CONTAINERS.search(path)
    if m is not None:
        return {"pod": m.group(1), "namespace": m.group(2), "container": m.group(3)}
    m = _PODS.search(path)
    if m is not None:
        return {"namespace": m.group(1), "pod": m.group(2), "container": m.group(3)}
    return {}
