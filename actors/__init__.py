"""Ray actors of the shipper: thin shells that hold state and call into ``shipper``.

- :mod:`actors.router`   Router: decode, validate, encode, route; one hop per submission
- :mod:`actors.batcher`  Batcher, one per topic: bounded queue, flush policy, partitions
- :mod:`actors.producer` Producer, one or more per broker set: librdkafka
- :mod:`actors.pipeline` the driver-side ``Shipper`` that starts and wires them

Each module has a plain class (testable without Ray) and a factory that applies the
Ray options (name, namespace, restarts, concurrency).
"""
