"""Fixtures shared by every test layer.

One real Kafka broker per session (``scripts/kafka-local``, started here if it is not
already running) and uuid-named topics that are deleted after each test. Integration
tests never skip: if the broker cannot be started, they fail with the script's error.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings

from shipper.testing import LocalKafka, create_topic, delete_topic, kafka_local_script

# These machines are noisy (2 cores, a broker and Ray beside the tests): Hypothesis
# must judge properties, not timing.
settings.register_profile(
    "shipper", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("shipper")


@pytest.fixture(scope="session")
def kafka() -> LocalKafka:
    """The running local broker (started on first use, left running for the session)."""
    return LocalKafka.ensure_up()


class BrokerSwitch:
    """Stops and starts the session's local broker for real (``scripts/kafka-local``)."""

    def __init__(self) -> None:
        self.stopped = False

    def _run(self, what: str) -> None:
        subprocess.run([str(kafka_local_script()), what], check=True, capture_output=True)

    def stop(self) -> None:
        self._run("stop")
        self.stopped = True

    def start(self) -> None:
        self._run("up")
        self.stopped = False


@pytest.fixture
def broker(kafka: LocalKafka) -> Iterator[BrokerSwitch]:
    """The broker, to stop mid-test; always running again after the test."""
    b = BrokerSwitch()
    try:
        yield b
    finally:
        if b.stopped:
            b.start()


@pytest.fixture
def make_topic(kafka: LocalKafka) -> Iterator[Callable[..., str]]:
    """Factory: ``make_topic(name=None, partitions=3, config={...}) -> name``; deleted after
    the test."""
    made: list[str] = []

    def factory(
        name: str | None = None, partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        name = create_topic(kafka.client_config(), name, partitions=partitions, config=config)
        made.append(name)
        return name

    yield factory
    for name in made:
        delete_topic(kafka.client_config(), name)


@pytest.fixture
def topic(make_topic: Callable[..., str]) -> str:
    """A fresh three-partition topic."""
    return make_topic(partitions=3)


@pytest.fixture(scope="session")
def _ray_at_exit() -> Iterator[None]:
    import ray

    yield
    ray.shutdown()


@pytest.fixture
def ray_session(_ray_at_exit: None) -> Iterator[None]:
    """A local Ray instance shared by the tests (starting Ray costs seconds); started
    again when a test before shut it down (the multi-node tests run clusters of
    their own)."""
    import ray

    if not ray.is_initialized():
        # A Ray of the tests' own: never one an earlier session left on the machine
        # (joining it would also refuse num_cpus).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


def sink_config(
    kafka: LocalKafka,
    topic: str,
    listener: str = "PLAINTEXT",
    mechanism: str | None = None,
    **overrides: object,
) -> dict[str, object]:
    """A whole config dict for ``topic`` on the local broker, with test-friendly timing."""
    sink: dict[str, object] = {
        "enabled": True,
        "topic": topic,
        "batch_size": 1000,
        "batch_timeout": "20ms",
        "timeout": "15s",
        **kafka.sink_settings(listener, mechanism),
    }
    sink.setdefault("dlq_config", {"path": tempfile.mkdtemp(prefix="shipper-test-dlq-")})
    sink.update(overrides)
    return {"sinks": {"kafka": sink}, "metrics": {"enabled": False}}
