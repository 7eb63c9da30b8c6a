"""The DLQ actor's lifecycle, used as a plain class on an event loop (no Ray call made)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from actors.dlq import DlqActor
from actors.wiring import Wiring
from shipper.config import load_config
from shipper.errors import ShutdownError
from shipper.outcomes import EntryFailure, Reason


def dlq_actor(path: Path) -> DlqActor:
    cfg = load_config(
        {
            "sinks": {
                "kafka": {
                    "enabled": True,
                    "brokers": ["127.0.0.1:1"],
                    "topic": "t",
                    "dlq_config": {
                        "path": str(path),
                        "map_size_bytes": 1 << 25,
                        "max_disk_bytes": 1 << 24,
                    },
                }
            },
            "metrics": {"enabled": False},
        }
    )
    return DlqActor(Wiring("test", cfg))


def test_close_stops_the_periodic_refresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The metrics refresh reads the store's depth every second; after close() it must
    # not run against the closed store (it used to log a ShutdownError each second).
    async def scenario() -> int:
        dlq = dlq_actor(tmp_path / "dlq")
        await dlq.kick()
        stored = dlq.put([EntryFailure(Reason.ERROR, "broker down", "t", b'{"message":"m"}')])
        dlq.close()
        await asyncio.sleep(dlq.metrics.interval * 1.5)
        return stored

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == 1
    assert not [r for r in caplog.records if "metrics refresh" in r.getMessage()]


def test_close_is_idempotent_and_final(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        dlq = dlq_actor(tmp_path / "dlq")
        dlq.close()
        dlq.close()  # a second close is a no-op, not a refresh of the closed store
        await dlq.kick()  # nothing restarts the refresh after close
        with pytest.raises(ShutdownError, match="closed"):
            await dlq.reprocess()
        await asyncio.sleep(dlq.metrics.interval * 1.5)

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if "metrics refresh" in r.getMessage()]
