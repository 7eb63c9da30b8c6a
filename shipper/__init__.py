"""kafka-log-shipper: ships log entries to Apache Kafka, with Ray actors doing the work.

The ``shipper`` package is the pure library (configuration, entries, routing,
partitioning, batching and backpressure policy, DLQ store, Kafka client seam, CLI);
it never imports Ray. The actors that run it live in the separate ``actors`` package.
"""

__version__ = "0.1.0"
