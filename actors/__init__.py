"""Ray actors of the shipper: thin shells over the cores in ``shipper``.

Each actor awaits, forwards and owns its Ray lifecycle; the decisions are made by a
Ray-free core it holds (``docs/architecture.md`` has the map). Every actor is built
from plain data (:class:`actors.wiring.Wiring`) and finds its peers by name, so Ray
can restart any of them; the supervisor sees each restart and rewires.

- :mod:`actors.router`      Router: decode, validate, encode, route; one hop per submission
- :mod:`actors.batcher`     Batcher, one per topic: bounded queue, flushes, outcomes
- :mod:`actors.producer`    Producer, one or more per broker set: librdkafka
- :mod:`actors.dlq`         DLQ, one per node: LMDB store and the reprocessor
- :mod:`actors.supervisor`  circuit breakers per broker set, actor restarts
- :mod:`actors.telemetry`   the one scrape endpoint, and the Reporter every actor uses
- :mod:`actors.pipeline`    the driver-side ``Shipper`` that starts and wires them
"""
