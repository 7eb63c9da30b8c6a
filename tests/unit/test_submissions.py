"""The driver's in-flight budget and run figures (SubmissionTracker), without Ray."""

from __future__ import annotations

import pytest

from shipper.outcomes import DropReason, EntryFailure, Reason, SubmissionResult
from shipper.submissions import SubmissionTracker, lost_submission, weighted_percentile


def result(n: int, delivered: int | None = None, refused: int = 0) -> SubmissionResult:
    d = n if delivered is None else delivered
    r = SubmissionResult(submitted=n, delivered_by_topic={"t": d}, latency=0.01)
    r.failures = [
        EntryFailure(Reason.TIMEOUT, "slow", dropped=DropReason.DLQ_FULL) for _ in range(n - d)
    ]
    r.dlq_refused = refused
    return r


def test_one_submission_always_goes_then_both_limits_hold() -> None:
    t: SubmissionTracker[int] = SubmissionTracker(max_submissions=2, entry_budget=100)
    assert t.has_room(1_000)  # nothing in flight: even an oversized one goes
    t.add(1, 1_000)
    assert not t.has_room(1)
    t.settle(1, result(1_000))
    t.add(2, 60)
    assert t.has_room(40) and not t.has_room(41)  # the entry budget
    t.add(3, 10)
    assert not t.has_room(1)  # the submission limit
    assert (t.in_flight, t.in_flight_entries, t.keys()) == (2, 70, [2, 3])


def test_acks_feed_the_run_figures_and_a_late_duplicate_is_ignored() -> None:
    t: SubmissionTracker[str] = SubmissionTracker(8, 1000)
    t.add("a", 10)
    assert t.settle("a", result(10, delivered=7)) is True
    assert t.settle("a", result(10)) is False
    s = t.stats
    assert (s.entries_in, s.delivered, s.failed, dict(s.failed_by_reason)) == (
        10,
        7,
        3,
        {"timeout": 3},
    )
    assert t.report().drained and not t.dlq_full


def test_a_refusing_dlq_is_seen_from_the_typed_field() -> None:
    t: SubmissionTracker[int] = SubmissionTracker(8, 1000)
    t.add(1, 5)
    t.settle(1, result(5, delivered=3, refused=2))
    assert t.dlq_full


def test_a_lost_submission_reports_every_entry() -> None:
    r = lost_submission(3, "router failed: died")
    assert (r.submitted, r.failed, r.ok) == (3, 3, False)


def test_close_report_names_what_was_left() -> None:
    t: SubmissionTracker[int] = SubmissionTracker(8, 1000)
    t.add(1, 4)
    report = t.report()
    assert not report.drained and "1 submissions (4 entries) still in flight" in str(report)


def test_weighted_percentile() -> None:
    assert weighted_percentile([], 0.5) == 0.0
    assert weighted_percentile([(1.0, 1), (2.0, 99)], 0.5) == 2.0
    assert weighted_percentile([(1.0, 99), (2.0, 1)], 0.99) == 1.0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SubmissionTracker(0, 1)
