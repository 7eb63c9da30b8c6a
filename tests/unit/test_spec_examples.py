"""Every YAML example of the feature spec parses into the config model unchanged.

The blocks are read from the spec file itself (``SHIPPER_SPEC_PATH``, the guide or its
directory; else ``../shared/spec`` next to the repository), so an edited example is
checked the next time the tests run. Each ```yaml block is sorted by a rule:

* a mapping with ``sinks`` is a whole config file,
* a mapping with only ``kafka`` is a tuning block, placed under ``sinks`` (with a
  minimal broker and topic),
* a mapping whose keys are all ``sinks.kafka`` options is a snippet, placed under
  ``sinks.kafka`` next to a minimal broker and topic,
* anything else is skipped with a named reason: Docker Compose files (``services``),
  text that is not YAML at all (the Prometheus metric-name list), documents that are
  not mappings (the alert-rule list) and comment-only blocks (the circuit-breaker
  note).

A mapping that fits no rule fails the test, and the number of blocks per kind is
pinned, so a new or changed example in the spec cannot go unnoticed.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper.config import PRESETS, KafkaSinkConfig, load_config
from shipper.durations import DurationError, parse_duration

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = "kafka-integration-guide.md"

# Values from the spec's "Environment Variables" section.
SPEC_ENV = {"KAFKA_USERNAME": "log-capturer", "KAFKA_PASSWORD": "super-secret-password"}
# What a snippet needs around it to be a whole config.
SNIPPET_BASE = {"brokers": ["kafka:9092"], "topic": "logs"}

# Counted by hand in the spec as of this commit.
EXPECTED_KINDS = {"config": 4, "tuning": 3, "snippet": 22, "skip": 5}


def spec_path() -> Path:
    configured = os.environ.get("SHIPPER_SPEC_PATH")
    path = Path(configured) if configured else ROOT.parent / "shared" / "spec"
    return path / SPEC_FILE if path.is_dir() else path


def read_spec() -> str:
    path = spec_path()
    if not path.is_file():
        if os.environ.get("SHIPPER_SPEC_PATH") or os.environ.get("CI"):
            pytest.fail(f"feature spec not found at {path} (set SHIPPER_SPEC_PATH)")
        pytest.skip(f"feature spec not found at {path}; set SHIPPER_SPEC_PATH to check it")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    heading: str  # nearest heading above it
    text: str


# A fence may be indented (blocks inside numbered lists); the body is dedented.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```yaml[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def yaml_blocks(markdown: str) -> list[Block]:
    blocks = []
    for m in _FENCE.finditer(markdown):
        line = markdown.count("\n", 0, m.start()) + 1
        headings = re.findall(r"^#+ (.+)$", markdown[: m.start()], re.M)
        blocks.append(
            Block(line, headings[-1] if headings else "", textwrap.dedent(m.group("body")))
        )
    return blocks


class NotYaml:
    """Stands for a block that YAML cannot parse."""


def parse(block: Block) -> object:
    try:
        return yaml.safe_load(block.text)
    except yaml.YAMLError:
        return NotYaml()


def classify(doc: object) -> tuple[str, str, dict[str, Any] | None]:
    """(kind, reason, whole config) for one parsed block."""
    if isinstance(doc, NotYaml):
        return "skip", "not YAML (Prometheus metric names)", None
    if doc is None:
        return "skip", "comments only", None
    if not isinstance(doc, dict):
        return "skip", f"not a mapping ({type(doc).__name__}: metric names or alert rules)", None
    if "services" in doc:
        return "skip", "Docker Compose file", None
    if "sinks" in doc:
        return "config", "whole config", doc
    if set(doc) == {"kafka"}:
        return (
            "tuning",
            "tuning block under sinks",
            {"sinks": {"kafka": {**SNIPPET_BASE, **doc["kafka"]}}},
        )
    if set(doc) <= set(KafkaSinkConfig.model_fields):
        return "snippet", "sinks.kafka snippet", {"sinks": {"kafka": {**SNIPPET_BASE, **doc}}}
    raise AssertionError(f"a YAML block with keys {sorted(doc)} fits no rule; extend classify()")


def substitute(value: object) -> object:
    if isinstance(value, str):
        for name, text in SPEC_ENV.items():
            value = value.replace("${" + name + "}", text)
    return value


def leaves(node: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, (*path, k))]
    return [(path, node)]


def same(expected: object, actual: object) -> bool:
    if expected == actual:
        return True
    # "60s" and "1m" are the same duration; the dump writes the compact form.
    if isinstance(expected, str) and isinstance(actual, str):
        try:
            return parse_duration(expected) == parse_duration(actual)
        except DurationError:
            return False
    return False


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return yaml_blocks(read_spec())


def test_block_counts_are_what_the_spec_had(blocks: list[Block]) -> None:
    kinds: dict[str, int] = {}
    for block in blocks:
        kind = classify(parse(block))[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == EXPECTED_KINDS
    assert len(blocks) == sum(EXPECTED_KINDS.values())


def test_skipped_blocks_are_the_known_non_configs(blocks: list[Block]) -> None:
    skipped = [
        (b.heading, classify(parse(b))[1]) for b in blocks if classify(parse(b))[0] == "skip"
    ]
    assert skipped == [
        ("Docker Compose Integration", "Docker Compose file"),
        ("Docker Volume Mount", "Docker Compose file"),
        ("Configuration", "comments only"),
        ("Prometheus Metrics", "not YAML (Prometheus metric names)"),
        ("Alerts", "not a mapping (list: metric names or alert rules)"),
    ]


def test_every_config_block_parses_unchanged(blocks: list[Block]) -> None:
    checked = 0
    for block in blocks:
        _kind, _reason, whole = classify(parse(block))
        if whole is None:
            continue
        where = f"spec line {block.line} ({block.heading})"
        cfg = load_config(whole, env=SPEC_ENV)
        dumped = cfg.model_dump(mode="json", context={"reveal_secrets": True})
        for path, expected in leaves(whole):
            actual: Any = dumped
            for key in path:
                actual = actual[key]
            assert same(substitute(expected), actual), f"{where}: {'.'.join(path)}"
        checked += 1
    assert checked == sum(n for k, n in EXPECTED_KINDS.items() if k != "skip")


def test_config_blocks_also_parse_as_yaml_text(blocks: list[Block]) -> None:
    # The same blocks through the text loader (line numbers, ${VAR} in raw YAML).
    for block in blocks:
        kind, _reason, whole = classify(parse(block))
        if kind == "config":
            assert load_config(block.text, env=SPEC_ENV) == load_config(whole, env=SPEC_ENV)


def test_tuning_blocks_are_the_presets(blocks: list[Block]) -> None:
    by_heading = {
        block.heading: yaml.safe_load(block.text)["kafka"]
        for block in blocks
        if classify(parse(block))[0] == "tuning"
    }
    assert by_heading == {
        "High Throughput": PRESETS["high-throughput"],
        "Low Latency": PRESETS["low-latency"],
        "High Durability": PRESETS["high-durability"],
    }


def test_balanced_preset_is_the_tuning_table_row() -> None:
    table = re.search(r"^\| Balanced \|(.+)\|\s*$", read_spec(), re.M)
    assert table, "the tuning table has no Balanced row"
    batch_size, batch_timeout, compression, acks = (c.strip() for c in table.group(1).split("|"))
    assert PRESETS["balanced"] == {
        "batch_size": int(batch_size),
        "batch_timeout": batch_timeout,
        "compression": compression,
        "required_acks": int(acks),
    }


def test_defaults_are_the_parameter_table() -> None:
    spec = read_spec()
    start = spec.index("### Configuration Parameters")
    section = spec[start : spec.index("\n---", start)]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", section, re.M)
    assert len(rows) == 11
    cfg = load_config({"sinks": {"kafka": SNIPPET_BASE}}, env={}).sinks.kafka
    fields = KafkaSinkConfig.model_fields
    for name, kind, default in rows:
        default = default.strip()
        if default == "required":
            assert fields[name].is_required(), name
            continue
        expected: object
        if kind.strip() == "bool":
            expected = default == "true"
        elif kind.strip() == "duration":
            expected = parse_duration(default.strip('"'))
        elif kind.strip() == "int":
            expected = int(default)
        else:
            expected = default.strip('"')
        assert getattr(cfg, name) == expected, name


def test_circuit_breaker_note_matches_defaults(blocks: list[Block]) -> None:
    (note,) = [b.text for b in blocks if b.heading == "Configuration" and "Failure" in b.text]
    numbers = {
        key: int(n)
        for key, n in re.findall(r"- (Failure threshold|Success threshold|Timeout): (\d+)", note)
    }
    cb = load_config({"sinks": {"kafka": SNIPPET_BASE}}, env={}).sinks.kafka.circuit_breaker
    assert numbers == {
        "Failure threshold": cb.failure_threshold,
        "Success threshold": cb.success_threshold,
        "Timeout": cb.timeout,
    }


def test_compose_kafka_brokers_overrides_the_basic_config(blocks: list[Block]) -> None:
    compose = next(yaml.safe_load(b.text) for b in blocks if b.text.startswith("version:"))
    environment = compose["services"]["log-capturer"]["environment"]
    env = dict(item.split("=", 1) for item in environment)
    basic = next(yaml.safe_load(b.text) for b in blocks if b.heading == "Basic Configuration")
    assert load_config(basic, env=env).sinks.kafka.brokers == ["kafka:9092"]
