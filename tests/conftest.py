"""Fixtures shared by every test layer.

One real Kafka broker per session (``scripts/kafka-local``, started here if it is not
already running) and uuid-named topics that are deleted after each test. Integration
tests never skip: if the broker cannot be started, they fail with the script's error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shipper.testing import LocalKafka, create_topic, delete_topic


@pytest.fixture(scope="session")
def kafka() -> LocalKafka:
    """The running local broker (started on first use, left running for the session)."""
    return LocalKafka.ensure_up()


@pytest.fixture
def make_topic(kafka: LocalKafka) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(partitions=3, config={...}) -> name``; deleted after the test."""
    made: list[str] = []

    def factory(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = create_topic(kafka.client_config(), partitions=partitions, config=config)
        made.append(name)
        return name

    yield factory
    for name in made:
        delete_topic(kafka.client_config(), name)


@pytest.fixture
def topic(make_topic: Callable[..., str]) -> str:
    """A fresh three-partition topic."""
    return make_topic(partitions=3)
