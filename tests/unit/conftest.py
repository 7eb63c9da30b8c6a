"""Unit tests run without Ray and without Kafka: an accidental ``ray.init`` fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ray = sys.modules.get("ray")
    if ray is not None:

        def refuse(*_a: object, **_k: object) -> None:
            raise AssertionError("unit tests must not start Ray; put this test under tests/actors")

        monkeypatch.setattr(ray, "init", refuse)
    yield
