"""Hash partitioning's keyless fallback in the Batcher (no Ray call needed)."""

from __future__ import annotations

from actors.batcher import BatcherActor
from shipper.config import load_config


def batcher() -> BatcherActor:
    sink = load_config(
        {
            "sinks": {
                "kafka": {
                    "enabled": True,
                    "brokers": ["127.0.0.1:1"],
                    "topic": "t",
                    "partitioning": {"enabled": True, "strategy": "hash", "key_field": "k"},
                }
            }
        }
    ).sinks.kafka
    b = BatcherActor("t", sink, [object()])
    b._num_partitions = 3
    return b


def test_keyed_entries_are_left_to_librdkafka_and_keyless_ones_rotate() -> None:
    b = batcher()
    assert b._keyless_round_robin([b"a", None, None, b"b", None], 5) == [-1, 0, 1, -1, 2]
    # The rotation continues across segments, also for wholly keyless ones.
    assert b._keyless_round_robin(None, 4) == [0, 1, 2, 0]
    assert b._keyless_round_robin([None, b"x"], 2) == [1, -1]


def test_parts_pass_keys_and_place_only_keyless_entries() -> None:
    from shipper.batching import Piece, Segment

    b = batcher()
    keyed = Segment(values=[b"1", b"2"], keys=[b"a", b"b"])
    mixed = Segment(values=[b"3", b"4"], keys=[b"a", None])
    parts = b._parts_for([Piece(keyed, 0, 2), Piece(mixed, 0, 2)])
    assert parts[0] == ([b"1", b"2"], [b"a", b"b"], None)  # librdkafka places them all
    assert parts[1] == ([b"3", b"4"], [b"a", None], [-1, 0])
