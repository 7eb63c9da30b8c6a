"""Wake-ups on file-system events, so new lines are read when they are written.

The file source checks its files every ``poll_interval`` whatever happens; on Linux
it also watches the directories that hold them (inotify, through libc) and reads as
soon as one of them reports a change. A watch is only a hint: polling stays, so a
file system without events (NFS, FUSE), a directory the globs reach through ``**``,
or a host out of inotify watches is still followed, at the polling pace.

:class:`DirWatch` is a plain object around the inotify descriptor: the caller puts
``fd`` in its event loop and calls :meth:`DirWatch.take` when it is readable.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Changes", "DirWatch", "WatchUnavailable", "watched_dirs"]

# <sys/inotify.h>
IN_MODIFY = 0x0002
IN_ATTRIB = 0x0004
IN_CLOSE_WRITE = 0x0008
IN_MOVED_FROM = 0x0040
IN_MOVED_TO = 0x0080
IN_CREATE = 0x0100
IN_DELETE = 0x0200
IN_DELETE_SELF = 0x0400
IN_MOVE_SELF = 0x0800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000

_DATA = IN_MODIFY | IN_CLOSE_WRITE
#: Events after which the globs are worth checking again at once (a file came, went or
#: was renamed; or events were lost).
_LAYOUT = (
    IN_ATTRIB
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_Q_OVERFLOW
    | IN_IGNORED
)
_MASK = _DATA | (_LAYOUT & ~(IN_Q_OVERFLOW | IN_IGNORED)) | IN_ONLYDIR
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class WatchUnavailable(OSError):
    """No inotify here (not Linux, or no instance left): the source polls only."""


@dataclass(slots=True)
class Changes:
    """What the events read by one :meth:`DirWatch.take` said."""

    data: bool = False  # something was written to a file in a watched directory
    layout: bool = False  # files came, went or were renamed (or events were lost)

    def __bool__(self) -> bool:
        return self.data or self.layout


def watched_dirs(patterns: Iterable[str], files: Iterable[str]) -> set[str]:
    """The directories to watch: each glob's deepest directory without a wildcard (a
    ``*.log`` in it appears there), and the directory of every file followed now (a
    renamed file may still be written to until its writer reopens)."""
    dirs: set[str] = set()
    for pattern in patterns:
        parent = os.path.dirname(pattern)
        while parent and glob.has_magic(parent):
            parent = os.path.dirname(parent)
        dirs.add(parent or ".")
    for path in files:
        dirs.add(os.path.dirname(path) or ".")
    return dirs


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise WatchUnavailable(errno.ENOSYS, "file-system events need Linux (inotify)")
    lib = ctypes.CDLL(None, use_errno=True)
    if not hasattr(lib, "inotify_init1"):
        raise WatchUnavailable(errno.ENOSYS, "this C library has no inotify")
    return lib


class DirWatch:
    """Directories watched for changes to the files in them. Not thread-safe."""

    def __init__(self) -> None:
        self._lib = _libc()
        fd = self._lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise WatchUnavailable(err, f"no inotify instance: {os.strerror(err)}")
        self.fd: int = fd
        self._by_dir: dict[str, int] = {}
        self._by_wd: dict[int, str] = {}
        self._refused: dict[str, int] = {}  # dir -> errno of its last failed watch
        #: Directories the last :meth:`update` began to watch: a file created in one
        #: between the caller's last look and the watch was not reported.
        self.added = 0

    @property
    def dirs(self) -> set[str]:
        return set(self._by_dir)

    def update(self, dirs: set[str]) -> list[tuple[str, int]]:
        """Watch exactly ``dirs`` (those that exist). Returns the directories that could
        not be watched for a reason other than not existing, with the errno, each once
        until it changes: e.g. ``ENOSPC`` when ``fs.inotify.max_user_watches`` is
        reached."""
        for d in set(self._by_dir) - dirs:
            wd = self._by_dir.pop(d)
            self._by_wd.pop(wd, None)
            self._lib.inotify_rm_watch(self.fd, wd)  # may be gone already: no matter
        problems: list[tuple[str, int]] = []
        self.added = 0
        self._refused = {d: e for d, e in self._refused.items() if d in dirs}
        for d in sorted(dirs - set(self._by_dir)):
            wd = self._lib.inotify_add_watch(self.fd, os.fsencode(d), _MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err not in (errno.ENOENT, errno.ENOTDIR) and self._refused.get(d) != err:
                    problems.append((d, err))
                self._refused[d] = err
                continue
            self._refused.pop(d, None)
            # A directory replaced by another of the same name gets a new wd; the old
            # one's IN_IGNORED arrives later and must not drop the new one.
            self._by_dir[d] = wd
            self._by_wd[wd] = d
            self.added += 1
        return problems

    def take(self) -> Changes:
        """Read every waiting event (never blocks) and say what they were about."""
        out = Changes()
        while True:
            try:
                buf = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return out
            except InterruptedError:
                continue
            if not buf:
                return out
            pos = 0
            while pos + _HEADER.size <= len(buf):
                wd, mask, _cookie, length = _HEADER.unpack_from(buf, pos)
                pos += _HEADER.size + length
                if wd not in self._by_wd and not mask & IN_Q_OVERFLOW:
                    continue  # a directory dropped by update(): its last events
                if mask & _DATA:
                    out.data = True
                if mask & _LAYOUT:
                    out.layout = True
                if mask & (IN_IGNORED | IN_MOVE_SELF):
                    # The directory went, was unmounted or was renamed (its watch would
                    # follow it to its new name): watched again by the next update once
                    # a directory of that name is there.
                    d = self._by_wd.pop(wd, None)
                    if d is not None and self._by_dir.get(d) == wd:
                        del self._by_dir[d]
                    if mask & IN_MOVE_SELF:
                        self._lib.inotify_rm_watch(self.fd, wd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._by_dir.clear()
        self._by_wd.clear()
