"""Tests for shipper.routing: precedence, level routing, topic name validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.entries import LogEntry
from shipper.errors import ConfigError, EntryError
from shipper.routing import TopicRouter, TopicTemplate, topic_problem

LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "critical", "notice"]


@pytest.mark.parametrize(
    ("level", "topic"),
    [
        ("error", "logs-high-priority"),
        ("fatal", "logs-high-priority"),
        ("critical", "logs-high-priority"),
        ("debug", "logs-low-priority"),
        ("trace", "logs-low-priority"),
        ("info", "logs"),
        ("warn", "logs"),
        ("notice", "logs"),
    ],
)
def test_spec_level_routing(level: str, topic: str) -> None:
    assert TopicRouter("logs").topic_for(LogEntry("m", level)) == topic


def test_aliased_levels_route_like_their_canonical_form() -> None:
    router = TopicRouter("logs")
    assert router.topic_for(LogEntry("m", "ERR")) == "logs-high-priority"
    assert router.topic_for(LogEntry("m", "crit")) == "logs-high-priority"


def test_label_wins_over_level() -> None:
    router = TopicRouter("logs")
    e = LogEntry("High priority log", "debug", labels={"kafka_topic": "audit.v1"})
    assert router.topic_for(e) == "audit.v1"


def test_empty_label_counts_as_absent() -> None:
    router = TopicRouter("logs")
    assert router.topic_for(LogEntry("m", "error", labels={"kafka_topic": ""})) == (
        "logs-high-priority"
    )


def test_routing_disabled_uses_default_but_label_still_wins() -> None:
    router = TopicRouter("logs", routing_enabled=False)
    assert router.topic_for(LogEntry("m", "error")) == "logs"
    assert router.topic_for(LogEntry("m", "error", labels={"kafka_topic": "x"})) == "x"


def test_configurable_names_levels_and_label() -> None:
    router = TopicRouter(
        "main",
        high_topic="hot",
        low_topic="cold",
        high_levels=["Warning"],
        low_levels=["info"],
        topic_label="dest",
    )
    assert router.topic_for(LogEntry("m", "warn")) == "hot"
    assert router.topic_for(LogEntry("m", "info")) == "cold"
    assert router.topic_for(LogEntry("m", "error")) == "main"
    assert router.topic_for(LogEntry("m", labels={"dest": "elsewhere"})) == "elsewhere"
    assert router.topic_for(LogEntry("m", labels={"kafka_topic": "ignored"})) == "cold"


@pytest.mark.parametrize(
    "bad", [".", "..", "a" * 250, "has space", "slash/topic", "ümlaut", "colon:x", "a\nb"]
)
def test_invalid_label_is_rejected(bad: str) -> None:
    router = TopicRouter("logs")
    entry = LogEntry("m", "error", labels={"kafka_topic": bad})
    with pytest.raises(EntryError) as info:
        router.topic_for(entry)
    assert info.value.reason == "invalid_topic"
    assert "kafka_topic" in info.value.detail

    groups = router.route([LogEntry("ok"), entry, LogEntry("ok2", "error")])
    assert groups == {"logs": [0], "logs-high-priority": [2]}
    assert [e.reason for e in router.rejected] == ["invalid_topic"]
    groups2, rejected = router.route_with_errors([entry, LogEntry("ok")])
    assert groups2 == {"logs": [1]}
    assert [(i, e.reason) for i, e in rejected] == [(0, "invalid_topic")]


def test_rejected_is_replaced_each_call() -> None:
    router = TopicRouter("logs")
    router.route([LogEntry("m", labels={"kafka_topic": "bad topic"})])
    assert len(router.rejected) == 1
    router.route([LogEntry("m")])
    assert router.rejected == []


@pytest.mark.parametrize("name", ["a", "logs", "A.b_c-9", "a" * 249, "..."])
def test_legal_topic_names(name: str) -> None:
    assert topic_problem(name) is None


def test_invalid_configured_topics_raise_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        TopicRouter("bad topic", high_topic="..")
    text = str(info.value)
    assert "topic:" in text and "high_priority_topic:" in text
    # Routing off: the priority topics are not used, so they are not checked.
    TopicRouter("logs", routing_enabled=False, high_topic="..")


def test_route_groups_in_order() -> None:
    router = TopicRouter("logs")
    entries = [
        LogEntry("a", "info"),
        LogEntry("b", "error"),
        LogEntry("c", "debug", labels={"kafka_topic": "t1"}),
        LogEntry("d", "info"),
        LogEntry("e", "trace"),
    ]
    assert router.route(entries) == {
        "logs": [0, 3],
        "logs-high-priority": [1],
        "t1": [2],
        "logs-low-priority": [4],
    }
    assert router.route([]) == {}


def test_label_cache_is_bounded() -> None:
    router = TopicRouter("logs")
    entries = [LogEntry("m", labels={"kafka_topic": f"t{i}"}) for i in range(10_000)]
    groups = router.route(entries)
    assert len(groups) == 10_000
    assert len(router._label_ok) <= 4096


# -- properties --------------------------------------------------------------------

_labels = st.dictionaries(
    st.sampled_from(["kafka_topic", "service", "env"]),
    st.text(alphabet="ab.-_ /", max_size=6),
    max_size=3,
)
_entries = st.builds(LogEntry, message=st.just("m"), level=st.sampled_from(LEVELS), labels=_labels)


@given(st.lists(_entries, max_size=40), st.booleans())
def test_precedence_property(entries: list[LogEntry], enabled: bool) -> None:
    router = TopicRouter("logs", routing_enabled=enabled)
    groups, rejected = router.route_with_errors(entries)
    where = {i: t for t, idx in groups.items() for i in idx}
    bad = {i for i, _ in rejected}
    assert set(where) | bad == set(range(len(entries)))
    assert not set(where) & bad
    for i, e in enumerate(entries):
        label = e.labels.get("kafka_topic")
        if label:
            if topic_problem(label) is None:
                assert where[i] == label
            else:
                assert i in bad
        elif enabled and e.level in ("error", "fatal", "critical"):
            assert where[i] == "logs-high-priority"
        elif enabled and e.level in ("debug", "trace"):
            assert where[i] == "logs-low-priority"
        else:
            assert where[i] == "logs"
    for idx in groups.values():
        assert idx == sorted(idx)


@given(st.text(max_size=300))
def test_topic_problem_matches_kafka_rules(name: str) -> None:
    legal = (
        0 < len(name) <= 249
        and name not in (".", "..")
        and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    )
    assert (topic_problem(name) is None) == legal


# --------------------------------------------------------------------------- templates


def test_a_template_names_the_topic_from_level_labels_and_fields() -> None:
    r = TopicRouter("logs-{labels.service}-{level}", routing_enabled=False, topic_default="misc")
    e = LogEntry("x", level="warn", labels={"service": "billing"})
    assert r.topic_for(e) == "logs-billing-warn"
    f = TopicRouter("t.{fields.tenant}", routing_enabled=False, topic_default="misc")
    assert f.topic_for(LogEntry("x", fields={"tenant": 42})) == "t.42"
    braces = TopicTemplate("a{{b}}-{level}")
    assert braces.render(LogEntry("x", level="info")) == "a{b}-info"


def test_entries_a_template_cannot_name_go_to_the_default_and_are_counted() -> None:
    r = TopicRouter(
        "logs-{labels.service}", routing_enabled=False, topic_default="misc", max_topics=2
    )
    entries = [
        LogEntry("a", labels={"service": "one"}),
        LogEntry("b"),  # no label: missing_field
        LogEntry("c", labels={"service": ""}),  # empty: missing_field
        LogEntry("d", labels={"service": "bad name!"}),  # invalid_name
        LogEntry("e", labels={"service": "two"}),
        LogEntry("f", labels={"service": "three"}),  # a third topic: max_topics
        LogEntry("g", labels={"service": "one"}),  # known: fine
    ]
    groups = r.route(entries)
    assert groups == {"logs-one": [0, 6], "misc": [1, 2, 3, 5], "logs-two": [4]}
    assert r.fallbacks == {"missing_field": 2, "invalid_name": 1, "max_topics": 1}
    assert r.rejected == []
    # Counted per call.
    r.route([LogEntry("h", labels={"service": "one"})])
    assert r.fallbacks == {}


def test_the_label_and_level_routing_win_over_the_template() -> None:
    r = TopicRouter("logs-{labels.service}", topic_default="misc")
    labelled = LogEntry("x", labels={"service": "s", "kafka_topic": "explicit"})
    assert r.topic_for(labelled) == "explicit"
    assert r.topic_for(LogEntry("x", level="error", labels={"service": "s"})) == (
        "logs-high-priority"
    )
    assert r.topic_for(LogEntry("x", level="info", labels={"service": "s"})) == "logs-s"


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("logs-{label.service}", "unknown placeholder {label.service}"),
        ("logs-{level", "unbalanced '{'"),
        ("logs-}", "unbalanced '}'"),
        ("logs-{labels.}", "unknown placeholder {labels.}"),
    ],
)
def test_bad_templates_are_config_errors_naming_the_topic(topic: str, problem: str) -> None:
    from shipper.config import load_config

    cfg = {"sinks": {"kafka": {"brokers": ["k:9092"], "topic": topic, "topic_default": "m"}}}
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert any(p.startswith("sinks.kafka.topic:") and problem in p for p in err.value.problems), (
        err.value.problems
    )


def test_a_template_needs_a_default_topic() -> None:
    from shipper.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config({"sinks": {"kafka": {"brokers": ["k:9092"], "topic": "l-{level}"}}}, env={})
    assert "topic_default" in str(err.value)
    ok = load_config(
        {"sinks": {"kafka": {"brokers": ["k:9092"], "topic": "l-{level}", "topic_default": "l"}}},
        env={},
    )
    assert ok.sinks.kafka.first_topic == "l"
