"""Loading a config: YAML, ``${ENV}`` substitution, presets, and errors that name paths.

Loading goes:

1. read and parse the YAML (syntax errors name the line; duplicate keys are refused),
2. replace ``${VAR}`` / ``${VAR:-default}`` in every string value from the environment,
3. lay the chosen ``sinks.kafka.preset`` underneath the file's own keys,
4. let ``KAFKA_BROKERS`` (comma-separated) replace ``sinks.kafka.brokers``,
5. validate with pydantic and translate *every* problem into one line that starts
   with the YAML path and says what is allowed; they are raised together as one
   :class:`~shipper.errors.ConfigError`.

Secrets: error messages never quote ``sinks.kafka.auth.password``, nor any value that
came from an environment variable, nor the contents of a mapping or list.

Whether the TLS files exist is not a parse-time question (a config is often checked on
another machine than the one it runs on): :func:`check_files` answers it, and is called
by ``shipper check-config`` and at start-up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shipper.config.model import (
    BackpressureConfig,
    KafkaSinkConfig,
    ShipperConfig,
    kafka_rules,
    threshold_rules,
)
from shipper.config.problems import Loc, Prepared, describe_path, kind_of, translate
from shipper.errors import ConfigError

# --------------------------------------------------------------------------- presets

#: The spec's tuning table as partial ``sinks.kafka`` sections. A preset only supplies
#: values the config leaves out; it never overrides what the file says.
PRESETS: dict[str, dict[str, Any]] = {
    "high-throughput": {
        "batch_size": 5000,
        "batch_timeout": "10s",
        "queue_size": 100000,
        "compression": "lz4",
        "required_acks": 1,
        "partitioning": {"strategy": "round-robin"},
    },
    "low-latency": {
        "batch_size": 100,
        "batch_timeout": "100ms",
        "queue_size": 10000,
        "compression": "none",
        "required_acks": 1,
    },
    "high-durability": {
        "batch_size": 1000,
        "batch_timeout": "5s",
        "compression": "snappy",
        "required_acks": -1,
        "retry_max": 5,
    },
    "balanced": {
        "batch_size": 1000,
        "batch_timeout": "5s",
        "compression": "snappy",
        "required_acks": 1,
    },
}


def _deep_merge(base: Mapping[str, Any], over: Mapping[Any, Any]) -> dict[Any, Any]:
    merged: dict[Any, Any] = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- loading

# ${NAME}, ${NAME:-default}, and $${ as the escape for a literal "${".
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(node: object, loc: Loc, env: Mapping[str, str], prep: Prepared) -> object:
    if isinstance(node, str):
        if "$" not in node:
            return node
        names: list[str] = []
        missing: list[str] = []

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            names.append(name)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                missing.append(name)
                return m.group(0)
            return value

        result = _VAR.sub(repl, node)
        if names:
            prep.from_env[loc] = names
        for name in dict.fromkeys(missing):
            prep.problems.append((loc, f"environment variable {name} is not set"))
        # "${" left over after the escapes were handled is a malformed reference.
        leftover = _VAR.sub("", node).count("${")
        if leftover:
            prep.problems.append(
                (
                    loc,
                    "malformed ${...} reference (write ${NAME} or ${NAME:-default}; "
                    "$${ for a literal ${)",
                )
            )
        if missing or leftover:
            prep.failed.add(loc)
            return node
        return result
    if isinstance(node, Mapping):
        return {k: _substitute(v, (*loc, _loc_key(k)), env, prep) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_substitute(v, (*loc, i), env, prep) for i, v in enumerate(node)]
    return node


def _loc_key(key: object) -> str | int:
    return key if isinstance(key, str) else str(key)


def _prepare(raw: object, env: Mapping[str, str]) -> tuple[object, Prepared]:
    prep = Prepared()
    data = _substitute(raw, (), env, prep)
    if not isinstance(data, dict):
        return data, prep
    sinks = data.get("sinks")
    kafka = sinks.get("kafka") if isinstance(sinks, dict) else None
    if isinstance(sinks, dict) and isinstance(kafka, dict):
        preset = kafka.get("preset")
        if isinstance(preset, str) and preset in PRESETS:
            kafka = _deep_merge(PRESETS[preset], kafka)
        brokers = env.get("KAFKA_BROKERS", "")
        override = [b.strip() for b in brokers.split(",") if b.strip()]
        if override:
            # The spec's compose example configures brokers this way only.
            kafka = {**kafka, "brokers": override}
            for i in range(len(override)):
                prep.from_env[("sinks", "kafka", "brokers", i)] = ["KAFKA_BROKERS"]
        data = {**data, "sinks": {**sinks, "kafka": kafka}}
    return data, prep


def _build(raw: object, env: Mapping[str, str] | None, source: str) -> ShipperConfig:
    env = os.environ if env is None else env
    if raw is None:
        raise ConfigError(["config: the configuration is empty; it needs sinks.kafka"], source)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            [f"config: expected a mapping with the key sinks, got {kind_of(raw)}"], source
        )
    data, prep = _prepare(raw, env)
    problems = [f"{describe_path(loc)}: {msg}" for loc, msg in prep.problems]
    try:
        config = ShipperConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(translate(exc, prep))
        problems.extend(_fallback_rules(data, prep))
    else:
        if not problems:
            return config
    # Several routes (a model rule and its fallback) can find the same problem.
    raise ConfigError(list(dict.fromkeys(problems)), source) from None


def _fallback_rules(data: object, prep: Prepared) -> list[str]:
    """Cross-field rules that pydantic skipped because a field next to them failed.

    pydantic runs a model's own validator only when all of its fields are valid, so a
    bad ``compression`` would hide ``batch_size > queue_size``. Checking the raw values
    here keeps the promise that every problem of a file is reported at once.
    """
    kafka = _get(data, "sinks", "kafka")
    if not isinstance(kafka, Mapping):
        return []
    found: list[tuple[Loc, str]] = []
    base: Loc = ("sinks", "kafka")
    fields = KafkaSinkConfig.model_fields
    size = _as_int(kafka.get("batch_size", fields["batch_size"].default))
    queue = _as_int(kafka.get("queue_size", fields["queue_size"].default))
    found += [((*base, rel), msg) for rel, msg in kafka_rules(size, queue)]
    bp = kafka.get("backpressure_config", {})
    if isinstance(bp, Mapping):
        names = ("queue_warning_threshold", "queue_critical_threshold", "queue_emergency_threshold")
        bp_fields = BackpressureConfig.model_fields
        levels = [_as_fraction(bp.get(n, bp_fields[n].default)) for n in names]
        found += [
            ((*base, "backpressure_config", rel), msg) for rel, msg in threshold_rules(*levels)
        ]
    return [f"{describe_path(loc)}: {msg}" for loc, msg in found if loc not in prep.from_env]


def _get(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value):
        return int(value)
    return None


def _as_fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if 0 < number <= 1 else None


def parse_config_text(
    text: str, source: str = "<string>", env: Mapping[str, str] | None = None
) -> ShipperConfig:
    """Build a config from YAML text; ``source`` names it in errors."""
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{where}: YAML syntax error: {what}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"YAML syntax error: {type(exc).__name__}"], source) from None
    return _build(raw, env, source)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | ShipperConfig,
    env: Mapping[str, str] | None = None,
) -> ShipperConfig:
    """The validated config from a file, YAML text, a parsed mapping or a config.

    A ``str`` is a file name when such a file exists, YAML text when it looks like YAML
    (it has a newline or a ``key: value``), and otherwise a missing file. ``env``
    replaces ``os.environ`` for ``${VAR}`` and ``KAFKA_BROKERS``. A ``ShipperConfig`` is
    returned as it is. Raises :class:`ConfigError` listing every problem.
    """
    if isinstance(source, ShipperConfig):
        return source
    if isinstance(source, Mapping):
        return _build(source, env, "<dict>")
    if isinstance(source, str) and not os.path.exists(source):
        if "\n" in source or ": " in source or source.lstrip().startswith("{"):
            return parse_config_text(source, "<string>", env)
        raise ConfigError([f"config: file {source} does not exist"], source)
    if not isinstance(source, str | os.PathLike):
        raise ConfigError(
            [f"config: expected a file name, YAML text or a mapping, got {kind_of(source)}"]
        )
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config: file {path} does not exist"], str(path)) from None
    except IsADirectoryError:
        raise ConfigError([f"config: {path} is a directory, not a file"], str(path)) from None
    except PermissionError:
        raise ConfigError([f"config: file {path} is not readable"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"config: file {path} is not UTF-8 text (byte {exc.start})"], str(path)
        ) from None
    except OSError as exc:
        raise ConfigError([f"config: cannot read {path}: {exc.strerror}"], str(path)) from None
    return parse_config_text(text, str(path), env)


def check_files(cfg: ShipperConfig) -> list[str]:
    """Problems with the files the config names (TLS CA, certificates, keys of the Kafka
    sink and of the HTTP intake), if any.

    Not part of parsing: the files must exist where the shipper runs, which may not be
    where the config is written. ``shipper check-config`` and start-up call this.
    """
    named: list[tuple[str, str]] = []
    tls = cfg.sinks.kafka.tls
    if tls.enabled:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is not None:
                named.append((f"sinks.kafka.tls.{name}", value))
    http = cfg.sources.http
    if http.enabled and http.tls.enabled:
        for name in ("cert_file", "key_file", "client_ca_file"):
            value = getattr(http.tls, name)
            if value is not None:
                named.append((f"sources.http.tls.{name}", value))
    problems: list[str] = []
    for where, value in named:
        path = Path(value)
        if not path.exists():
            problems.append(f"{where}: file {value} does not exist")
        elif not path.is_file():
            problems.append(f"{where}: {value} is not a regular file")
        else:
            try:
                with path.open("rb") as fh:
                    fh.read(1)
            except OSError as exc:
                problems.append(f"{where}: file {value} is not readable ({exc.strerror})")
    return problems


def to_yaml(cfg: ShipperConfig, *, reveal_secrets: bool = False) -> str:
    """The effective config as YAML: every option, durations as "5s", secrets masked.

    A literal ``${`` in a value is written as ``$${`` so that loading the output gives
    back the same config instead of looking the name up in the environment.
    """
    data = cfg.model_dump(mode="json", context={"reveal_secrets": reveal_secrets})
    return yaml.safe_dump(_escape_vars(data), sort_keys=False, default_flow_style=False)


def _escape_vars(node: object) -> object:
    if isinstance(node, str):
        return node.replace("${", "$${")
    if isinstance(node, dict):
        return {k: _escape_vars(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_escape_vars(v) for v in node]
    return node


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = loader.construct_object(value_node, deep=True)
    return seen


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
