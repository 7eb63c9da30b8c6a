"""What the Router does to a submission, without Ray.

A submission arrives either as raw input lines (JSON lines or plain text, from files
and stdin) or as Python objects (from the API). :class:`Intake` decodes and
validates each entry, picks its topic, encodes it once as the Kafka value, enforces
``max_message_bytes``, extracts the partition key, and groups the survivors by topic.
Every entry that cannot go on is returned as an :class:`EntryFailure` with its
reason, so it can be counted and handed to the DLQ path.

A blob whose every line is already a canonical entry takes a fast path: one msgspec
call validates all of it into light structs (no ``LogEntry``, no re-encoding) and the
lines themselves become the Kafka values. Anything else in the blob sends the whole
blob down the general path, so both paths give the same messages (up to key order
and spacing); ``tests/unit/test_intake.py`` holds them to that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from shipper.config import KafkaSinkConfig
from shipper.entries import (
    CANONICAL_LEVELS,
    LogEntry,
    decode_lines,
    encode_entries,
    from_objects,
)
from shipper.errors import EntryError, MessageTooLargeError
from shipper.headers import HeaderMaker, HeaderTable
from shipper.outcomes import EntryFailure
from shipper.packed import Packed
from shipper.partitioning import make_partitioner
from shipper.routing import TopicRouter

__all__ = ["Intake", "Prepared", "TopicSegment"]


@dataclass(slots=True)
class TopicSegment:
    """The encoded entries of one submission that go to one topic."""

    values: Sequence[bytes] = field(default_factory=list)  # a Packed on the way out
    keys: list[bytes | None] | None = None
    levels: list[str] = field(default_factory=list)
    headers: HeaderTable | None = None  # per entry, when the sink sets any

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class Prepared:
    """A submission after the Router: per-topic segments plus what was rejected."""

    submitted: int
    segments: dict[str, TopicSegment]
    rejected: list[EntryFailure]
    #: The topic whose segment is the input itself, byte for byte (every line
    #: canonical, one topic): the caller may pass the input on instead of the copy.
    whole: str | None = None
    #: Entries a topic template sent to topic_default, by why (see shipper.routing).
    topic_fallbacks: dict[str, int] = field(default_factory=dict)


def _failure(err: EntryError, value: bytes | None = None, topic: str | None = None) -> EntryFailure:
    return EntryFailure(err.reason, str(err), topic=topic, value=value, line=err.line)


class Intake:
    def __init__(self, sink: KafkaSinkConfig) -> None:
        r = sink.routing
        self.router = TopicRouter(
            sink.topic,
            routing_enabled=r.enabled,
            high_topic=r.high_priority_topic,
            low_topic=r.low_priority_topic,
            high_levels=r.high_priority_levels,
            low_levels=r.low_priority_levels,
            topic_label=r.topic_label,
            topic_default=sink.topic_default,
            max_topics=sink.max_topics,
        )
        self.max_bytes = sink.max_message_bytes
        self.headers = HeaderMaker.of(sink)
        part = sink.partitioning
        # Keys are extracted here, next to the decoded entry; partitions are assigned
        # by the Batcher, which knows the topic's partition count.
        self.keyer = (
            make_partitioner(part.strategy, part.key_field)
            if part.enabled and part.strategy == "hash" and part.key_field
            else None
        )
        self.key_field = part.key_field if self.keyer is not None else None
        self._fast = _canonical_decoder(self.key_field)
        self._relabel = msgspec.json.Decoder(_RawEntry)
        holder = _key_holder(self.key_field)
        self._fields_keys: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[holder])  # type: ignore[valid-type]
        self._relabel_encoder = msgspec.json.Encoder()
        # Labels that decide an entry's topic or key: a source label of these names
        # needs the entries' labels merged (see _spliced).
        self._routing_keys = {k for k in (r.topic_label, self.key_field) if k}
        template = self.router.template
        self._fields_template = template is not None and template.uses_fields
        if template is not None:
            # Labels a template names decide the topic too.
            self._routing_keys |= template.label_names()

    def prepare_lines(
        self,
        lines: bytes | Iterable[bytes | str],
        first_line: int = 1,
        labels: Mapping[str, str] | None = None,
        ids: Sequence[bytes] | None = None,
    ) -> Prepared:
        """Decode, validate, route and encode input lines. ``labels`` (from a source,
        e.g. a file's path) are added to every entry; an entry's own label of the
        same name wins. ``ids``: the entry id of each input line (a file source's,
        see :mod:`shipper.headers`), used when the sink sets ``entry_id_header``."""
        if not self.headers.id_header:
            ids = None
        if isinstance(lines, bytes | bytearray):
            fast = self._canonical_lines(bytes(lines), first_line, labels or None, ids)
            if fast is not None:
                return fast
            lines = bytes(lines).split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
        if not isinstance(lines, list):
            lines = list(lines)
        entries, errors = decode_lines(lines, first_line)

        def raw(err: EntryError) -> bytes | None:
            # Keep the bad input itself, so the DLQ holds what was refused.
            if err.line is None or not 0 <= err.line - first_line < len(lines):
                return None
            item = lines[err.line - first_line]
            return item.encode("utf-8", "surrogateescape") if isinstance(item, str) else bytes(item)

        def entry_line(i: int) -> int | None:
            # decode_lines skips blank lines and gives every other line an entry or an
            # error, in order; the i-th entry is on the i-th such line without an error.
            bad = {e.line for e in errors}
            n = -1
            for ln, item in enumerate(lines, start=first_line):
                if item.strip() and ln not in bad:
                    n += 1
                    if n == i:
                        return ln
            return None

        entry_ids = None
        if ids is not None and len(ids) == len(lines):
            # decode_lines skips blank lines and turns the bad ones into errors.
            bad = {e.line for e in errors}
            entry_ids = [
                ids[i] for i, item in enumerate(lines) if item.strip() and first_line + i not in bad
            ]
        if labels:
            for e in entries:
                e.labels = {**labels, **e.labels}
        return self._prepare(entries, errors, raw, entry_line, entry_ids, labels)

    def _canonical_lines(
        self,
        blob: bytes,
        first_line: int = 1,
        labels: Mapping[str, str] | None = None,
        ids: Sequence[bytes] | None = None,
    ) -> Prepared | None:
        """The fast path for a blob whose every line is already a canonical entry.

        A canonical line is a JSON object with exactly the five entry keys, of the
        right types, and a canonical level: re-encoding it would give the same JSON
        (up to key order and spacing), so the line itself becomes the Kafka value and
        the blob is validated by one msgspec call, with no per-entry ``LogEntry``.
        Returns None when any line is not canonical (blank, plain text, aliases, extra
        keys, a non-canonical level, CR line ends, an oversized value): the general
        path then handles the whole blob.
        """
        body = blob[:-1] if blob[-1:] == b"\n" else blob
        if not body or b"\r" in body or self._fields_template:
            return None  # (a template that reads fields needs them decoded)
        if not body.isascii():
            try:
                body.decode()
            except UnicodeDecodeError:
                return None
        n = body.count(b"\n") + 1
        # Every line starts with "{" and ends with "}". Then no JSON value can run on
        # over a newline (after "}" a value may only go on with "," or a closing
        # bracket, and a string cannot hold a raw newline), so with as many values as
        # lines, each line is exactly one object.
        if body[:1] != b"{" or body[-1:] != b"}" or body.count(b"}\n{") != n - 1:
            return None
        # With source labels, the lines are either spliced (cheap, see _spliced) or
        # decoded with the labels merged and written back.
        source = labels or {}
        entries: list[Any] | None = None
        spliced = self._spliced(body, n, source) if source else None
        if not source or spliced is not None:
            try:
                entries = self._fast.decode_lines(body)
            except msgspec.MsgspecError:
                return None
            if spliced is not None:
                keys = source.keys()
                if not _absent(body, keys) and any(not keys.isdisjoint(e.labels) for e in entries):
                    entries = None  # an entry has a label of the source's own: it wins
                else:
                    body = spliced
        if entries is None:
            entries = self._relabeled(body, source)
            if entries is None:
                return None
            # The lines change (every entry gets the labels): written back in one call.
            body = self._relabel_encoder.encode_lines(entries)[:-1]
        levels = [e.level for e in entries]
        if len(entries) != n or not CANONICAL_LEVELS.issuperset(levels):
            return None
        if len(body) > self.max_bytes and _longest_line(body) > self.max_bytes:
            return None
        lines: list[bytes] | None = None
        routed, bad = self.router.route_with_errors(entries)
        segments: dict[str, TopicSegment] = {}
        hm = self.headers
        for topic, idx in routed.items():
            if len(idx) == n:
                group = entries
                values = Packed(body, n, lines)
                lvls = levels
            else:
                if lines is None:
                    lines = body.split(b"\n")
                group = [entries[i] for i in idx]
                values = Packed.of([lines[i] for i in idx])
                lvls = [levels[i] for i in idx]
            headers = None
            if hm.enabled:
                if lines is None:
                    lines = body.split(b"\n")
                headers = hm.make(
                    [e.labels for e in group],
                    [lines[i] for i in idx],
                    [ids[i] for i in idx] if ids is not None and len(ids) == n else None,
                    source,
                )
            segments[topic] = TopicSegment(
                values=values,
                keys=self._canonical_keys(group) if self.key_field else None,
                levels=lvls,
                headers=headers,
            )
        rejected: list[EntryFailure] = []
        if bad:
            # An invalid routing label: the line itself goes to the DLQ, so nothing of
            # what was submitted is lost.
            if lines is None:
                lines = body.split(b"\n")
            rejected = [
                EntryFailure(e.reason, str(e), value=lines[i], line=first_line + i) for i, e in bad
            ]
        whole = next(iter(segments)) if len(segments) == 1 and not rejected and not labels else None
        if whole is not None and len(segments[whole]) != n:
            whole = None
        return Prepared(n, segments, rejected, whole, dict(self.router.fallbacks))

    def _relabeled(self, body: bytes, labels: Mapping[str, str]) -> list[Any] | None:
        """Canonical lines decoded once with everything but level and labels kept as
        raw JSON, the source's labels merged in; None when a line is not canonical.

        The raw parts are checked by their first byte for the types the typed decoder
        checks (a string message, a string, number or null timestamp, an object of
        fields), so both paths accept the same lines."""
        try:
            entries = self._relabel.decode_lines(body)
        except msgspec.MsgspecError:
            return None
        shared = dict(labels)  # one dict for every entry without labels of its own
        for e in entries:
            if (
                memoryview(e.message)[0] != 0x22  # "
                or memoryview(e.timestamp)[0] not in _TS_STARTS
                or memoryview(e.fields)[0] != 0x7B  # {
            ):
                return None
            e.labels = {**labels, **e.labels} if e.labels else shared
        return entries

    def _spliced(self, body: bytes, n: int, labels: Mapping[str, str]) -> bytes | None:
        """The lines with the source's labels written into each ``"labels":{`` by
        two replaces, or None when that is not safe and the lines must be decoded
        and written back (:meth:`_relabeled`).

        Safe when no lowercase ASCII letter is written as a ``\\u`` escape, every
        line has exactly one ``"labels"`` token (the required
        top-level key: nothing else in the line spells it) written as ``"labels":{``
        with no space, and no source label is one the entries are routed or keyed
        by (those must be read from the merged labels). The caller also checks that
        no entry has a label of the same name (its own would win)."""
        if self._routing_keys.intersection(labels):
            return None
        # (A single byte is searched for at memchr speed: most bodies have no "\\".)
        if b"\\" in body and b"\\u00" in body and _ESCAPED_LETTER.search(body):
            return None  # a key could spell "labels" with escapes: the counts would lie
        if body.count(b'"labels"') != n:
            return None
        pairs = self._relabel_encoder.encode(dict(labels))[1:-1]
        # How many of each spelling there were is read from how much each replace
        # grew the body: no separate counting pass. The non-empty one goes first: the
        # other writes text it would match.
        out = body.replace(b'"labels":{"', b'"labels":{' + pairs + b',"')
        full = (len(out) - len(body)) // (len(pairs) + 1)
        empty = 0
        if full != n:
            grown = len(out)
            out = out.replace(b'"labels":{}', b'"labels":{' + pairs + b"}")
            empty = (len(out) - grown) // len(pairs)
        return out if full + empty == n else None

    def _canonical_keys(self, group: Sequence[Any]) -> list[bytes | None]:
        # The same rule as the partitioner's key_for: fields first, then labels.
        name = self.key_field
        out: list[bytes | None] = []
        append = out.append
        if group and isinstance(group[0], _RawEntry):
            # Raw fields: their keys are read in one decoder call for the whole group.
            holders = self._fields_keys.decode(b"[" + b",".join(e.fields for e in group) + b"]")
            found = [h.key for h in holders]
        else:
            found = [e.fields.key for e in group]
        for e, v in zip(group, found, strict=True):
            if v is None:
                v = e.labels.get(name)
                if v is None:
                    append(None)
                    continue
            append((v if type(v) is str else str(v)).encode("utf-8", "surrogatepass"))
        return out

    def prepare_objects(self, objs: Iterable[LogEntry | Mapping[str, Any] | str]) -> Prepared:
        objs = list(objs)
        entries, errors = from_objects(objs)

        def raw(err: EntryError) -> bytes | None:
            if err.line is None or not 0 < err.line <= len(objs):
                return None
            return repr(objs[err.line - 1]).encode("utf-8", "replace")

        return self._prepare(entries, errors, raw)

    def _prepare(
        self,
        entries: list[LogEntry],
        errors: list[EntryError],
        raw: Callable[[EntryError], bytes | None],
        entry_line: Callable[[int], int | None] | None = None,
        ids: Sequence[bytes] | None = None,
        source: Mapping[str, str] | None = None,
    ) -> Prepared:
        rejected = [_failure(e, raw(e)) for e in errors]
        segments: dict[str, TopicSegment] = {}
        routed, unroutable = self.router.route_with_errors(entries)
        limit = self.max_bytes
        hm = self.headers
        for topic, idx in routed.items():
            group = entries if len(idx) == len(entries) else [entries[i] for i in idx]
            values = encode_entries(group)
            # Whole-batch work on the fast path; the per-entry loop only runs when an
            # entry is too large (rare).
            if values and max(map(len, values)) > limit:
                kept = [i for i, v in enumerate(values) if len(v) <= limit]
                rejected.extend(
                    _failure(MessageTooLargeError(len(v), limit), v, topic)
                    for v in values
                    if len(v) > limit
                )
                group = [group[i] for i in kept]
                values = [values[i] for i in kept]
                idx = [idx[i] for i in kept]
            if not values:
                continue
            headers = None
            if hm.enabled:
                own = [e.labels for e in group]
                ids_here = [ids[i] for i in idx] if ids is not None else None
                headers = hm.make(own, values, ids_here, source)
            segments[topic] = TopicSegment(
                values=Packed.of(values),
                keys=self.keyer.keys_for(group) if self.keyer is not None else None,
                levels=[e.level for e in group],
                headers=headers,
            )
        # An invalid routing label: the entry, encoded, goes to the DLQ.
        for i, e in unroutable:
            line = entry_line(i) if entry_line is not None else None
            rejected.append(
                EntryFailure(e.reason, str(e), value=encode_entries([entries[i]])[0], line=line)
            )
        return Prepared(
            len(entries) + len(errors), segments, rejected, None, dict(self.router.fallbacks)
        )


class _RawEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A canonical entry with everything but its level and labels kept as raw JSON."""

    message: msgspec.Raw
    level: str
    timestamp: msgspec.Raw
    labels: dict[str, str]
    fields: msgspec.Raw


# A \\u escape of a lowercase ASCII letter (or of a few neighbours): JSON lets a key
# spell "labels" that way, which the splice's counts of the plain spelling would miss.
_ESCAPED_LETTER = re.compile(rb"\\u00[67][0-9a-fA-F]")

# Label names whose only JSON spelling without \u escapes is themselves in quotes.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")


def _absent(body: bytes, names: Iterable[str]) -> bool:
    """True when no line can hold a key of these ``names``: each is a plain name that
    appears nowhere in ``body`` as a JSON string, and nothing in it is ``\\u``-escaped.
    One C-speed scan per name instead of a look at every entry's labels; False only
    means "look at the entries"."""
    if b"\\" in body and b"\\u" in body:
        return False
    return all(_PLAIN_NAME.match(n) and b'"' + n.encode() + b'"' not in body for n in names)


# First bytes of a JSON string, number or null (booleans, objects, arrays refused).
_TS_STARTS = frozenset(b'"-0123456789n')


def _key_holder(key_field: str | None) -> Any:
    """A struct that reads only the partition key out of a ``fields`` object."""
    if key_field:
        return msgspec.defstruct(
            "_KeyOnly", [("key", Any, None)], rename={"key": key_field}, gc=False
        )
    return msgspec.defstruct("_NoKey", [("key", Any, None)], rename={"key": ""}, gc=False)


def _canonical_decoder(key_field: str | None) -> msgspec.json.Decoder[Any]:
    """A decoder for newline-separated canonical entries (see ``_canonical_lines``;
    use its ``decode_lines``).

    ``fields`` is only checked to be an object, and only the partition key is read
    from it; that is all the general path checks too (``dict[str, Any]``).
    """
    fields: Any = _key_holder(key_field)
    entry = msgspec.defstruct(
        "_Canonical",
        [
            ("message", str),
            ("level", str),
            ("timestamp", str | float | None),
            ("labels", dict[str, str]),
            ("fields", fields),
        ],
        forbid_unknown_fields=True,
        # Thousands of short-lived structs per call: keeping them out of the cyclic
        # GC saves the collections their allocation would trigger.
        gc=False,
    )
    return msgspec.json.Decoder(entry)


def _longest_line(body: bytes) -> int:
    """Length of the longest newline-separated line, without splitting ``body``."""
    newlines = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 0x0A)
    if newlines.size == 0:
        return len(body)
    edges = np.concatenate(([-1], newlines, [len(body)]))
    return int(np.diff(edges).max()) - 1
