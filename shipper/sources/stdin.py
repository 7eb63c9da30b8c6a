"""Reading a stream (stdin, a pipe, a file) as data arrives, stoppable at once.

A blocking ``read(1 MiB)`` on a pipe waits until a whole MiB is there or the writer
closes: ``tail -F app.log | shipper run`` then ships nothing while the pipe stays
open. :class:`StreamReader` instead waits for the descriptor to be readable (with a
short timeout, so a stop request is seen at once), takes whatever is there, keeps
taking while more is immediately available (up to ``read_bytes``), and hands out the
whole lines of it. A line reaches the pipeline as soon as its newline has been
read; a last line without a newline goes after ``partial_timeout``. With a
:class:`~shipper.sources.multiline.Combiner` the lines are grouped into entries first
(a held entry goes after its ``timeout``, and at the end of input).
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterator

from shipper.sources.lines import LineCutter
from shipper.sources.multiline import Combiner

__all__ = ["StreamReader"]


class StreamReader:
    """Whole-line blobs from descriptor ``fd`` until end of input or ``stopped()``.

    ``poll`` bounds how long a stop request waits to be seen; ``idle`` runs after every
    ``poll`` in which nothing came (the caller's chance to act while the input is
    quiet). On end of input or stop, what was read is handed out too (an unfinished
    last line as a line of its own).
    """

    def __init__(
        self,
        fd: int,
        cutter: LineCutter,
        read_bytes: int = 1 << 20,
        stopped: Callable[[], bool] = lambda: False,
        poll: float = 0.1,
        combiner: Combiner | None = None,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        self.idle = idle
        self.cutter = cutter
        self.read_bytes = read_bytes
        self.stopped = stopped
        self.poll = poll
        self.combiner = combiner
        self.bytes_read = 0
        #: input lines handed out so far (with multiline, an entry holds several)
        self.lines = 0

    def _entries(self, blob: bytes, end: bool = False) -> bytes:
        """``blob``'s whole lines as entries (grouped when there is a combiner)."""
        c = self.combiner
        if c is None:
            self.lines += blob.count(b"\n")
            return blob
        out = c.feed(blob)
        data, lines = out.data, out.lines
        if end or c.due():
            rest = c.flush()
            data, lines = data + rest.data, lines + rest.lines
        self.lines += lines
        return data

    def _readable(self, timeout: float) -> bool:
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except InterruptedError:  # a signal arrived; the caller checks stopped()
            return False
        return bool(ready)

    def blobs(self) -> Iterator[bytes]:
        """Yield whole-line blobs as they become available."""
        while not self.stopped():
            if not self._readable(self.poll):
                if self.idle is not None:
                    self.idle()
                idle = self.cutter.flush() if self.cutter.due() else b""
                if idle or (self.combiner is not None and self.combiner.due()):
                    out = self._entries(idle)
                    if out:
                        yield out
                continue
            chunks: list[bytes] = []
            size = 0
            eof = False
            # Take what is there now, up to read_bytes, without waiting for more.
            while size < self.read_bytes:
                try:
                    data = os.read(self.fd, self.read_bytes - size)
                except InterruptedError:
                    break
                if not data:
                    eof = True
                    break
                chunks.append(data)
                size += len(data)
                if not self._readable(0):
                    break
            self.bytes_read += size
            blob = self.cutter.feed(b"".join(chunks)) if chunks else b""
            if eof:
                blob += self.cutter.flush()
            blob = self._entries(blob, end=eof)
            if blob:
                yield blob
            if eof:
                return
        rest = self._entries(self.cutter.flush(), end=True)
        if rest:
            yield rest
