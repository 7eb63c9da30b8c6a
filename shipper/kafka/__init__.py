"""Talking to Kafka: the producer seam, its settings, and librdkafka's statistics.

- :mod:`shipper.kafka.client`    ``ProducerClient``: the real (confluent-kafka) and the
                                 in-memory side, with one documented lifecycle
- :mod:`shipper.kafka.settings`  the one function that builds librdkafka settings
- :mod:`shipper.kafka.stats`     librdkafka's statistics JSON turned into metrics
"""
