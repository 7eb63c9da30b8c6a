"""The Kafka client seam: produce whole batches, learn each entry's outcome.

Two sides with one contract:

- :class:`ConfluentProducerClient` wraps one ``confluent_kafka.Producer`` (librdkafka).
- :class:`MemoryProducerClient` keeps topics in memory and can be told to fail; it
  serves unit tests of the code above it.

Lifecycle (both sides)::

    client = ConfluentProducerClient(conf)   # connects lazily, starts its poll thread
    client.send(topic, values, keys, partitions, on_done)   # never blocks on the network;
                                             # blocks only while librdkafka's local queue
                                             # is full (backpressure), polling meanwhile
    ...                                      # on_done(SendResult) is called once per send,
                                             # from the poll thread, when every message of
                                             # the send is acked or has failed
    client.flush(timeout)                    # blocks until all sends are done or timeout
    client.close(timeout)                    # flush, then stop the poll thread

Failures carry the encoded value, key and a reason tag (``error``, ``timeout``,
``message_too_large``, ``auth_failure``) so the caller can hand them to the DLQ.
Two conditions make the client purge what it holds, so callers learn at once instead of
after ``message.timeout.ms``: an authentication failure (from librdkafka's error
callback), and a broker set that stopped answering (:mod:`shipper.kafka.reachability`:
every broker down for ``unreachable_after`` seconds, or messages timed out while no
broker answered). The second also calls ``on_unreachable(why)``, once per outage, so
the owner can open the set's circuit breaker.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipper.logs import librdkafka_logger
from shipper.outcomes import Reason
from shipper.partitioning import kafka_partition

from .reachability import Reachability

__all__ = [
    "ConfluentProducerClient",
    "Failure",
    "MemoryProducerClient",
    "ProducerClient",
    "SendResult",
    "reason_for_error",
]


@dataclass(frozen=True, slots=True)
class Failure:
    """One message that Kafka did not take (``value`` is None only when the payload
    itself was lost before a produce attempt)."""

    value: bytes | None
    key: bytes | None
    reason: Reason
    error: str
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class SendResult:
    """The outcome of one :meth:`ProducerClient.send`."""

    topic: str
    sent: int
    delivered: int = 0
    failures: list[Failure] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


def reason_for_error(name: str) -> Reason:
    """Map a librdkafka error to the DLQ reason tag."""
    if name in ("_MSG_TIMED_OUT", "REQUEST_TIMED_OUT", "_TIMED_OUT"):
        return Reason.TIMEOUT
    if name in ("MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"):
        return Reason.MESSAGE_TOO_LARGE
    if name in (
        "_AUTHENTICATION",
        "SASL_AUTHENTICATION_FAILED",
        "TOPIC_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
    ):
        return Reason.AUTH_FAILURE
    return Reason.ERROR


DoneCallback = Callable[[SendResult], None]

#: What a purge means for the messages it fails when no other reason applies.
_SHUTDOWN_PURGE = (Reason.SHUTDOWN, "still unacknowledged when the shipper stopped")


class ProducerClient(ABC):
    """Produces batches to one broker set. See the module docstring for the lifecycle."""

    @abstractmethod
    def send(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partitions: Sequence[int] | None,
        on_done: DoneCallback,
        probe: bool = False,
        headers: Any = None,
    ) -> None:
        """Queue every value for ``topic``; ``on_done`` runs once when all are settled.
        ``probe``: the breaker's half-open trial, which must really try Kafka even while
        the client takes the broker set for unreachable. ``headers``: each message's
        Kafka headers, a :class:`shipper.headers.HeaderTable` or a list of lists of
        pairs (``headers[i]`` is message ``i``'s; a failure keeps them, for the DLQ)."""

    @abstractmethod
    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        """Number of partitions of ``topic`` from broker metadata (0 if unknown)."""

    @abstractmethod
    def flush(self, timeout: float) -> int:
        """Wait until nothing is outstanding or ``timeout``; return what is still out."""

    @abstractmethod
    def close(self, timeout: float = 10.0) -> int:
        """Flush, then release the client; return what was still outstanding."""

    @property
    @abstractmethod
    def outstanding(self) -> int:
        """Messages queued but not yet settled."""

    @property
    @abstractmethod
    def last_error(self) -> str | None:
        """The most recent client-level error (connection, authentication), if any."""


class _Tracker:
    """Collects the outcomes of one send and reports once every message has one.

    One tracker per send, passed as the callback of the whole batch, so a batch costs
    one object, not one closure per message. Outcomes arrive from two threads (the
    poll thread's delivery reports, and the sending thread for messages librdkafka
    refused at once); ``next()`` on an ``itertools.count`` is a single C call under
    the GIL, so it hands out distinct numbers without a lock, and exactly one
    outcome sees the last number. (A free-threaded CPython build would need a lock
    here: the count's atomicity comes from the GIL.)
    """

    __slots__ = ("explain", "failures", "last", "on_done", "reach", "result", "seen", "sent_at")

    def __init__(
        self,
        result: SendResult,
        on_done: DoneCallback,
        explain: Callable[[Any], tuple[Reason, str]],
        reach: Reachability | None = None,
    ) -> None:
        self.result = result
        self.failures = result.failures
        self.last = result.sent - 1
        self.seen = itertools.count()
        self.on_done = on_done
        self.explain = explain
        self.reach = reach
        self.sent_at = time.monotonic()

    def __call__(self, err: Any, msg: Any) -> None:
        # A delivery report, on the poll thread; only failures allocate.
        if err is not None:
            reason, text = self.explain(err)
            self.failures.append(Failure(msg.value(), msg.key(), reason, text))
        if next(self.seen) == self.last:
            self._finish()

    def report(self, headers: Any, err: Any, msg: Any) -> None:
        """A delivery report of a message sent with ``headers`` (librdkafka's report
        does not give them back; a failure keeps them for the DLQ)."""
        if err is not None:
            reason, text = self.explain(err)
            self.failures.append(Failure(msg.value(), msg.key(), reason, text, headers))
        if next(self.seen) == self.last:
            self._finish()

    def fail(
        self,
        value: bytes,
        key: bytes | None,
        reason: Reason,
        text: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """A message that never got into librdkafka's queue."""
        self.failures.append(Failure(value, key, reason, text, headers))
        if next(self.seen) == self.last:
            self._finish()

    def _finish(self) -> None:
        r = self.result
        r.delivered = r.sent - len(r.failures)
        r.finished = time.time()
        reach = self.reach
        if reach is not None:
            # Once per send, not per message: did the set answer for this batch?
            if r.delivered:
                reach.answered()
            elif any(f.reason is Reason.TIMEOUT for f in r.failures):
                reach.timed_out(self.sent_at)
        self.on_done(r)


def _any_broker_up(doc: str) -> bool:
    """Whether a librdkafka statistics document shows a real broker in state UP."""
    import json

    try:
        brokers = json.loads(doc).get("brokers") or {}
    except ValueError:
        return False
    return any(
        b.get("state") == "UP" and b.get("source") not in ("internal", "logical")
        for b in brokers.values()
        if isinstance(b, dict)
    )


def _connection_detail(text: str) -> str:
    """librdkafka's connection error, short: ``127.0.0.1:19092/bootstrap: Connect to
    ipv4#127.0.0.1:19092 failed: Connection refused (after 0ms in state CONNECT)``
    becomes ``127.0.0.1:19092: Connection refused``."""
    broker, _, rest = text.partition(": ")
    if not rest:
        return text
    cause = rest.rpartition(" failed: ")[2] or rest
    cause = cause.split(" (after ", 1)[0]
    return f"{broker.split('/', 1)[0]}: {cause}"


class ConfluentProducerClient(ProducerClient):
    """A ``confluent_kafka.Producer`` with its own poll thread."""

    def __init__(
        self,
        config: dict[str, Any],
        poll_interval: float = 0.02,
        *,
        unreachable_after: float = 0.0,
        on_unreachable: Callable[[str], None] | None = None,
        on_reachable: Callable[[], None] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self._errors: list[str] = []
        self._auth_failed = threading.Event()
        self._auth_error: str | None = None
        #: Whether the broker set answers (0 s: judged from timeouts only).
        self.reachability = Reachability(unreachable_after)
        self._on_unreachable = on_unreachable
        self._on_reachable = on_reachable
        self._purge_why = _SHUTDOWN_PURGE
        conf = dict(config)
        conf["error_cb"] = self._on_error
        # librdkafka's own log lines go to the shipper's log file (when one is set up,
        # see shipper.logs), never to stderr; its errors reach us through error_cb.
        conf.setdefault("logger", librdkafka_logger())
        # Statistics every second (unless set): the first one that shows a broker up
        # ends an outage (the caller's stats_cb, if any, still gets every document).
        self._user_stats = conf.pop("stats_cb", None)
        conf.setdefault("statistics.interval.ms", 1000)
        conf["stats_cb"] = self._on_stats
        self._producer = Producer(conf)
        self._stop = threading.Event()
        self._poll_interval = poll_interval
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:  # the config holds credentials: never show it
        return f"ConfluentProducerClient(outstanding={self.outstanding})"

    def _on_error(self, err: Any) -> None:
        text = err.str()
        name = err.name()
        if name in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"):
            text = f"SASL authentication failed: {text}"
            self._auth_error = text
            self._auth_failed.set()
        elif name == "_ALL_BROKERS_DOWN":
            self.reachability.all_down()
            text = f"Failed to connect to Kafka broker: {text}"
        elif name in ("_TRANSPORT", "_RESOLVE"):
            self.reachability.error(_connection_detail(text))
            text = f"Failed to connect to Kafka broker: {text}"
        self._errors.append(text)
        del self._errors[:-20]

    def _explain(self, err: Any) -> tuple[Reason, str]:
        name = err.name()
        if name in ("_PURGE_QUEUE", "_PURGE_INFLIGHT"):
            if self._auth_error is not None:
                # Purged by us because the broker refused the credentials: say so.
                return Reason.AUTH_FAILURE, self._auth_error
            # Purged by close() (the shipper is stopping with this still unacknowledged)
            # or because the broker set stopped answering.
            return self._purge_why
        return reason_for_error(name), err.str()

    def _on_stats(self, doc: str) -> None:
        if _any_broker_up(doc):
            was_down = self.reachability.unreachable is not None
            self.reachability.broker_up()
            if was_down and self._on_reachable is not None:
                try:
                    self._on_reachable()  # a broker answers again: probe now
                except Exception as exc:
                    self._errors.append(f"reporting a reachable broker set failed: {exc}")
        if self._user_stats is not None:
            self._user_stats(doc)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(self._poll_interval)
            if self._auth_failed.is_set():
                # Credentials will not fix themselves: fail everything held now, with
                # the reason, rather than after message.timeout.ms.
                self._auth_failed.clear()
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
                self._producer.poll(0)
            why = self.reachability.check()
            if why is not None:
                self._unreachable(why)

    def _unreachable(self, why: str) -> None:
        """The set stopped answering: tell the owner, which opens the set's breaker, then
        fail what the client holds now (it would wait for ``message.timeout.ms``)."""
        if self._on_unreachable is not None:
            try:
                self._on_unreachable(why)
            except Exception as exc:  # the owner's problem must not stop the poll loop
                self._errors.append(f"reporting an unreachable broker set failed: {exc}")
        self._purge_why = (Reason.CIRCUIT_OPEN, f"Kafka unreachable: {why}")
        try:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            for _ in range(1000):  # serve the purge's reports while the reason holds
                if not self._producer.poll(0):
                    break
        finally:
            self._purge_why = _SHUTDOWN_PURGE

    def send(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partitions: Sequence[int] | None,
        on_done: DoneCallback,
        probe: bool = False,
        headers: Any = None,
    ) -> None:
        result = SendResult(topic=topic, sent=len(values), started=time.time())
        if not values:
            result.finished = result.started
            on_done(result)
            return
        tracker = _Tracker(result, on_done, self._explain, self.reachability)
        down = None if probe else self.reachability.unreachable
        if down is not None:
            # Known unreachable and silent since: fail now, not after message.timeout.ms
            # (the breaker is opening; a probe finds the set back once a broker answers).
            ks = keys if keys is not None else [None] * len(values)
            for i, (v, k) in enumerate(zip(values, ks, strict=True)):
                h = headers[i] if headers is not None else None
                tracker.fail(v, k, Reason.CIRCUIT_OPEN, f"Kafka unreachable: {down}", h)
            return
        if headers is not None:
            # produce_batch cannot carry headers: one produce() per message.
            self._produce_each(topic, values, keys, partitions, headers, tracker)
            return
        # produce_batch (librdkafka's rd_kafka_produce_batch) costs far less per
        # message than a produce() call each. It takes one partition per call (a
        # per-message "partition" is not honoured), so explicit partitions are sent
        # as one call per partition, each in order.
        if partitions is None:
            msgs: list[dict[str, Any]]
            if keys is None:
                msgs = [{"value": v} for v in values]
            else:
                msgs = [{"value": v, "key": k} for v, k in zip(values, keys, strict=True)]
            self._produce_batch(topic, msgs, -1, tracker)
            return
        groups: dict[int, list[dict[str, Any]]] = {}
        ks = keys if keys is not None else [None] * len(values)
        for v, k, p in zip(values, ks, partitions, strict=True):
            group = groups.get(p)
            if group is None:
                groups[p] = group = []
            group.append({"value": v, "key": k})
        for p, msgs in groups.items():
            self._produce_batch(topic, msgs, p, tracker)

    def _produce_batch(
        self, topic: str, msgs: list[dict[str, Any]], partition: int, tracker: _Tracker
    ) -> None:
        produce_batch = self._producer.produce_batch
        while msgs:
            try:
                queued = produce_batch(topic, msgs, partition=partition, on_delivery=tracker)
            except Exception as exc:
                # Refused as a whole (e.g. an unknown topic name): every message fails.
                reason, text = self._describe_exception(exc)
                for m in msgs:
                    tracker.fail(m["value"], m.get("key"), reason, text)
                return
            if queued == len(msgs):
                return
            # Some messages were refused; they carry "_error". A full local queue is
            # backpressure: wait for the poll thread to serve delivery reports, then
            # offer the refused ones again, in order. Anything else fails the message.
            retry = []
            for m in msgs:
                err = m.pop("_error", None)
                if err is None:
                    continue
                if err.name() == "_QUEUE_FULL":
                    retry.append(m)
                else:
                    reason, text = self._explain(err)
                    tracker.fail(m["value"], m.get("key"), reason, text)
            if retry:
                time.sleep(0.005)
            msgs = retry

    def _produce_each(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partitions: Sequence[int] | None,
        headers: Any,
        tracker: _Tracker,
    ) -> None:
        produce = self._producer.produce
        for i, v in enumerate(values):
            k = keys[i] if keys is not None else None
            p = partitions[i] if partitions is not None else -1
            h: Any = headers[i]
            while True:
                try:
                    report = functools.partial(tracker.report, h)
                    produce(topic, v, k, partition=p, on_delivery=report, headers=h)
                except BufferError:
                    time.sleep(0.005)  # the local queue is full: the poll thread drains it
                    continue
                except Exception as exc:
                    reason, text = self._describe_exception(exc)
                    tracker.fail(v, k, reason, text, h)
                break

    @staticmethod
    def _describe_exception(exc: Exception) -> tuple[Reason, str]:
        from confluent_kafka import KafkaException

        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if err is not None and hasattr(err, "code"):
            return reason_for_error(err.name()), err.str()
        return Reason.ERROR, f"{type(exc).__name__}: {exc}"

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        md = self._producer.list_topics(topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return 0
        return len(t.partitions)

    @property
    def outstanding(self) -> int:
        return len(self._producer)

    @property
    def last_error(self) -> str | None:
        # An authentication failure outranks the disconnects that follow it.
        if self._auth_error is not None:
            return self._auth_error
        return self._errors[-1] if self._errors else None

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while len(self._producer) and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self._producer)

    def close(self, timeout: float = 10.0) -> int:
        left = self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5)
        if left:
            # Whatever is left fails now (its on_done reports it) instead of vanishing.
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(1)
        return left


class MemoryProducerClient(ProducerClient):
    """An in-memory broker for unit tests: topics are lists of (partition, key, value).

    Placement follows the Producer's librdkafka settings: an explicit partition wins
    (-1 means none), a key goes where Kafka's murmur2 puts it, keyless messages
    rotate.

    ``fail_next(n, reason)`` makes the next ``n`` messages fail with ``reason``.
    Delivery is synchronous: ``on_done`` runs inside :meth:`send`.
    """

    def __init__(self, partitions: int = 3) -> None:
        self.default_partitions = partitions
        self.topics: dict[str, list[tuple[int, bytes | None, bytes]]] = {}
        #: per topic, each stored message's headers (None: it had none)
        self.headers: dict[str, list[list[tuple[str, bytes]] | None]] = {}
        self.partitions: dict[str, int] = {}
        self._fail: list[Reason] = []
        self._rr = 0

    def fail_next(self, n: int, reason: Reason | str = Reason.ERROR) -> None:
        self._fail.extend([Reason(reason)] * n)

    def send(
        self,
        topic: str,
        values: Sequence[bytes],
        keys: Sequence[bytes | None] | None,
        partitions: Sequence[int] | None,
        on_done: DoneCallback,
        probe: bool = False,
        headers: Any = None,
    ) -> None:
        result = SendResult(topic=topic, sent=len(values), started=time.time())
        log = self.topics.setdefault(topic, [])
        n_parts = self.partitions.setdefault(topic, self.default_partitions)
        stored_headers = self.headers.setdefault(topic, [])
        for i, v in enumerate(values):
            k = keys[i] if keys is not None else None
            h = headers[i] if headers is not None else None
            if self._fail:
                reason = self._fail.pop(0)
                result.failures.append(Failure(v, k, reason, f"injected failure: {reason}", h))
                continue
            if partitions is not None and partitions[i] >= 0:
                p = partitions[i]
            elif k is not None:
                # What librdkafka's murmur2_random partitioner does with a key.
                p = kafka_partition(k, n_parts)
            else:
                p = self._rr % n_parts
                self._rr += 1
            if not 0 <= p < n_parts:
                result.failures.append(
                    Failure(v, k, Reason.ERROR, f"Local: Unknown partition {p}", h)
                )
                continue
            log.append((p, k, bytes(v)))
            stored_headers.append(h)
            result.delivered += 1
        result.finished = time.time()
        on_done(result)

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        return self.partitions.setdefault(topic, self.default_partitions)

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float = 10.0) -> int:
        return 0

    @property
    def outstanding(self) -> int:
        return 0

    @property
    def last_error(self) -> str | None:
        return None
