"""The fault matrix, small (``tests/faultmatrix.py``; ``make chaos`` runs it full size).

Five ways in (the API, ``shipper run`` on a pipe, ``--input``, a tailed file, the HTTP
intake) against a broker that is down at the start, killed -9, frozen past the
sink's timeout, and killed again so that the inputs end while it is down and it comes
back in the middle of ``shipper dlq replay --wait``; then a SIGTERM to each ``shipper
run``'s whole process group. Every cell: no traceback, exit 0, every line taken in
Kafka or the DLQ, every one in Kafka after the replay (read by kcat).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shipper.testing import LocalKafka
from tests import faultmatrix

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.usefixtures("ray_session")]


def test_every_way_in_loses_nothing_when_the_broker_is_down_dies_hangs_or_comes_back(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    import ray

    run, cells = faultmatrix.chain(kafka, tmp_path, ray.get_runtime_context().gcs_address)
    print("\n" + faultmatrix.table(cells))
    assert {(c.path, c.fault) for c in cells} == {
        (p, f) for p in faultmatrix.PATHS for f in faultmatrix.FAULTS if f != "group_sigterm"
    }
    bad = [c for c in cells if not c.ok]
    assert not bad, "\n" + faultmatrix.table(bad)
    # Each fault reached the shippers: a path that never felt it tested nothing.
    api_kill = next(c for c in cells if c.path == "api" and c.fault == "kill")
    assert api_kill.to_dlq_s is not None, "no entry went to the DLQ while Kafka was gone"
    # The API shipper's breaker opened for each of the first three faults and closed
    # after each (the fourth ends the run with Kafka away).
    history = run.drivers["api"].breaker_moves
    moves = [(old, new) for _t, _bs, old, new in history]
    shift = time.time() - time.monotonic()  # the history has wall times, events not
    said = (
        f"moves {[(round(t - shift, 1), o, n) for t, _bs, o, n in history]}, "
        f"broker events {[(w, round(t, 1)) for w, t in run.broker.events]}"
    )
    assert sum(new == 1 for _old, new in moves) >= 3, said
    assert sum(new == 0 for _old, new in moves) >= 3, said
    # While the broker was down, `shipper status` said so, and counted the sources' lines.
    status = run.status_during_outage
    # It says why: the client found Kafka unreachable, or batches failed first (what
    # opened it first stays in the text when a probe has failed since).
    assert "OPEN: " in status, status
    assert "Kafka unreachable" in status or "failed batches in a row" in status, status
    assert "from files:" in status and "from http:" in status, status
    # The service's summary counts its sources like the API's: in, delivered, DLQ.
    by_source = run.results["file"]["summary"]["by_source"]
    for kind in ("files", "http"):
        s = by_source[kind]
        assert s["entries_in"] == s["delivered"] + s["dlq"] + s["failed"] > 0, by_source
        assert s["dlq"] > 0 and s["dlq_by_reason"].get("circuit_open", 0) > 0, by_source
    for c in cells:
        if c.fault == "back_during_replay":
            assert c.in_dlq > 0, f"{c.path}: nothing waited in the DLQ for the replay"
        if c.path in ("pipe", "input", "file"):
            said = "\n".join(c.stderr)
            assert "circuit breaker open" in said, f"{c.path}: never said the breaker opened"


def test_a_sigterm_to_the_whole_process_group_drains_every_shipper_run(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    """Each ``shipper run`` starts a Ray of its own; the signal reaches its whole
    group (as ``kill -TERM -PGID``, ``timeout`` or a supervisor would send it), and
    that Ray must outlive the drain."""
    cells = faultmatrix.separate(kafka, tmp_path, "", "group_sigterm", faultmatrix.SMALL)
    print("\n" + faultmatrix.table(cells))
    bad = [c for c in cells if not c.ok]
    assert not bad, "\n" + faultmatrix.table(bad)
    for c in cells:
        assert c.lines > 0, f"{c.path} took nothing before the signal"
        said = "\n".join(c.stderr)
        assert "got signal 15; stopped reading, draining" in said, (c.path, said)
