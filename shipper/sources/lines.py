"""Cutting a stream of bytes into whole lines, with a cap and a flush timeout.

Data arrives in arbitrary pieces (a pipe hands over what was written, a file what was
appended). :class:`LineCutter` keeps the unfinished last line until its newline comes,
and hands out blobs that end on a line boundary. Two limits keep it bounded:

- a line longer than ``max_line`` bytes is cut: its first ``max_line`` bytes go on as
  the line, the rest up to the next newline is dropped and counted (``cut`` lines,
  ``cut_bytes`` bytes);
- a last line without a newline is held at most ``partial_timeout`` seconds, then
  sent as it is (:meth:`flush`); what follows it until the newline becomes a line of
  its own, so nothing is lost.

Every byte fed is either handed out, dropped and counted, or held in
:attr:`pending`: a reader at position ``p`` of its input has handed out (or dropped)
everything before ``p - pending``, which is the position to checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LineCutter", "lines_end", "split_lines"]


def lines_end(data: bytes, max_lines: int) -> int:
    """The length of the prefix of ``data`` that holds its first ``max_lines`` newlines
    (all of ``data`` when it holds no more). Counted at C speed: a guess from the
    average line length, then a walk to the exact newline."""
    total = data.count(b"\n")
    if total <= max_lines:
        return len(data)
    guess = len(data) * max_lines // total
    seen = data.count(b"\n", 0, guess)
    if seen < max_lines:
        # The next newline at or after the guess is the (seen + 1)-th: walk forward.
        pos = guess
        for _ in range(max_lines - seen):
            pos = data.find(b"\n", pos) + 1
        return pos
    # The last newline before the guess is the seen-th: walk back to the max_lines-th.
    nl = data.rfind(b"\n", 0, guess)
    for _ in range(seen - max_lines):
        nl = data.rfind(b"\n", 0, nl)
    return nl + 1


def split_lines(blob: bytes, max_lines: int) -> list[bytes]:
    """``blob`` (whole lines) in pieces of at most ``max_lines`` lines."""
    out = []
    while blob:
        end = lines_end(blob, max_lines)
        out.append(blob[:end])
        blob = blob[end:]
    return out


class LineCutter:
    """Turns appended bytes into blobs of whole lines. Not thread-safe."""

    def __init__(
        self,
        max_line: int,
        partial_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_line = max_line
        self.partial_timeout = partial_timeout
        self.clock = clock
        self._rest = b""
        self._rest_since = 0.0
        self._dropping = False  # inside a line already cut: drop up to its newline
        self.cut = 0
        self.cut_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held back: the unfinished last line."""
        return len(self._rest)

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; return the whole lines it completes, each with its newline."""
        if not data:
            return b""
        if self._dropping:
            nl = data.find(b"\n")
            if nl < 0:
                self.cut_bytes += len(data)
                return b""
            self.cut_bytes += nl
            self._dropping = False
            data = data[nl + 1 :]
        buf = self._rest + data if self._rest else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            whole, rest = b"", buf
        else:
            whole, rest = buf[: cut + 1], buf[cut + 1 :]
        if len(whole) > self.max_line and _longest(whole) > self.max_line:
            whole = self._cap(whole)
        if len(rest) > self.max_line:
            # Too long already and no newline yet: its head goes now, the rest of it is
            # dropped as it arrives.
            self.cut += 1
            self.cut_bytes += len(rest) - self.max_line
            whole += rest[: self.max_line] + b"\n"
            rest = b""
            self._dropping = True
        if rest and (cut >= 0 or not self._rest):
            self._rest_since = self.clock()  # a new unfinished line starts waiting
        self._rest = rest
        return whole

    def due(self) -> bool:
        """Whether the unfinished last line has waited ``partial_timeout``."""
        return bool(self._rest) and self.clock() - self._rest_since >= self.partial_timeout

    def flush(self) -> bytes:
        """The unfinished last line, as a line of its own."""
        rest, self._rest = self._rest, b""
        return rest + b"\n" if rest else b""

    def _cap(self, blob: bytes) -> bytes:
        out = []
        for line in blob.split(b"\n")[:-1]:
            if len(line) > self.max_line:
                self.cut += 1
                self.cut_bytes += len(line) - self.max_line
                line = line[: self.max_line]
            out.append(line)
        return b"\n".join(out) + b"\n"


def _longest(blob: bytes) -> int:
    """Length of the longest line of ``blob`` (newline-separated)."""
    longest = start = 0
    while True:
        nl = blob.find(b"\n", start)
        if nl < 0:
            return max(longest, len(blob) - start)
        longest = max(longest, nl - start)
        start = nl + 1
