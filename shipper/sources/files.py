"""Files followed like ``tail -F``: discovery, identity, rotation, read positions.

A file is known by its identity, not its name: device and inode, plus a fingerprint
(sha256) of its first bytes (up to 1 KiB, recomputed while the file is shorter), so a
reused inode or a file truncated under us is recognised. :class:`FileTailer` is driven
by the source actor:

- :meth:`FileTailer.scan` expands the globs. A file that starts to match is picked
  up: at its checkpoint when one exists for its identity, else at its beginning (or,
  for the files there at the first scan, at the end, by ``start_at``). The identity
  is the opened file's own (a rotation between the stat and the open cannot pair a
  name with another file), and an empty file waits until it has bytes. A known
  identity under a new name is the same file renamed
  (rotation by rename): it goes on where it was, and a file that is renamed away from
  every glob, or deleted, is still read to its end and released once idle.
- A file shorter than the position read is truncated (rotation by copy and
  truncate): it starts over at 0. A new file whose first bytes are those of a
  truncated file is its copy and continues where the original was; a copy found
  before its original was truncated waits for that, and is skipped as a duplicate if
  the original is never truncated; a copy still being written (a prefix of those
  bytes, or shorter than what was read) waits for the rest. Every read checks the
  first bytes again, so new content is never read as the rest of the old.
- :meth:`FileTailer.read` reads what was appended, cut into whole lines
  (:class:`~shipper.sources.lines.LineCutter`), as :class:`Block` s: the bytes, the
  file offsets they cover and their first line number. The caller hands a block over,
  and reports its acknowledgement to :meth:`FileTailer.acked`; positions are
  checkpointed only for acknowledged prefixes (:mod:`shipper.sources.checkpoints`).

Trouble never stops the other files: an unreadable file, a permission denied, a glob
that matches nothing, a binary file, a file truncated below its checkpoint, a damaged
or full checkpoint store each produce a :class:`Notice` (a log line and a metric
label for the caller) and the file is skipped, retried or restarted as fits.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shipper.config.sources import FILE_LABEL, FileGroupConfig, TailConfig
from shipper.sources.checkpoints import AckTracker, Checkpoint, CheckpointError, CheckpointStore
from shipper.sources.container import ContainerDecoder, pod_labels, record_line
from shipper.sources.lines import LineCutter, lines_end
from shipper.sources.multiline import Combiner, rule_of

__all__ = ["FP_BYTES", "Block", "FileTailer", "Notice"]

#: Bytes at the head of a file that its fingerprint covers (fewer while it is shorter).
FP_BYTES = 1024
# Fewer first bytes than this say too little to call another file a copy of it.
_MIN_FP = 64
_BINARY_PROBE = 4096
#: The first read of a file that has a backlog takes this much, and each read that
#: fills its size doubles it, up to ``read_bytes``: the first entries are on their way
#: soon, and a long backlog still goes in large blocks (few Ray calls). 1 MiB of
#: typical lines fills a batch per topic; 256 KiB measured no sooner to Kafka.
RAMP_FIRST_BYTES = 1 << 20
_REWRITTEN = "starts with other bytes than it did (truncated and written again)"


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines read from one file: ``data`` covers file bytes ``[start, end)``."""

    key: str
    path: str
    start: int
    end: int
    first_line: int
    lines: int
    data: bytes
    labels: dict[str, str]
    seq: int = 0  # the block's number for its file (see AckTracker)
    gen: int = 0  # the file's generation: a truncation starts a new one
    #: file bytes each entry of ``data`` was read from, when not the line itself
    #: (multiline, container formats); for stable entry ids
    sizes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the operator should hear about: ``kind`` is a metric label."""

    kind: str
    path: str
    text: str


@dataclass(eq=False)
class _File:
    key: str
    path: str
    group: int
    dev: int
    ino: int
    fd: int
    fp_len: int
    fp: str
    head: bytes  # the first fp_len bytes (a copy being written is a prefix of them)
    pos: int  # bytes read from the file (the cutter may hold some back)
    line: int  # lines handed out
    boundary: int  # end of the last block handed out
    cutter: LineCutter
    labels: dict[str, str]
    last_data: float
    matched: bool = True
    checked_binary: bool = False
    gen: int = 0
    ramp: int = 0  # the most bytes the next read may take (see FileTailer.read)
    combiner: Combiner | None = None  # groups lines into entries (multiline)
    decoder: ContainerDecoder | None = None  # container log lines (format: cri, docker)


@dataclass
class _Truncated:
    head: bytes  # the first bytes the file had before it was truncated
    pos: int
    line: int
    since: float


def _digest(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:32]


def _fingerprint(fd: int, length: int) -> str:
    return _digest(os.pread(fd, length, 0))


def _count_lines(fd: int, end: int) -> int:
    n = off = 0
    while off < end:
        chunk = os.pread(fd, min(1 << 20, end - off), off)
        if not chunk:
            break
        n += chunk.count(b"\n")
        off += len(chunk)
    return n


def _key(dev: int, ino: int) -> str:
    return f"{dev}:{ino}"


class FileTailer:
    """Follows the files of ``groups``; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        groups: Sequence[FileGroupConfig],
        store: CheckpointStore,
        tail: TailConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.groups = list(groups)
        self.store = store
        self.tail = tail
        self.clock = clock
        self.wall = wall
        self.files: dict[str, _File] = {}
        self.acks = AckTracker()
        self.notices: list[Notice] = []
        self.resent_lines = 0  # lines handed over before a crash and read again
        self.cut_lines = 0
        self.multiline_cut = 0  # entries cut at multiline.max_lines / max_bytes
        self.bad_format = 0  # container lines not in their format (shipped as plain lines)
        self._checkpoints: dict[str, Checkpoint] = {}
        self._dirty: dict[str, Checkpoint] = {}
        self._gone: set[str] = set()
        self._truncated: dict[str, _Truncated] = {}
        self._copies: dict[tuple[int, int], float] = {}  # waiting copies: first seen
        self._skipped: set[tuple[int, int]] = set()  # duplicates, binaries
        self._warned: dict[str, str] = {}  # path -> last notice kind (no repeats)
        self._empty_globs: set[str] = set()
        self._scanned = False  # start_at: end applies to the files of the first scan only
        try:
            self._checkpoints = store.load()
        except CheckpointError as exc:
            self._notice("checkpoint_error", "", str(exc))
        damaged = getattr(store, "damaged", [])
        for key in damaged:
            self._notice("checkpoint_error", key, f"damaged checkpoint record {key}; skipped")

    # ------------------------------------------------------------------ notices

    def _notice(self, kind: str, path: str, text: str, once: bool = False) -> None:
        if once:
            if self._warned.get(path) == kind:
                return
            self._warned[path] = kind
        self.notices.append(Notice(kind, path, text))

    def take_notices(self) -> list[Notice]:
        out, self.notices = self.notices, []
        return out

    # ------------------------------------------------------------------ discovery

    def _matches(self) -> dict[str, int]:
        """Path -> group of every regular file the globs match now (first group wins)."""
        found: dict[str, int] = {}
        for gi, group in enumerate(self.groups):
            for pattern in group.paths:
                hits = sorted(glob.glob(pattern, recursive=True))
                if not hits:
                    if pattern not in self._empty_globs:
                        self._empty_globs.add(pattern)
                        self._notice(
                            "no_match",
                            pattern,
                            f"no file matches {pattern} yet; it is checked again every "
                            f"{self.tail.poll_interval:g}s",
                        )
                    continue
                self._empty_globs.discard(pattern)
                for path in hits:
                    found.setdefault(path, gi)
        return found

    def scan(self) -> None:
        """Pick up new files, follow renames, notice truncation and removal."""
        now = self.clock()
        by_ident = {(f.dev, f.ino): f for f in self.files.values()}
        for f in self.files.values():
            f.matched = False
        new: list[tuple[str, int]] = []
        for path, gi in self._matches().items():
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between the glob and the stat
            if not stat.S_ISREG(st.st_mode):
                continue
            known = by_ident.get((st.st_dev, st.st_ino))
            if known is not None:
                known.matched = True
                if known.path != path:
                    known.path = path  # renamed, and still matched
                    known.labels = self._labels(known.group, path)
                continue
            if (st.st_dev, st.st_ino) in self._skipped:
                continue
            new.append((path, gi))
        for f in list(self.files.values()):
            self._check_truncation(f, now)
        for path, gi in new:
            self._open(path, gi, now)
        self._scanned = True
        self._expire(now)

    def _labels(self, group: int, path: str) -> dict[str, str]:
        # A Kubernetes log file's name says its namespace, pod and container; the
        # group's own labels win.
        return {**pod_labels(path), **self.groups[group].labels, FILE_LABEL: path}

    def _check_truncation(self, f: _File, now: float) -> None:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return
        if size >= f.pos:
            # Not shorter; but truncated and written again past the position between
            # two looks (a busy machine, a fast writer) shows in its first bytes.
            if self._same_head(f):
                return
            self._truncate(f, now, f"{f.path} {_REWRITTEN}")
        else:
            self._truncate(f, now, f"{f.path} shrank from {f.pos} to {size} bytes (truncated)")

    def _same_head(self, f: _File) -> bool:
        """Whether ``f`` still starts with the bytes it did (True when it cannot tell)."""
        try:
            return f.fp_len < _MIN_FP or _fingerprint(f.fd, f.fp_len) == f.fp
        except OSError:
            return True

    def _head_grew(self, f: _File) -> bool:
        """A head shorter than FP_BYTES grows with the file: take the longer one, unless
        it no longer starts with the old (then the file was written anew)."""
        if f.fp_len >= FP_BYTES:
            return True
        try:
            head = os.pread(f.fd, FP_BYTES, 0)
        except OSError:
            return True
        if not head.startswith(f.head):
            return False
        f.head, f.fp_len, f.fp = head, len(head), _digest(head)
        return True

    def _truncate(self, f: _File, now: float, how: str) -> None:
        """``f`` was truncated (copy and truncate): remember what its old content was,
        for its copy, then start over."""
        self._truncated[f"{f.key}/{f.gen}"] = _Truncated(f.head, f.boundary, f.line, now)
        self._notice("truncated", f.path, f"{how}; reading it from its beginning")
        f.pos = f.boundary = 0
        f.line = 0
        f.cutter = self._cutter()
        f.combiner = self._combiner(f.group)
        f.decoder = self._decoder(f.group)
        f.checked_binary = False
        f.ramp = 0
        f.gen += 1
        self.acks.forget(f.key)  # acknowledgements of the old content move nothing now
        self._refingerprint(f)
        self._record(f, offset=0, line=0, sent=(0, 0))

    def _refingerprint(self, f: _File) -> None:
        f.head = os.pread(f.fd, min(FP_BYTES, os.fstat(f.fd).st_size), 0)
        f.fp_len, f.fp = len(f.head), _digest(f.head)

    def _cutter(self) -> LineCutter:
        return LineCutter(self.tail.max_line_bytes, self.tail.partial_line_timeout, self.clock)

    def _decoder(self, group: int) -> ContainerDecoder | None:
        fmt = self.groups[group].format
        return None if fmt == "lines" else ContainerDecoder(fmt)

    def _combiner(self, group: int) -> Combiner | None:
        ml = self.groups[group].multiline
        return None if ml is None else Combiner(rule_of(ml), self.clock)

    def _open(self, path: str, gi: int, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except PermissionError as exc:
            self._notice("permission_denied", path, f"cannot read {path}: {exc.strerror}; "
                         "it is tried again on every scan", once=True)  # fmt: skip
            return
        except OSError as exc:
            self._notice("unreadable", path, f"cannot open {path}: {exc.strerror}", once=True)
            return
        try:
            # The identity and size of the file the descriptor reads, not of the one
            # the name meant at the scan's stat: a rotation in between swaps them.
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            known = any((g.dev, g.ino) == ident for g in self.files.values())
            # An empty file has nothing to read yet and may be a copy about to be
            # written: it is looked at again once it has bytes.
            if known or ident in self._skipped or not stat.S_ISREG(st.st_mode) or not st.st_size:
                os.close(fd)
                return
            head = os.pread(fd, min(FP_BYTES, st.st_size), 0)
        except OSError as exc:
            os.close(fd)
            self._notice("unreadable", path, f"cannot read {path}: {exc.strerror}", once=True)
            return
        self._warned.pop(path, None)
        f = _File(_key(*ident), path, gi, st.st_dev, st.st_ino, fd, len(head), _digest(head),
                  head, 0, 0, 0, self._cutter(), self._labels(gi, path), now,
                  combiner=self._combiner(gi), decoder=self._decoder(gi))  # fmt: skip
        try:
            cp = self._resume_point(f, st.st_size)
        except OSError as exc:
            cp = None
            self._notice("unreadable", path, f"cannot read {path}: {exc.strerror}", once=True)
        if cp is None:
            os.close(fd)
            return  # a copy waiting for its original, or a duplicate: not read now
        self._copies.pop(ident, None)
        f.pos = f.boundary = cp[0]
        f.line = cp[1]
        self.files[f.key] = f
        self._record(f, offset=cp[0], line=cp[1], sent=(cp[0], cp[1]))

    def _waited(self, f: _File) -> bool:
        """Whether a file held back as a possible copy has waited ``close_inactive``."""
        first = self._copies.setdefault((f.dev, f.ino), self.clock())
        return self.clock() - first > self.tail.close_inactive

    def _resume_point(self, f: _File, size: int) -> tuple[int, int] | None:
        """Where to start reading a file met for the first time; None: not now."""
        # 1. A checkpoint of this very file (same inode, same first bytes).
        cp = self._checkpoints.get(f.key)
        if cp is not None and cp.fp_len <= size and _fingerprint(f.fd, cp.fp_len) == cp.fp:
            if cp.sent_line > cp.line:
                self.resent_lines += cp.sent_line - cp.line
            if cp.offset > size:
                self._notice(
                    "truncated",
                    f.path,
                    f"{f.path} is shorter ({size} bytes) than its checkpoint "
                    f"({cp.offset}); reading it from its beginning",
                )
                return 0, 0
            return cp.offset, cp.line
        # 2. The copy of a file that was truncated (copy and truncate rotation): it goes
        # on where the original was. Shorter than that, or only a prefix of the
        # original's first bytes, it is still being written: it waits for a while.
        for tkey, t in list(self._truncated.items()):
            if len(t.head) < _MIN_FP or not t.head.startswith(f.head[: len(t.head)]):
                continue
            if len(f.head) < len(t.head) or t.pos > size:
                if not self._waited(f):
                    return None
                if len(f.head) < len(t.head):
                    break  # stayed a prefix: a file of its own after all
            del self._truncated[tkey]
            if t.pos > size:  # a copy of less than was read: only what comes after
                return size, _count_lines(f.fd, size)
            return t.pos, t.line
        # 3. The copy of a live file whose truncation has not happened (yet): it waits
        # for that, and is skipped as a duplicate if it never comes.
        for other in self.files.values():
            if other.fp_len < _MIN_FP or not other.head.startswith(f.head[: other.fp_len]):
                continue
            if len(f.head) < other.fp_len:
                # A prefix of its first bytes: maybe a copy that is being written.
                if self._waited(f):
                    break
                return None
            if self._waited(f):
                self._copies.pop((f.dev, f.ino), None)
                self._skipped.add((f.dev, f.ino))
                self._notice(
                    "duplicate",
                    f.path,
                    f"{f.path} holds the same data as {other.path} and is skipped",
                )
            return None
        if self.groups[f.group].start_at == "end" and not self._scanned:
            # Only the files there at the start; a file that comes later is all new.
            return size, 0
        return 0, 0

    def _expire(self, now: float) -> None:
        """Release files renamed away or deleted, once read to their end and idle;
        forget truncated content whose copy did not turn up."""
        for tkey, t in list(self._truncated.items()):
            if now - t.since > self.tail.close_inactive:
                del self._truncated[tkey]
        for f in list(self.files.values()):
            if f.matched:
                continue
            try:
                st = os.fstat(f.fd)
            except OSError:
                st = None
            deleted = st is None or st.st_nlink == 0
            at_end = st is None or f.pos >= st.st_size
            idle = now - f.last_data >= self.tail.close_inactive
            if at_end and not f.cutter.pending and (idle or deleted):
                if self.acks.outstanding(f.key):
                    continue  # released once its last blocks are acknowledged
                self._release(f)

    def _release(self, f: _File) -> None:
        os.close(f.fd)
        del self.files[f.key]
        self.acks.forget(f.key)
        self._gone.add(f.key)
        self._dirty.pop(f.key, None)
        self._checkpoints.pop(f.key, None)

    # ------------------------------------------------------------------ reading

    def read(self, budget: int, max_lines: int | None = None) -> list[Block]:
        """Up to about ``budget`` bytes and at most about ``max_lines`` lines (a cut
        long line may add one) of whole lines from the files, fairly."""
        blocks: list[Block] = []
        files = sorted(self.files.values(), key=lambda f: f.last_data)
        share = max(4096, budget // max(1, len(files)))
        for f in files:
            if budget <= 0 or (max_lines is not None and max_lines <= 0):
                break
            want = min(share, budget, self.tail.read_bytes, max(f.ramp, RAMP_FIRST_BYTES))
            block = self._read_one(f, want, max_lines)
            if block is not None:
                blocks.append(block)
                budget -= len(block.data)
                if max_lines is not None:
                    max_lines -= block.lines
        return blocks

    def _read_one(self, f: _File, size: int, max_lines: int | None = None) -> Block | None:
        try:
            data = os.pread(f.fd, size, f.pos)
        except OSError as exc:
            self._notice("unreadable", f.path, f"cannot read {f.path}: {exc.strerror}", once=True)
            return None
        now = self.clock()
        full = len(data) == size
        if max_lines is not None and len(data) > max_lines:
            # Short lines: a block of many of them would overfill a topic's queue (the
            # rest is read next time).
            data = data[: lines_end(data, max_lines)]
        if data:
            if not f.checked_binary:
                f.checked_binary = True
                if b"\x00" in data[:_BINARY_PROBE]:
                    self._notice(
                        "binary",
                        f.path,
                        f"{f.path} looks binary (NUL bytes); it is skipped",
                    )
                    self._skipped.add((f.dev, f.ino))
                    self._release(f)
                    return None
            if not self._same_head(f) or not self._head_grew(f):
                # Truncated and written again past the position since the last look:
                # these bytes are the new content, not the rest of the old one.
                self._truncate(f, now, f"{f.path} {_REWRITTEN}")
                return None
            f.pos += len(data)
            f.last_data = now
            # A full read: more is probably waiting, so the next one may take twice as
            # much; a short one means the file is caught up, and the ramp starts over.
            f.ramp = max(f.ramp, size * 2) if full else 0
            blob = f.cutter.feed(data)
        elif f.cutter.due():
            blob = f.cutter.flush()
        elif (f.combiner is not None and f.combiner.due()) or (
            f.decoder is not None
            and f.decoder.pending_lines
            and now - f.last_data >= self.tail.partial_line_timeout
        ):
            blob = b""
        else:
            return None
        if f.cutter.cut:
            self.cut_lines += f.cutter.cut
            f.cutter.cut = 0
        blob, read_lines, held, sizes = self._entries(f, blob, idle=not data, now=now)
        if not blob:
            return None
        lines = blob.count(b"\n")
        end = f.pos - f.cutter.pending - held
        start, first = f.boundary, f.line + 1
        f.boundary = end
        f.line += read_lines
        seq = self.acks.sent(f.key, end, f.line)
        self._record(f, sent=(end, f.line))
        return Block(f.key, f.path, start, end, first, lines, blob, f.labels, seq, f.gen, sizes)

    def _entries(
        self, f: _File, blob: bytes, idle: bool, now: float
    ) -> tuple[bytes, int, int, tuple[int, ...] | None]:
        """Whole lines into the entries the block carries: container lines decoded
        (partial lines joined), lines grouped (multiline). Returns the entries, the
        file lines they came from, the file bytes held back (partial container
        lines and the entry still being gathered stay out of the block and of the
        position, so a restart reads them again whole), and the file bytes of each
        entry (None: each is its line). (A line cut at max_line_bytes
        counts as cut in the held size, so after one the position may land inside it;
        the cut is counted.)"""
        dec, comb = f.decoder, f.combiner
        if dec is None and comb is None:
            return blob, blob.count(b"\n"), 0, None
        held = 0
        if dec is not None:
            records = dec.feed(blob)
            if idle and dec.pending_lines and now - f.last_data >= self.tail.partial_line_timeout:
                records += dec.flush()  # the line that ends them never came
            if dec.bad:
                self.bad_format += dec.bad
                dec.bad = 0
            held = dec.pending_bytes
            if comb is None:
                out = b"".join(record_line(r) for r in records)
                return out, sum(r.lines for r in records), held, tuple(r.size for r in records)
            got = comb.feed_records(records)
        else:
            assert comb is not None
            got = comb.feed(blob)
        blob, read_lines, sizes = got.data, got.lines, got.sizes
        if comb.due():
            rest = comb.flush()
            blob, read_lines = blob + rest.data, read_lines + rest.lines
            sizes += rest.sizes
        if comb.cut:
            self.multiline_cut += comb.cut
            comb.cut = 0
        return blob, read_lines, held + comb.pending_bytes, sizes

    # ------------------------------------------------------------------ positions

    def _record(
        self,
        f: _File,
        offset: int | None = None,
        line: int | None = None,
        sent: tuple[int, int] | None = None,
    ) -> None:
        """Note a new position of ``f`` (written by the next :meth:`commit`)."""
        cur = self._dirty.get(f.key) or self._checkpoints.get(f.key)
        if cur is None:
            cur = Checkpoint(f.path, f.fp_len, f.fp, f.boundary, f.line, f.boundary, f.line)
        sent_offset, sent_line = sent if sent is not None else (cur.sent_offset, cur.sent_line)
        self._dirty[f.key] = Checkpoint(
            f.path,
            f.fp_len,
            f.fp,
            cur.offset if offset is None else offset,
            cur.line if line is None else line,
            sent_offset,
            sent_line,
            self.wall(),
        )

    def acked(self, block: Block) -> None:
        """``block`` is acknowledged (every entry in Kafka, the DLQ, or counted)."""
        f = self.files.get(block.key)
        if f is None or f.gen != block.gen:
            return  # released, or truncated since: its old content has no position
        moved = self.acks.acked(block.key, block.seq)
        if moved is not None:
            self._record(f, offset=moved[0], line=moved[1])

    def commit(self) -> bool:
        """Write changed positions; False (with a notice) when the store refused."""
        if not self._dirty and not self._gone:
            return True
        changes, gone = dict(self._dirty), set(self._gone)
        try:
            self.store.save(changes, gone)
        except CheckpointError as exc:
            self._notice("checkpoint_error", "", str(exc), once=True)
            return False
        self._warned.pop("", None)
        self._checkpoints.update(changes)
        for key in gone:
            self._checkpoints.pop(key, None)
        self._dirty.clear()
        self._gone.clear()
        return True

    def positions(self) -> dict[str, tuple[str, int, int]]:
        """Per file: path, bytes read, bytes acknowledged (for status output)."""
        out = {}
        for f in self.files.values():
            cp = self._dirty.get(f.key) or self._checkpoints.get(f.key)
            out[f.key] = (f.path, f.pos, cp.offset if cp else 0)
        return out

    def close(self) -> None:
        for f in list(self.files.values()):
            os.close(f.fd)
        self.files.clear()
