"""Config model and loader: defaults, durations, ${VAR}, secrets, errors, presets.

The spec's own examples are checked in ``test_spec_examples.py``; here the loader's
behaviour is pinned down on small hand-written inputs and by hypothesis properties
(dump -> load is the identity; no input makes the loader raise anything but
``ConfigError``; a password never shows up in an error).
"""

from __future__ import annotations

import os
import pickle
import re
import string
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shipper.config import (
    MASK,
    PRESETS,
    AuthConfig,
    KafkaSinkConfig,
    ShipperConfig,
    check_files,
    load_config,
    parse_config_text,
    to_yaml,
)
from shipper.durations import DurationError, format_duration, parse_duration
from shipper.errors import ConfigError
from shipper.kafka.settings import librdkafka_settings

SECRET = "s3cr3t-Pa55word-xyzzy"


def minimal(**kafka: Any) -> dict[str, Any]:
    return {"sinks": {"kafka": {"brokers": ["kafka:9092"], "topic": "logs", **kafka}}}


def load(data: Any, env: dict[str, str] | None = None) -> ShipperConfig:
    return load_config(data, env={} if env is None else env)


def problems_of(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(data, env)
    return info.value.problems


# --------------------------------------------------------------------------- defaults


def test_defaults_follow_the_spec_table() -> None:
    k = load(minimal()).sinks.kafka
    assert k.enabled is False
    assert k.compression == "none"
    assert k.batch_size == 1000
    assert k.batch_timeout == 5.0
    assert k.queue_size == 50000
    assert k.max_message_bytes == 1048576
    assert k.required_acks == 1
    assert k.timeout == 30.0
    assert k.retry_max == 3
    assert k.preset is None


def test_section_defaults() -> None:
    cfg = load(minimal())
    k = cfg.sinks.kafka
    assert k.partitioning.model_dump() == {"enabled": False, "strategy": "hash", "key_field": None}
    assert k.auth.model_dump() == {
        "enabled": False,
        "mechanism": "PLAIN",
        "username": None,
        "password": None,
    }
    assert k.tls.model_dump() == {
        "enabled": False,
        "verify_certificate": True,
        "ca_file": None,
        "cert_file": None,
        "key_file": None,
    }
    d = k.dlq_config
    assert (d.enabled, d.send_on_error, d.send_on_timeout) == (True, True, True)
    assert (d.path, d.map_size_bytes, d.max_disk_bytes) == ("./data/dlq", 1 << 30, 512 << 20)
    assert d.reprocessing_config.model_dump() == {
        "enabled": True,
        "interval": 300.0,
        "max_retries": 3,
        "batch_size": 50,
    }
    assert k.backpressure_config.model_dump() == {
        "enabled": True,
        "queue_warning_threshold": 0.75,
        "queue_critical_threshold": 0.90,
        "queue_emergency_threshold": 0.95,
        "timeout_escalation": True,
    }
    assert k.routing.model_dump() == {
        "enabled": True,
        "high_priority_topic": "logs-high-priority",
        "low_priority_topic": "logs-low-priority",
        "high_priority_levels": ["error", "fatal", "critical"],
        "low_priority_levels": ["debug", "trace"],
        "topic_label": "kafka_topic",
    }
    assert k.circuit_breaker.model_dump() == {
        "failure_threshold": 10,
        "success_threshold": 2,
        "timeout": 60.0,
        "unreachable_after": 3.0,
    }
    assert cfg.metrics.model_dump() == {"enabled": True, "host": "127.0.0.1", "port": 9464}
    assert cfg.pipeline.model_dump() == {
        "producer_replicas": 1,
        "max_inflight_submissions": 8,
        "max_inflight_entries": None,
        "drain_timeout": 30.0,
        "submit_timeout": 30.0,
    }


def test_every_field_has_a_description() -> None:
    seen: set[type] = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"
            for ann in _models(field.annotation):
                walk(ann)

    walk(ShipperConfig)
    assert len(seen) == 25


def test_reference_doc_names_every_option() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = []
    stack: list[type] = [ShipperConfig]
    while stack:
        model = stack.pop()
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            name = field.alias or name
            if not any(f in doc for f in (f"`{name}`", f".{name}`", f"`{name}.")):
                missing.append(f"{model.__name__}.{name}")
            stack.extend(_models(field.annotation))
    assert missing == []


def _models(annotation: object) -> list[type]:
    """The config models an annotation names (``X``, ``X | None``, ``list[X]``...)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def test_models_are_frozen_and_picklable() -> None:
    cfg = load(minimal(auth={"enabled": True, "username": "u", "password": SECRET}))
    with pytest.raises(ValidationError):
        cfg.sinks.kafka.topic = "other"  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg
    assert again.sinks.kafka.auth.password.get_secret_value() == SECRET  # type: ignore[union-attr]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("100ms", 0.1),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (2, 2.0),
        (0.25, 0.25),
        ("3", 3.0),
    ],
)
def test_duration_forms(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    cfg = load(minimal(batch_timeout=text))
    assert cfg.sinks.kafka.batch_timeout == seconds


@pytest.mark.parametrize("bad", ["", "5x", "-5s", "s", "5 s", "nan", "inf", True, None, [1], -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(bad)


def test_durations_dump_as_compact_strings() -> None:
    cfg = load(minimal(batch_timeout="100ms", timeout=90))
    dumped = cfg.model_dump(mode="json")["sinks"]["kafka"]
    assert dumped["batch_timeout"] == "100ms"
    assert dumped["timeout"] == "90s"
    assert dumped["circuit_breaker"]["timeout"] == "1m"
    assert cfg.model_dump()["sinks"]["kafka"]["batch_timeout"] == 0.1


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --------------------------------------------------------------------------- ${VAR}


def test_env_substitution_anywhere() -> None:
    text = """
sinks:
  kafka:
    brokers: ["${HOST}:${PORT}"]
    topic: "${TOPIC:-logs}"
    batch_size: ${BATCH}
    required_acks: ${ACKS}
    auth:
      enabled: ${AUTH_ON}
      username: "${KAFKA_USERNAME}"
      password: "${KAFKA_PASSWORD}"
"""
    env = {
        "HOST": "kafka1",
        "PORT": "9092",
        "BATCH": "250",
        "ACKS": "-1",
        "AUTH_ON": "true",
        "KAFKA_USERNAME": "log-capturer",
        "KAFKA_PASSWORD": SECRET,
    }
    k = parse_config_text(text, env=env).sinks.kafka
    assert k.brokers == ["kafka1:9092"]
    assert k.topic == "logs"
    assert k.batch_size == 250
    assert k.required_acks == -1
    assert k.auth.enabled is True
    assert k.auth.username == "log-capturer"
    assert k.auth.password is not None and k.auth.password.get_secret_value() == SECRET


def test_env_default_used_when_unset_or_empty_and_escape() -> None:
    k = load(minimal(topic="${T:-fallback}", dlq_config={"path": "/d/$${HOME}"}), {"T": ""})
    assert k.sinks.kafka.topic == "fallback"
    assert k.sinks.kafka.dlq_config.path == "/d/${HOME}"


def test_unset_variable_names_variable_and_path() -> None:
    data = minimal(auth={"enabled": True, "username": "u", "password": "${KAFKA_PASSWORD}"})
    assert problems_of(data) == [
        "sinks.kafka.auth.password: environment variable KAFKA_PASSWORD is not set"
    ]


def test_unset_variable_in_list_and_malformed_reference() -> None:
    data = minimal(brokers=["a:1", "${B2}"], topic="x${oops")
    assert problems_of(data) == [
        "sinks.kafka.brokers[1]: environment variable B2 is not set",
        "sinks.kafka.topic: malformed ${...} reference (write ${NAME} or ${NAME:-default}; "
        "$${ for a literal ${)",
    ]


def test_environment_values_are_not_quoted_in_errors() -> None:
    probs = problems_of(minimal(batch_size="${B}"), {"B": "lots-of-" + SECRET})
    assert probs == ["sinks.kafka.batch_size: expected an integer (the value of ${B})"]


def test_os_environ_is_the_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPPER_TEST_TOPIC", "from-os")
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    cfg = load_config(minimal(topic="${SHIPPER_TEST_TOPIC}"))
    assert cfg.sinks.kafka.topic == "from-os"


# --------------------------------------------------------------------------- KAFKA_BROKERS


def test_kafka_brokers_env_overrides_brokers() -> None:
    cfg = load(minimal(), {"KAFKA_BROKERS": " k1:9092, k2:9093 ,,"})
    assert cfg.sinks.kafka.brokers == ["k1:9092", "k2:9093"]


def test_empty_kafka_brokers_env_is_ignored() -> None:
    assert load(minimal(), {"KAFKA_BROKERS": " "}).sinks.kafka.brokers == ["kafka:9092"]


def test_kafka_brokers_env_fills_missing_brokers() -> None:
    data = {"sinks": {"kafka": {"topic": "logs"}}}
    assert load(data, {"KAFKA_BROKERS": "k:1"}).sinks.kafka.brokers == ["k:1"]


def test_bad_kafka_brokers_env_is_reported_with_its_origin() -> None:
    assert problems_of(minimal(), {"KAFKA_BROKERS": "nohost"}) == [
        "sinks.kafka.brokers[0]: is not a host:port address (e.g. kafka1:9092 or [::1]:9092) "
        "(the value of ${KAFKA_BROKERS})"
    ]


# --------------------------------------------------------------------------- secrets


def test_secret_never_in_repr_str_or_default_dump() -> None:
    cfg = load(minimal(auth={"enabled": True, "username": "u", "password": SECRET}))
    k = cfg.sinks.kafka
    for text in (
        repr(cfg),
        str(cfg),
        repr(k.auth),
        str(cfg.model_dump()),
        str(cfg.model_dump(mode="json")),
        cfg.model_dump_json(),
        to_yaml(cfg),
        repr(librdkafka_settings(k)),
        str(librdkafka_settings(k)),
        k.broker_set_id(),
    ):
        assert SECRET not in text
    assert cfg.model_dump(mode="json")["sinks"]["kafka"]["auth"]["password"] == MASK
    assert MASK in to_yaml(cfg)
    assert librdkafka_settings(k)["sasl.password"] == SECRET
    revealed = cfg.model_dump(mode="json", context={"reveal_secrets": True})
    assert revealed["sinks"]["kafka"]["auth"]["password"] == SECRET


@pytest.mark.parametrize("bad", [12345678, ["x", SECRET], {"v": SECRET}, True])
def test_secret_field_errors_never_echo_input(bad: object) -> None:
    probs = problems_of(minimal(auth={"enabled": True, "username": "u", "password": bad}))
    assert len(probs) == 1 and probs[0].startswith("sinks.kafka.auth.password: expected a string")
    assert SECRET not in probs[0] and "12345678" not in probs[0]


def test_direct_construction_errors_hide_input() -> None:
    with pytest.raises(ValidationError) as info:
        AuthConfig(enabled=True, username="u", password=[SECRET])  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


def test_auth_requires_credentials_when_enabled() -> None:
    assert problems_of(minimal(auth={"enabled": True})) == [
        "sinks.kafka.auth.username: is required when auth.enabled is true",
        "sinks.kafka.auth.password: is required when auth.enabled is true",
    ]
    assert load(minimal(auth={"enabled": False})).sinks.kafka.auth.password is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        (
            {"compression": "brotli"},
            "sinks.kafka.compression: 'brotli' is not one of none, gzip, snappy, lz4, zstd",
        ),
        ({"required_acks": 2}, "sinks.kafka.required_acks: 2 is not one of 0, 1, -1"),
        ({"required_acks": True}, "sinks.kafka.required_acks: expected one of 0, 1, -1, got True"),
        ({"queue_size": -5}, "sinks.kafka.queue_size: must be at least 1, got -5"),
        ({"retry_max": -1}, "sinks.kafka.retry_max: must be at least 0, got -1"),
        ({"batch_size": "many"}, "sinks.kafka.batch_size: expected an integer, got 'many'"),
        ({"batch_size": 1.5}, "sinks.kafka.batch_size: expected a whole number, got 1.5"),
        ({"enabled": "maybe"}, "sinks.kafka.enabled: expected true or false, got 'maybe'"),
        ({"topic": 7}, "sinks.kafka.topic: expected a string, got 7 (quote it in YAML)"),
        ({"brokers": []}, "sinks.kafka.brokers: needs at least 1 item"),
        ({"brokers": "kafka:9092"}, "sinks.kafka.brokers: expected a list, got 'kafka:9092'"),
        (
            {"brokers": ["kafka:99999"]},
            "sinks.kafka.brokers[0]: is not a host:port address (e.g. kafka1:9092 or "
            "[::1]:9092), got 'kafka:99999'",
        ),
        (
            {"topic": "no spaces"},
            "sinks.kafka.topic: is not a Kafka topic name (1-249 characters of A-Z, a-z, "
            "0-9, '.', '_', '-'), got 'no spaces'",
        ),
        (
            {"batch_timeout": "soon"},
            "sinks.kafka.batch_timeout: is not a duration; write a number with a unit ms, s, "
            "m or h (e.g. 100ms, 5s, 5m), got 'soon'",
        ),
        ({"batch_timeout": 0}, "sinks.kafka.batch_timeout: must be longer than 0s, got 0"),
        ({"timeout": "5ms"}, "sinks.kafka.timeout: must be at least 10ms, got '5ms'"),
        ({"timeout": "1000h"}, "sinks.kafka.timeout: must be at most 596h, got '1000h'"),
        (
            {"batch_size": 60000},
            "sinks.kafka.batch_size: must be at most queue_size (50000), got 60000",
        ),
        (
            {"partitioning": {"strategy": "sticky"}},
            "sinks.kafka.partitioning.strategy: 'sticky' is not one of hash, round-robin, random",
        ),
        (
            {"auth": {"mechanism": "GSSAPI"}},
            "sinks.kafka.auth.mechanism: 'GSSAPI' is not one of PLAIN, SCRAM-SHA-256, "
            "SCRAM-SHA-512",
        ),
        (
            {"tls": {"enabled": True, "cert_file": "/c.pem"}},
            "sinks.kafka.tls.key_file: is required when cert_file is set (mutual TLS)",
        ),
        (
            {"backpressure_config": {"queue_warning_threshold": 0.95}},
            "sinks.kafka.backpressure_config.queue_critical_threshold: must be greater than "
            "queue_warning_threshold (0.95), got 0.9",
        ),
        (
            {"backpressure_config": {"queue_emergency_threshold": 0}},
            "sinks.kafka.backpressure_config.queue_emergency_threshold: must be greater than "
            "0.0, got 0",
        ),
        (
            {"dlq_config": {"max_disk_bytes": 1 << 30}},
            "sinks.kafka.dlq_config.max_disk_bytes: must be at most 90% of map_size_bytes "
            "(966367641), got 1073741824",
        ),
        (
            {"routing": {"low_priority_levels": ["ERROR"]}},
            "sinks.kafka.routing.low_priority_levels: also listed as high priority: error",
        ),
        (
            {"preset": "fast"},
            "sinks.kafka.preset: 'fast' is not one of high-throughput, low-latency, "
            "high-durability, balanced",
        ),
        (
            {"partitioning": "hash"},
            "sinks.kafka.partitioning: expected a mapping with keys enabled, strategy, "
            "key_field, got 'hash'",
        ),
        (
            {"compresion": "gzip"},
            "sinks.kafka.compresion: unknown key (allowed: preset, enabled, brokers, topic, "
            "topic_default, max_topics, compression, batch_size, batch_timeout, queue_size, "
            "max_message_bytes, required_acks, timeout, retry_max, partitioning, auth, tls, "
            "dlq_config, backpressure_config, routing, circuit_breaker, headers, "
            "headers_from_labels, entry_id_header)",
        ),
        (
            {"headers": {"bad name": "x"}},
            "sinks.kafka.headers.bad name: 'bad name' is not a usable header name: use "
            "1-255 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
        (
            {"headers": {"env": "prod"}, "headers_from_labels": ["env"]},
            "sinks.kafka.headers_from_labels: header env is named more than once among headers, "
            "headers_from_labels and entry_id_header; a message would carry it twice",
        ),
    ],
)
def test_each_error_kind_names_path_and_allowed_values(
    kafka: dict[str, Any], expected: str
) -> None:
    assert problems_of(minimal(**kafka)) == [expected]


def test_missing_required_and_unknown_sections() -> None:
    assert problems_of({"sinks": {"kafka": {}}, "outputs": {}}) == [
        "sinks.kafka.brokers: is required",
        "sinks.kafka.topic: is required",
        "outputs: unknown key (allowed: sinks, metrics, pipeline, logging, sources, fleet)",
    ]
    assert problems_of({}) == ["sinks: is required"]
    assert problems_of({"sinks": {"kafka": {"brokers": ["a:1"], "topic": "t"}, "s3": {}}}) == [
        "sinks.s3: unknown key (allowed: kafka)"
    ]


def test_all_errors_of_a_file_at_once() -> None:
    text = """
sinks:
  kafka:
    brokers: ["kafka", "ok:9092"]
    compression: brotli
    required_acks: 2
    batch_size: 60000
    queue_size: 50000
    auth: {enabled: true, password: "${KAFKA_PASSWORD}"}
    backpressure_config:
      queue_warning_threshold: 0.9
      queue_critical_threshold: 0.8
      queue_emergency_threshold: 1.5
metrics: {port: 70000}
pipeline: {drain_timeout: never}
"""
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "prod.yaml", env={})
    err = info.value
    assert err.source == "prod.yaml"
    assert sorted(err.problems) == sorted(
        [
            "sinks.kafka.auth.password: environment variable KAFKA_PASSWORD is not set",
            "sinks.kafka.brokers[0]: is not a host:port address (e.g. kafka1:9092 or "
            "[::1]:9092), got 'kafka'",
            "sinks.kafka.topic: is required",
            "sinks.kafka.compression: 'brotli' is not one of none, gzip, snappy, lz4, zstd",
            "sinks.kafka.required_acks: 2 is not one of 0, 1, -1",
            "sinks.kafka.auth.username: is required when auth.enabled is true",
            "sinks.kafka.backpressure_config.queue_emergency_threshold: must be at most 1.0, "
            "got 1.5",
            "sinks.kafka.backpressure_config.queue_critical_threshold: must be greater than "
            "queue_warning_threshold (0.9), got 0.8",
            "sinks.kafka.batch_size: must be at most queue_size (50000), got 60000",
            "metrics.port: must be at most 65535, got 70000",
            "pipeline.drain_timeout: is not a duration; write a number with a unit ms, s, m "
            "or h (e.g. 100ms, 5s, 5m), got 'never'",
        ]
    )
    assert str(err).startswith("11 configuration problems in prod.yaml:\n  - ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sinks:\n  kafka:\n    topic: [logs\n", r"^line 4, column 1: YAML syntax error"),
        (
            "sinks:\n  kafka: x\n  kafka: y\n",
            r"^line 3, column 3: YAML syntax error: duplicate key",
        ),
        ("sinks:\n\tkafka: 1\n", r"^line 2, column 1: YAML syntax error"),
        ("", r"^config: the configuration is empty"),
        ("- a\n- b\n", r"^config: expected a mapping with the key sinks, got a list"),
    ],
)
def test_yaml_problems_give_the_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, env={})
    assert len(info.value.problems) == 1
    assert re.search(expected, info.value.problems[0]), info.value.problems


# --------------------------------------------------------------------------- presets


def test_presets_supply_defaults_and_file_overrides_them() -> None:
    k = load(minimal(preset="high-throughput", compression="snappy")).sinks.kafka
    assert (k.batch_size, k.batch_timeout, k.queue_size) == (5000, 10.0, 100000)
    assert k.compression == "snappy"  # the file wins over the preset
    assert k.partitioning.strategy == "round-robin"
    assert k.partitioning.enabled is False  # the preset names a strategy only
    assert k.preset == "high-throughput"

    k = load(minimal(preset="low-latency")).sinks.kafka
    assert (k.batch_size, k.batch_timeout, k.queue_size, k.compression) == (
        100,
        0.1,
        10000,
        "none",
    )
    k = load(minimal(preset="high-durability", partitioning={"enabled": True})).sinks.kafka
    assert (k.required_acks, k.retry_max, k.compression) == (-1, 5, "snappy")
    assert librdkafka_settings(k)["enable.idempotence"] is True
    k = load(minimal(preset="balanced")).sinks.kafka
    assert (k.batch_size, k.batch_timeout, k.compression, k.required_acks) == (
        1000,
        5.0,
        "snappy",
        1,
    )


def test_preset_names_and_preset_conflicts_are_reported() -> None:
    assert set(PRESETS) == {"high-throughput", "low-latency", "high-durability", "balanced"}
    # low-latency's queue is 10000; a batch of 20000 no longer fits.
    assert problems_of(minimal(preset="low-latency", batch_size=20000)) == [
        "sinks.kafka.batch_size: must be at most queue_size (10000), got 20000"
    ]


# --------------------------------------------------------------------------- loading


def test_load_config_sources(tmp_path: Path) -> None:
    text = "sinks:\n  kafka:\n    brokers: [k:1]\n    topic: t\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    expected = parse_config_text(text, env={})
    assert load_config(str(path), env={}) == expected
    assert load_config(path, env={}) == expected
    assert load_config(text, env={}) == expected
    assert load_config(yaml.safe_load(text), env={}) == expected
    assert load_config(expected) is expected
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"), env={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml", env={})
    with pytest.raises(ConfigError) as info:
        load_config(path.with_name("bad.yaml"), env={})
    assert info.value.source is not None and info.value.source.endswith("bad.yaml")


def test_check_files_reports_missing_and_unreadable_tls_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = load(
        minimal(
            tls={
                "enabled": True,
                "ca_file": str(ca),
                "cert_file": str(tmp_path / "nope.pem"),
                "key_file": str(tmp_path),
            }
        )
    )
    assert check_files(cfg) == [
        f"sinks.kafka.tls.cert_file: file {tmp_path / 'nope.pem'} does not exist",
        f"sinks.kafka.tls.key_file: {tmp_path} is not a regular file",
    ]
    if os.geteuid() != 0:  # root reads anything
        ca.chmod(0)
        assert check_files(cfg)[0].startswith("sinks.kafka.tls.ca_file: file")
    # Files are only checked when TLS is on, and never while parsing.
    off = load(minimal(tls={"enabled": False, "ca_file": "/nope"}))
    assert check_files(off) == []


def test_to_yaml_escapes_dollar_braces_so_dumps_reload() -> None:
    cfg = load(minimal(topic="t", dlq_config={"path": "/x/$${HOME}"}))
    assert cfg.sinks.kafka.dlq_config.path == "/x/${HOME}"
    again = parse_config_text(to_yaml(cfg), env={})
    assert again == cfg


# --------------------------------------------------------------------------- helpers


def test_librdkafka_settings_plaintext() -> None:
    k = load(minimal(compression="lz4", batch_timeout="100ms", batch_size=500)).sinks.kafka
    assert dict(librdkafka_settings(k)) == {
        "bootstrap.servers": "kafka:9092",
        "compression.type": "lz4",
        "acks": "1",
        "enable.idempotence": False,
        "retries": 3,
        "message.timeout.ms": 30000,
        "linger.ms": 1.0,
        "batch.num.messages": 500,
        "message.max.bytes": 1048576 + 65536,
        "security.protocol": "PLAINTEXT",
        "reconnect.backoff.max.ms": 2000,
        "partitioner": "murmur2_random",
        "socket.nagle.disable": True,
        "topic.metadata.refresh.interval.ms": 30000,
        "queue.buffering.max.messages": 100000,
    }


@pytest.mark.parametrize(("acks", "text"), [(0, "0"), (1, "1"), (-1, "all")])
def test_librdkafka_acks_and_idempotence(acks: int, text: str) -> None:
    conf = librdkafka_settings(load(minimal(required_acks=acks)).sinks.kafka)
    assert conf["acks"] == text
    assert conf["enable.idempotence"] is (acks == -1)
    # librdkafka refuses idempotence without retries, so it is off then.
    no_retry = load(minimal(required_acks=acks, retry_max=0)).sinks.kafka
    assert librdkafka_settings(no_retry)["enable.idempotence"] is False


def test_linger_follows_short_batch_timeouts() -> None:
    k = load(minimal(batch_timeout="0.5ms")).sinks.kafka
    assert librdkafka_settings(k)["linger.ms"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("auth", "tls", "protocol"),
    [
        (False, False, "PLAINTEXT"),
        (True, False, "SASL_PLAINTEXT"),
        (False, True, "SSL"),
        (True, True, "SASL_SSL"),
    ],
)
def test_librdkafka_security(auth: bool, tls: bool, protocol: str) -> None:
    k = load(
        minimal(
            auth={"enabled": auth, "mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"},
            tls={
                "enabled": tls,
                "verify_certificate": False,
                "ca_file": "/ca",
                "cert_file": "/c",
                "key_file": "/k",
            },
        )
    ).sinks.kafka
    conf = librdkafka_settings(k)
    assert conf["security.protocol"] == protocol
    assert ("sasl.password" in conf) is auth
    if auth:
        assert (conf["sasl.mechanism"], conf["sasl.username"]) == ("SCRAM-SHA-512", "u")
    if tls:
        assert conf["ssl.ca.location"] == "/ca"
        assert conf["ssl.certificate.location"] == "/c"
        assert conf["ssl.key.location"] == "/k"
        assert conf["enable.ssl.certificate.verification"] is False
        assert conf["ssl.endpoint.identification.algorithm"] == "none"
    else:
        assert not any(key.startswith("ssl.") for key in conf)


def test_librdkafka_accepts_the_settings() -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    for preset in PRESETS:
        k = load(minimal(preset=preset, auth={"enabled": True, "username": "u", "password": "p"}))
        # Building a producer validates every property; it connects only lazily.
        producer = confluent_kafka.Producer(dict(librdkafka_settings(k.sinks.kafka)))
        producer.flush(0)


def test_broker_set_id_is_stable_and_secret_free() -> None:
    auth = {"enabled": True, "username": "u", "password": SECRET}
    a = load(minimal(brokers=["a:1", "b:2"], auth=auth)).sinks.kafka
    b = load(minimal(brokers=["b:2", "a:1"], auth=auth, topic="other")).sinks.kafka
    assert a.broker_set_id() == b.broker_set_id()
    assert re.fullmatch(r"[0-9a-f]{12}", a.broker_set_id())
    other_pw = load(minimal(brokers=["a:1", "b:2"], auth={**auth, "password": "x"})).sinks.kafka
    assert other_pw.broker_set_id() != a.broker_set_id()
    plain = load(minimal(brokers=["a:1", "b:2"])).sinks.kafka
    assert plain.broker_set_id() != a.broker_set_id()
    # Fixed value: the id must not change between processes or releases by accident.
    # It is sha256('{"brokers":["kafka:9092"],"protocol":"PLAINTEXT"}')[:12].
    assert load(minimal()).sinks.kafka.broker_set_id() == "73681f0d7297"


# --------------------------------------------------------------------------- properties

_NAME = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..")
)
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="$\x00"),
    min_size=1,
    max_size=30,
)
_SECONDS = st.floats(min_value=0.01, max_value=100_000, allow_nan=False, allow_infinity=False)
_BROKER = st.builds(
    "{}:{}".format, st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True), st.integers(1, 65535)
)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    queue = draw(st.integers(1, 200_000))
    levels = sorted(draw(st.sets(st.floats(0.01, 1.0), min_size=3, max_size=3)))
    high = draw(st.lists(st.sampled_from(["error", "fatal", "critical", "x"]), unique=True))
    low = draw(st.lists(st.sampled_from(["debug", "trace", "y"]), unique=True))
    cert = draw(st.one_of(st.none(), _TEXT))
    map_size = draw(st.integers(1 << 20, 1 << 34))
    kafka: dict[str, Any] = {
        "enabled": draw(st.booleans()),
        "brokers": draw(st.lists(_BROKER, min_size=1, max_size=4)),
        "topic": draw(_NAME),
        "compression": draw(st.sampled_from(["none", "gzip", "snappy", "lz4", "zstd"])),
        "batch_size": draw(st.integers(1, min(queue, 1_000_000))),
        "batch_timeout": draw(_SECONDS),
        "queue_size": queue,
        "max_message_bytes": draw(st.integers(1, 100_000_000)),
        "required_acks": draw(st.sampled_from([0, 1, -1])),
        "timeout": draw(_SECONDS),
        "retry_max": draw(st.integers(0, 100)),
        "partitioning": {
            "enabled": draw(st.booleans()),
            "strategy": draw(st.sampled_from(["hash", "round-robin", "random"])),
            "key_field": draw(st.one_of(st.none(), _TEXT)),
        },
        "auth": {
            "enabled": True,
            "mechanism": draw(st.sampled_from(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])),
            "username": draw(_TEXT),
            "password": draw(_TEXT),
        },
        "tls": {
            "enabled": draw(st.booleans()),
            "verify_certificate": draw(st.booleans()),
            "ca_file": draw(st.one_of(st.none(), _TEXT)),
            "cert_file": cert,
            "key_file": None if cert is None else draw(_TEXT),
        },
        "dlq_config": {
            "enabled": draw(st.booleans()),
            "path": draw(_TEXT),
            "map_size_bytes": map_size,
            "max_disk_bytes": draw(st.integers(1 << 16, map_size * 9 // 10)),
            "reprocessing_config": {"interval": draw(_SECONDS), "batch_size": 7},
        },
        "backpressure_config": dict(
            zip(
                [
                    "queue_warning_threshold",
                    "queue_critical_threshold",
                    "queue_emergency_threshold",
                ],
                levels,
                strict=True,
            )
        ),
        "routing": {"high_priority_levels": high, "low_priority_levels": low},
        "circuit_breaker": {"failure_threshold": draw(st.integers(1, 100))},
    }
    if draw(st.booleans()):
        kafka["preset"] = draw(st.sampled_from(sorted(PRESETS)))
    return {
        "sinks": {"kafka": kafka},
        "metrics": {"port": draw(st.integers(0, 65535))},
        "pipeline": {"drain_timeout": draw(st.floats(0, 1000))},
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_dump_then_load_is_identity(data: dict[str, Any]) -> None:
    cfg = load(data)
    dumped = cfg.model_dump(mode="json", context={"reveal_secrets": True})
    assert load(dumped) == cfg
    assert parse_config_text(to_yaml(cfg, reveal_secrets=True), env={}) == cfg


_JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(["5s", "${X}", "${", "$${", "none", "-1", "0.5", "a:1", "1e400"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = [
    *KafkaSinkConfig.model_fields,
    "partitioning.strategy",
    "auth.password",
    "auth.enabled",
    "tls.cert_file",
    "dlq_config.reprocessing_config.interval",
    "backpressure_config.queue_critical_threshold",
    "routing.high_priority_levels",
    "circuit_breaker",
    "nonsense",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _JUNK), min_size=1, max_size=4))
def test_invalid_values_only_ever_raise_config_error(edits: list[tuple[str, Any]]) -> None:
    data = minimal(auth={"enabled": True, "username": "u", "password": SECRET})
    for dotted, value in edits:
        node = data["sinks"]["kafka"]
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) else None
            if node is None:
                break
        if node is not None:
            node[last] = value
    try:
        load(data, {"X": "1"})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and ": " in p for p in exc.problems)
        assert SECRET not in str(exc)


@settings(max_examples=200, deadline=None)
@given(_JUNK)
def test_arbitrary_documents_only_ever_raise_config_error(doc: Any) -> None:
    try:
        load(doc)
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_config_error(text: str) -> None:
    try:
        parse_config_text(text, env={})
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=100, deadline=None)
@given(
    st.text(string.ascii_letters + string.digits + "!#%&*+-/:;<=>?@^_|~", min_size=8),
    st.sampled_from(["plain", "list", "int-like"]),
)
def test_password_never_in_errors(tail: str, shape: str) -> None:
    secret = "~Q7" + tail  # distinctive, so a hit is the password and not a common word
    password: object = {"plain": secret, "list": [secret], "int-like": secret}[shape]
    data = minimal(
        compression="brotli",
        batch_size=0,
        auth={"enabled": True, "username": 5, "password": password},
    )
    with pytest.raises(ConfigError) as info:
        load(data)
    assert secret not in str(info.value)
    cfg = load(minimal(auth={"enabled": True, "username": "u", "password": secret}))
    assert secret not in repr(cfg) and secret not in to_yaml(cfg)


def test_http_tls_needs_a_certificate_and_its_key_and_mtls_needs_https() -> None:
    base = {"sinks": {"kafka": {"enabled": True, "brokers": ["k:9092"], "topic": "t"}}}

    def http(tls: dict[str, str]) -> dict[str, object]:
        return {**base, "sources": {"http": {"enabled": True, "tls": tls}}}

    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(http({"cert_file": "/c.pem"}))
    with pytest.raises(ConfigError, match="client_ca_file needs cert_file"):
        load_config(http({"client_ca_file": "/ca.pem"}))
    cfg = load_config(http({"cert_file": "/c.pem", "key_file": "/k.pem"}))
    assert cfg.sources.http.tls.enabled
    assert not load_config(http({})).sources.http.tls.enabled
    problems = check_files(cfg)
    assert "sources.http.tls.cert_file: file /c.pem does not exist" in problems
