"""Acknowledgement bookkeeping: nothing is reported delivered that was not."""

from __future__ import annotations

import pickle

from shipper.outcomes import EntryFailure, SegmentOutcome, SubmissionResult


def test_a_submission_is_ok_only_when_every_entry_is_accounted_for() -> None:
    r = SubmissionResult(submitted=5)
    r.add_segment(SegmentOutcome("a", 3, delivered=3, latency=0.2))
    assert not r.ok
    r.add_segment(SegmentOutcome("b", 2, delivered=1, dlq=1, latency=0.5))
    assert r.ok and r.delivered == 4 and r.dlq == 1 and r.latency == 0.5
    assert r.delivered_by_topic == {"a": 3, "b": 1}


def test_failures_make_it_not_ok_and_are_counted_by_reason() -> None:
    r = SubmissionResult(submitted=3)
    r.add_segment(SegmentOutcome("a", 1, delivered=1))
    r.failures.append(EntryFailure("serialization_error", "line 2: not JSON", line=2))
    r.failures.append(EntryFailure("timeout", "Local: Message timed out", topic="a", value=b"{}"))
    assert not r.ok
    assert r.failed_by_reason() == {"serialization_error": 1, "timeout": 1}
    assert "1/3 delivered" in r.summary() and "timeout=1" in r.summary()
    assert pickle.loads(pickle.dumps(r)) == r
