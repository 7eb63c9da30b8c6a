"""The dead-letter queue: where entries go when Kafka cannot take them.

An entry the pipeline accepted is either acknowledged by Kafka or committed here; the
DLQ actor owns one store per node and replays it when Kafka recovers.

- :mod:`shipper.dlq.codec`      the record, its filters and its on-disk encoding
- :mod:`shipper.dlq.store`      the store seam (``DlqStore``) and its in-memory side
- :mod:`shipper.dlq.lmdb`       the durable store (``LmdbDlqStore``)
- :mod:`shipper.dlq.reprocess`  the one ``Reprocessor``: paced replay of stored records,
                                used by the DLQ actor and by ``shipper dlq replay``
"""

from shipper.dlq.codec import (
    FORMAT_VERSION,
    DlqFilter,
    DlqRecord,
    DlqStats,
    MarkResult,
    decode_record,
    encode_record,
)
from shipper.dlq.lmdb import LmdbDlqStore
from shipper.dlq.store import DlqStore, MemoryDlqStore

__all__ = [
    "FORMAT_VERSION",
    "DlqFilter",
    "DlqRecord",
    "DlqStats",
    "DlqStore",
    "LmdbDlqStore",
    "MarkResult",
    "MemoryDlqStore",
    "decode_record",
    "encode_record",
]
