"""How the Batcher hands hash-partitioned segments to the Producer (no Ray call needed)."""

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


def test_parts_pass_keys_and_place_only_keyless_entries() -> None:
    from shipper.batching import Segment

    b = batcher()
    keyed = Segment(values=[b"1", b"2"], keys=[b"a", b"b"])
    mixed = Segment(values=[b"3", b"4"], keys=[b"a", None])
    parts = b._parts_for([keyed, mixed])
    assert parts[0] == ([b"1", b"2"], [b"a", b"b"], None)  # librdkafka places them all
    assert parts[1] == ([b"3", b"4"], [b"a", None], [-1, 0])
