"""Durations as the configuration writes them: ``"100ms"``, ``"5s"``, ``"5m"``, ``"1h"``.

The spec writes time spans as short strings with a unit; a plain number means seconds.
Internally every duration is a ``float`` of seconds, so the code that uses it never
parses anything. :func:`format_duration` turns seconds back into the most compact
string that parses to exactly the same float, so a dumped config reloads unchanged.
"""

from __future__ import annotations

import math
import re

__all__ = ["DurationError", "format_duration", "parse_duration"]

# Seconds per unit. "m" is minutes (as in the spec's "5m"); milliseconds are "ms".
_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# One or more <number><unit> parts, e.g. "1m30s" or "1.5s"; no sign (spans are >= 0).
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


class DurationError(ValueError):
    """A value is not a duration. The message never repeats the offending value."""


def parse_duration(value: object) -> float:
    """Seconds for ``value``: a non-negative number, or a string like ``"5s"``.

    Accepted: ``int``/``float`` seconds, numeric strings (``"2.5"``), and one or
    more ``<number><unit>`` parts with unit ``ms``, ``s``, ``m`` or ``h``
    (``"100ms"``, ``"1m30s"``). Booleans, negatives, NaN and infinities are refused.
    """
    if isinstance(value, bool):
        # bool is an int subclass; "timeout: true" is a mistake, not one second.
        raise DurationError("expected a duration such as 100ms, 5s, 5m or 1h")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise DurationError("duration is too large") from None
        return _checked(seconds)
    if not isinstance(value, str):
        raise DurationError("expected a duration such as 100ms, 5s, 5m or 1h")
    text = value.strip().lower()
    if not text:
        raise DurationError("expected a duration such as 100ms, 5s, 5m or 1h, got an empty string")
    try:
        return _checked(float(text))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise DurationError(
            "is not a duration; write a number with a unit ms, s, m or h (e.g. 100ms, 5s, 5m)"
        )
    return _checked(total)


def _checked(seconds: float) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError("duration must be a finite number of seconds")
    if seconds < 0:
        raise DurationError("duration must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest of ``"Nh"``, ``"Nm"``, ``"Ns"``, ``"Nms"`` that parses back to ``seconds``.

    Falls back to the exact ``repr`` of the float as a plain number of seconds, so the
    round trip ``parse_duration(format_duration(x)) == x`` holds for every valid ``x``.
    """
    seconds = _checked(float(seconds))
    if seconds == 0:
        return "0s"
    for unit in ("h", "m", "s", "ms"):
        amount = seconds / _UNITS[unit]
        if amount == int(amount) and amount < 1e15:
            text = f"{int(amount)}{unit}"
            if parse_duration(text) == seconds:
                return text
    return repr(seconds)
