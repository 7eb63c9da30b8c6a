"""Turning pydantic's validation errors into one line per problem, by YAML path.

Each line starts with the path of the offending key (``sinks.kafka.compression``) and
says what is allowed there. A value is quoted only when it is safe to: never a
password, never a value that came from an environment variable, never the contents of
a mapping or list.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ValidationError

from shipper.config.model import ShipperConfig

Loc = tuple[str | int, ...]


class Prepared:
    """The raw mapping after substitution, plus what the loader learnt on the way."""

    def __init__(self) -> None:
        self.problems: list[tuple[Loc, str]] = []
        # Paths whose value came (partly) from the environment: never quoted in errors.
        self.from_env: dict[Loc, list[str]] = {}
        # Paths whose substitution failed: pydantic's complaint about the leftover
        # "${VAR}" text would only repeat the real problem.
        self.failed: set[Loc] = set()


def describe_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # the mapping key itself is wrong (its name is the last part)
        else:
            out += f".{part}" if out else str(part)
    return out or "config"


def kind_of(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _is_secret(loc: Loc) -> bool:
    return "password" in loc


def _shown(loc: Loc, value: object, prep: Prepared) -> str:
    """How an offending value may appear in a message: ``", got 'brotli'"`` or less."""
    names = prep.from_env.get(loc)
    if names:
        return f" (the value of {', '.join('${' + n + '}' for n in names)})"
    if _is_secret(loc):
        return ""
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value) if value is not None else "null"
        if len(text) > 80:
            text = text[:77] + "..."
        return f", got {text}"
    # Never the contents of a mapping or list: a password could be inside.
    return f", got {kind_of(value)}"


def _field_at(loc: Loc) -> tuple[type[BaseModel] | None, Any]:
    """The model owning the last key of ``loc`` and that field's annotation."""
    model: type[BaseModel] | None = ShipperConfig
    owner: type[BaseModel] | None = None
    annotation: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return model, None
        owner = model
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)
    return owner, annotation


def _model_at(loc: Loc) -> type[BaseModel] | None:
    return _model_in(_field_at(loc)[1]) if loc else ShipperConfig


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _literal_choices(annotation: Any) -> list[object]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (Union, types.UnionType) or origin is Annotated:
        return [c for arg in typing.get_args(annotation) for c in _literal_choices(arg)]
    return []


def _keys_of(model: type[BaseModel] | None) -> str:
    return ", ".join(model.model_fields) if model is not None else ""


_TYPE_WORDS: dict[str, str] = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "string_unicode": "expected text",
    "list_type": "expected a list",
    "acks_type": "expected one of 0, 1, -1",
}

_BOUND_WORDS: dict[str, tuple[str, str]] = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def translate(exc: ValidationError, prep: Prepared) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        if loc in prep.failed:
            continue
        problems.extend(_describe(err, loc, prep))
    return problems


def _describe(err: Any, loc: Loc, prep: Prepared) -> list[str]:
    kind: str = err["type"]
    value = err.get("input")
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    where = describe_path(loc)
    if kind == "shipper_rules":
        return [f"{describe_path((*loc, rel))}: {msg}" for rel, msg in ctx.get("problems", [])]
    if kind == "missing":
        return [f"{where}: is required"]
    if kind == "extra_forbidden":
        return [f"{where}: unknown key (allowed: {_keys_of(_model_at(loc[:-1]))})"]
    if kind == "literal_error":
        choices = _literal_choices(_field_at(loc)[1])
        allowed = ", ".join(str(c) for c in choices) if choices else str(ctx.get("expected"))
        if _is_secret(loc) or loc in prep.from_env:
            return [f"{where}: is not one of {allowed}{_shown(loc, value, prep)}"]
        shown = repr(value) if isinstance(value, str | int | float) else kind_of(value)
        return [f"{where}: {shown[:80]} is not one of {allowed}"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _keys_of(_model_at(loc))
        return [f"{where}: expected a mapping with keys {keys}{_shown(loc, value, prep)}"]
    if kind in _TYPE_WORDS:
        hint = ""
        if kind == "string_type" and isinstance(value, int | float | bool):
            hint = " (quote it in YAML)"
        return [f"{where}: {_TYPE_WORDS[kind]}{_shown(loc, value, prep)}{hint}"]
    if kind in _BOUND_WORDS:
        key, words = _BOUND_WORDS[kind]
        return [f"{where}: {words} {ctx.get(key)}{_shown(loc, value, prep)}"]
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return [f"{where}: needs at least {n} item{'s' if n != 1 else ''}"]
    if kind == "string_too_short":
        return [f"{where}: must not be empty"]
    if kind == "header_name":
        return [f"{where}: {err['msg']}"]  # (the message names the value)
    if kind in ("duration", "duration_range", "broker", "topic"):
        return [f"{where}: {err['msg']}{_shown(loc, value, prep)}"]
    # Anything else: pydantic's own words (they never contain the input).
    return [f"{where}: {err['msg']}{_shown(loc, value, prep)}"]
