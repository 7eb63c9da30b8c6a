"""Log entries: the data model, decoding from JSON lines and Python objects, encoding.

A :class:`LogEntry` is a ``msgspec.Struct`` with five fields: ``message``, ``level``,
``timestamp``, ``labels`` (string map, used for routing, e.g. ``kafka_topic``) and
``fields`` (structured data, e.g. ``tenant_id``). Every function here works on whole
batches, because per-entry Python work is what limits a Python shipper's rate.

Decoding rules (:func:`decode_lines`):

- A blank line (only whitespace) is skipped; it still counts for line numbers.
- A line whose first non-blank character is ``{`` is a JSON object. It must end with
  ``}`` and hold a string ``message``; ``level`` must be a string, ``timestamp`` a
  string, a number or null, ``labels`` an object of strings, ``fields`` an object.
- Accepted alternatives, because common loggers write them: when ``message`` is
  absent, ``msg`` (zap, logrus, bunyan, pino) or ``log`` (Docker's json-file driver) is
  taken as the message. Any other top-level key that is not one of the five is moved
  into ``fields`` (an explicit ``fields`` entry wins on a clash), so flat JSON logs keep
  their data, e.g. a top-level ``tenant_id`` can still drive hash partitioning.
- Any other line (plain text, a JSON array or scalar) becomes an entry whose message is
  the line without its trailing whitespace (leading indentation is kept: stack-trace
  continuation lines need it) and level ``info``.
- A JSON object that is malformed, has wrong types or no message, and any line that is
  not valid UTF-8, gives an :class:`~shipper.errors.EntryError` with reason
  ``serialization_error``, a detail naming the problem, and the 1-based line number.
  Decoding never raises on input data, whatever the bytes.

Levels are normalised on construction: lower-cased, surrounding blanks removed,
``warning`` -> ``warn``, ``err`` -> ``error``, ``crit`` -> ``critical``, empty -> ``info``.
Other values are kept (lower-cased), so ``notice`` stays ``notice``.

Encoding (:func:`encode_entries`) writes each entry as one compact JSON object with all
five keys (a stable schema for consumers), once, with one shared encoder. Values JSON
cannot represent are written as ``str(value)`` (datetimes, UUIDs, custom objects, non-
string keys), and strings that are not valid Unicode get U+FFFD replacements, so
encoding never fails on a decoded or converted entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Final

import msgspec

from shipper.errors import EntryError
from shipper.outcomes import Reason

__all__ = [
    "CANONICAL_LEVELS",
    "LEVEL_ALIASES",
    "LogEntry",
    "decode_lines",
    "encode_entries",
    "from_objects",
    "normalize_level",
]

#: Levels the shipper knows by name (routing and the batch level codes use them).
CANONICAL_LEVELS: Final = frozenset(
    {"trace", "debug", "info", "warn", "error", "fatal", "critical"}
)
#: Spellings that mean a canonical level.
LEVEL_ALIASES: Final[dict[str, str]] = {"warning": "warn", "err": "error", "crit": "critical"}

_ENTRY_KEYS: Final = ("message", "level", "timestamp", "labels", "fields")
_MESSAGE_ALIASES: Final = ("msg", "log")
_SERIALIZATION: Final = Reason.SERIALIZATION_ERROR
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def normalize_level(level: str) -> str:
    """Return the canonical spelling of ``level`` (see the module docstring)."""
    lvl = level.strip().lower()
    if not lvl:
        return "info"
    return LEVEL_ALIASES.get(lvl, lvl)


class LogEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One log entry.

    ``forbid_unknown_fields`` only affects decoding: it makes the fast typed decoder
    refuse objects with extra keys, which then take the slower path that moves those
    keys into ``fields`` instead of silently dropping them.
    """

    message: str
    level: str = "info"
    timestamp: str | float | None = None
    labels: dict[str, str] = {}
    fields: dict[str, Any] = {}

    def __post_init__(self) -> None:
        # The membership test keeps the common, already-canonical case cheap; this runs
        # for every decoded entry.
        lvl = self.level
        if lvl not in CANONICAL_LEVELS:
            self.level = normalize_level(lvl)


_decoder: Final = msgspec.json.Decoder(LogEntry)
_generic_decoder: Final = msgspec.json.Decoder()
# enc_hook=str: anything JSON cannot express is written as its string form rather than
# failing the whole batch.
_encoder: Final = msgspec.json.Encoder(enc_hook=str)


def _error(detail: str, line: int | None) -> EntryError:
    return EntryError(_SERIALIZATION, detail, line)


def _describe(exc: Exception) -> str:
    """A one-line, user-facing description of a msgspec / codec failure."""
    if isinstance(exc, UnicodeError):
        return f"not valid UTF-8 ({exc})"
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        if "missing required field `message`" in text:
            return "missing message: the object has no string `message` (or `msg`/`log`) key"
        return f"wrong type: {text}"
    if isinstance(exc, msgspec.DecodeError):
        return f"malformed JSON: {text}"
    return f"invalid log entry: {type(exc).__name__}: {text}"


def _record_fields(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """The five entry keys of a generic mapping: aliases applied, extra keys moved into
    ``fields``, a ``datetime`` timestamp as ISO 8601 text. Not yet type-checked.

    Raises ``msgspec.ValidationError`` when extra keys meet a ``fields`` that is not
    an object.
    """
    known: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in obj.items():
        if k in _ENTRY_KEYS:
            known[k] = v
        else:
            extra[str(k)] = v
    if "message" not in known:
        for alias in _MESSAGE_ALIASES:
            if alias in extra:
                known["message"] = extra.pop(alias)
                break
    if extra:
        explicit = known.get("fields", {})
        if not isinstance(explicit, Mapping):
            raise msgspec.ValidationError(
                f"Expected `object`, got `{type(explicit).__name__}` - at `$.fields`"
            )
        known["fields"] = {**extra, **explicit}
    ts = known.get("timestamp")
    # Python callers naturally pass datetimes; ISO 8601 text is what goes to Kafka.
    if isinstance(ts, datetime | date):
        known["timestamp"] = ts.isoformat()
    return known


def _from_record(obj: Mapping[Any, Any]) -> LogEntry:
    """Build an entry from a generic mapping: aliases, extra keys into ``fields``.

    Raises ``msgspec.ValidationError`` (or ``TypeError``) on wrong types.
    """
    return msgspec.convert(_record_fields(obj), LogEntry)


def _from_records(objs: list[Any]) -> list[LogEntry] | None:
    """``_from_record`` for a whole batch in one conversion call, or None when any
    item would fail (the caller then converts item by item, which gives each failure
    its own error)."""
    try:
        return msgspec.convert([_record_fields(o) for o in objs], list[LogEntry])
    except Exception:
        return None


def _decode_json_line(raw: bytes, line: int) -> LogEntry | EntryError:
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError:
        # Nothing of the exception is kept: holding it past this block would tie it,
        # its traceback and this frame into a reference cycle per line, garbage that
        # only the cyclic collector frees.
        pass
    except Exception as exc:  # malformed JSON, bad UTF-8, nesting too deep: all data errors
        return _error(_describe(exc), line)
    # Well-formed JSON that is not in the canonical shape: maybe aliases or extra keys.
    try:
        return _record_entry(_generic_decoder.decode(raw), line)
    except Exception as exc:
        return _error(_describe(exc), line)


def _record_entry(obj: Any, line: int) -> LogEntry | EntryError:
    """The entry for a generically decoded JSON object, or its error."""
    if not isinstance(obj, dict):  # pragma: no cover - a `{...}` line is an object
        return _error("wrong type: expected a JSON object", line)
    try:
        return _from_record(obj)
    except Exception as exc:
        return _error(_describe(exc), line)


def decode_lines(
    lines: Iterable[bytes | str], first_line: int = 1
) -> tuple[list[LogEntry], list[EntryError]]:
    """Decode JSON lines / plain text lines into entries, and errors for bad lines.

    ``first_line`` is the number of the first line, so a caller reading a file in
    chunks can report absolute line numbers. Entries keep the input order. Never raises
    on the content of ``lines``.
    """
    # Pass 1 classifies lines. Each slot of `out` is an entry, an error, or None for a
    # JSON line still to decode; JSON lines are then decoded together in one call.
    out: list[LogEntry | EntryError | None] = []
    json_raw: list[bytes] = []
    json_slot: list[int] = []
    json_line: list[int] = []
    lineno = first_line - 1
    for item in lines:
        lineno += 1
        if isinstance(item, str):
            text = item.strip()
            if not text:
                continue
            if text[0] == "{":
                try:
                    raw = text.encode()
                except UnicodeEncodeError as exc:  # lone surrogates from surrogateescape
                    out.append(_error(_describe(exc), lineno))
                    continue
                if text[-1] != "}":
                    out.append(_decode_json_line(raw, lineno))
                    continue
                json_slot.append(len(out))
                json_raw.append(raw)
                json_line.append(lineno)
                out.append(None)
                continue
            if not text.isascii():
                try:
                    text.encode()
                except UnicodeEncodeError as exc:
                    out.append(_error(_describe(exc), lineno))
                    continue
            out.append(LogEntry(item.rstrip()))
        else:
            if type(item) is not bytes:  # bytearray / memoryview from a reader
                item = bytes(item)
            raw = item.strip()
            if not raw:
                continue
            if raw[0] == 0x7B:  # "{"
                if raw[-1] != 0x7D:  # "}"
                    out.append(_decode_json_line(raw, lineno))
                    continue
                json_slot.append(len(out))
                json_raw.append(raw)
                json_line.append(lineno)
                out.append(None)
                continue
            try:
                out.append(LogEntry(item.rstrip().decode()))
            except UnicodeDecodeError as exc:
                out.append(_error(_describe(exc), lineno))

    if json_raw:
        decoded: list[LogEntry] | None = None
        try:
            decoded = _decoder.decode_lines(b"\n".join(json_raw))
        except Exception:
            decoded = None
        # decode_lines reads a stream of values, so one line holding two objects would
        # shift everything after it. Every line here starts with "{" and ends with "}",
        # which makes a value spanning lines impossible; equal counts then mean each
        # line gave exactly one object, in order.
        if decoded is not None and len(decoded) == len(json_raw):
            for slot, entry in zip(json_slot, decoded, strict=True):
                out[slot] = entry
        else:
            _decode_one_by_one(out, json_slot, json_raw, json_line)

    return _split(out)


def _decode_one_by_one(
    out: list[LogEntry | EntryError | None],
    slots: list[int],
    raws: list[bytes],
    lines: list[int],
) -> None:
    """Fill ``out[slot]`` for JSON lines whose batch decode failed.

    Each line first gets the typed decoder (as fast per line as in a batch for
    canonical lines). The lines it refuses as not canonical (aliases, extra keys, wrong
    types) are then decoded as generic objects and converted together in one call;
    only if that fails is each of them converted on its own, with its own error.
    When the first line is already not canonical, the blob is most likely flat JSON
    throughout (one logger, one shape), and every line goes the generic way at once.
    """
    decode = _decoder.decode
    try:
        decode(raws[0])
    except msgspec.ValidationError:
        _convert_generic(out, slots, raws, lines)
        return
    except Exception:
        pass
    flat_slots: list[int] = []
    flat_raws: list[bytes] = []
    flat_lines: list[int] = []
    for slot, raw, ln in zip(slots, raws, lines, strict=True):
        try:
            out[slot] = decode(raw)
        except msgspec.ValidationError:
            # Nothing of the exception is kept (see _decode_json_line).
            flat_slots.append(slot)
            flat_raws.append(raw)
            flat_lines.append(ln)
        except Exception as exc:  # malformed JSON, bad UTF-8, nesting too deep
            out[slot] = _error(_describe(exc), ln)
    if flat_raws:
        _convert_generic(out, flat_slots, flat_raws, flat_lines)


def _convert_generic(
    out: list[LogEntry | EntryError | None],
    slots: list[int],
    raws: list[bytes],
    lines: list[int],
) -> None:
    """Decode ``raws`` as generic objects in one call and convert them in one call
    (object by object, each with its own error, if the batch fails). When some line is
    not well-formed JSON, every line is decoded on its own instead."""
    try:
        objs: list[Any] | None = _generic_decoder.decode_lines(b"\n".join(raws))
    except Exception:
        objs = None
    # "{...}" lines cannot hold a value spanning lines: equal counts mean one object
    # per line, in order.
    if objs is None or len(objs) != len(raws):
        for slot, raw, ln in zip(slots, raws, lines, strict=True):
            out[slot] = _decode_json_line(raw, ln)
        return
    converted = _from_records(objs)
    if converted is not None:
        for slot, entry in zip(slots, converted, strict=True):
            out[slot] = entry
    else:
        for slot, obj, ln in zip(slots, objs, lines, strict=True):
            out[slot] = _record_entry(obj, ln)


def _split(
    out: list[LogEntry | EntryError | None],
) -> tuple[list[LogEntry], list[EntryError]]:
    entries: list[LogEntry] = [x for x in out if isinstance(x, LogEntry)]
    if len(entries) == len(out):
        return entries, []
    errors = [x for x in out if isinstance(x, EntryError)]
    return entries, errors


def from_objects(
    objs: Iterable[LogEntry | Mapping[str, Any] | str],
) -> tuple[list[LogEntry], list[EntryError]]:
    """Turn Python objects into entries: ``LogEntry`` as is, a mapping by the same
    rules as a JSON object (aliases, extra keys into ``fields``; a ``datetime``
    timestamp becomes ISO 8601 text), a string as a plain-text message.

    An error's ``line`` is the object's 1-based position in ``objs``.
    """
    out: list[LogEntry | EntryError | None] = []
    dict_slots: list[int] = []
    dicts: list[dict[str, Any]] = []
    for pos, obj in enumerate(objs, 1):
        if isinstance(obj, LogEntry):
            out.append(obj)
        elif isinstance(obj, str):
            out.append(LogEntry(obj))
        elif type(obj) is dict:
            dict_slots.append(len(out))
            dicts.append(obj)
            out.append(None)
        elif isinstance(obj, Mapping):
            try:
                out.append(_from_record(obj))
            except Exception as exc:
                out.append(_error(_describe(exc), pos))
        else:
            out.append(
                _error(
                    f"unsupported object: expected a LogEntry, a mapping or a string, "
                    f"got {type(obj).__name__}",
                    pos,
                )
            )
    if dicts:
        try:
            # One C-level conversion for the whole batch when every dict is canonical,
            # else one for the batch after moving extra keys into fields.
            converted: list[LogEntry] | None = msgspec.convert(dicts, list[LogEntry])
        except Exception:
            converted = _from_records(dicts)
        if converted is not None:
            for slot, entry in zip(dict_slots, converted, strict=True):
                out[slot] = entry
        else:
            for slot, d in zip(dict_slots, dicts, strict=True):
                out[slot] = _record_entry(d, slot + 1)  # slot + 1: the object's position
    return _split(out)


def _sanitize(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value``: str keys, valid Unicode, no cycles.

    Only used when the fast encoder failed, so it may be slow.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 64:  # deep nesting or a cycle: stop and write the text form
        return _sanitize(repr(value)[:1024])
    if isinstance(value, Mapping):
        return {_sanitize(str(k)): _sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_sanitize(v, depth + 1) for v in value]
    try:
        return _sanitize(str(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _encode_one(entry: LogEntry) -> bytes:
    try:
        return _encoder.encode(entry)
    except Exception:
        ts = entry.timestamp
        safe = LogEntry(
            message=_sanitize(str(entry.message)),
            level=_sanitize(str(entry.level)),
            timestamp=ts if ts is None or isinstance(ts, float | int) else _sanitize(str(ts)),
            labels={_sanitize(str(k)): _sanitize(str(v)) for k, v in entry.labels.items()},
            fields=_sanitize(entry.fields),
        )
        return _encoder.encode(safe)


def encode_entries(entries: Iterable[LogEntry]) -> list[bytes]:
    """Encode each entry as its Kafka value (compact JSON), in order. Never raises for
    entries made by :func:`decode_lines` or :func:`from_objects`."""
    seq = entries if isinstance(entries, list) else list(entries)
    if not seq:
        return []
    try:
        # One C call for the batch. JSON output never holds a raw newline (they are
        # escaped inside strings), so splitting on b"\n" recovers each value exactly.
        buf = _encoder.encode_lines(seq)
    except Exception:
        return [_encode_one(e) for e in seq]
    values = buf.split(b"\n")
    values.pop()  # encode_lines ends with a newline
    return values
