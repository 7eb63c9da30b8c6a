"""Test helpers that ship with the library: the local Kafka broker and topic tools.

The broker is the real Apache Kafka that ``scripts/kafka-local`` runs on loopback. Its
ports, users and certificate paths are read from the one file that script writes
(``cluster.json`` in its state folder), so tests and the script never disagree.

Used by the project's own test suite, the demo and the benchmarks; users can use it to
test their configurations against a throwaway broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

__all__ = [
    "LISTENERS",
    "LocalKafka",
    "consume_all",
    "create_topic",
    "delete_topic",
    "kafka_local_script",
    "kill_tree",
    "temporary_topic",
]

#: Listener names of the local broker, and the SASL mechanism each test variant uses.
LISTENERS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")


def kafka_local_script() -> Path:
    """Path of ``scripts/kafka-local`` in the source tree."""
    return Path(__file__).resolve().parent.parent / "scripts" / "kafka-local"


def _state_home() -> Path:
    default = Path.home() / ".cache" / "logshipper" / "kafka-local"
    return Path(os.environ.get("KAFKA_LOCAL_HOME", default))


@dataclass(frozen=True)
class LocalKafka:
    """The running local broker: where it listens and who may log in."""

    info: dict[str, Any]

    @classmethod
    def load(cls) -> LocalKafka:
        path = _state_home() / "cluster.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: start the local broker with `scripts/kafka-local up`"
            )
        return cls(json.loads(path.read_text()))

    @classmethod
    def ensure_up(cls) -> LocalKafka:
        """Start the broker if it is not answering (idempotent), then load its details."""
        subprocess.run([str(kafka_local_script()), "up"], check=True)
        return cls.load()

    def __repr__(self) -> str:  # never show the passwords
        return f"LocalKafka(bootstrap={self.bootstrap!r})"

    def port(self, listener: str) -> int:
        return int(self.info["ports"][listener])

    def address(self, listener: str = "PLAINTEXT") -> str:
        return f"{self.info['host']}:{self.port(listener)}"

    @property
    def bootstrap(self) -> str:
        return self.address("PLAINTEXT")

    def user(self, mechanism: str) -> tuple[str, str]:
        u = self.info["users"][mechanism]
        return str(u["username"]), str(u["password"])

    @property
    def ca_file(self) -> str:
        return str(self.info["certs"]["ca"])

    @property
    def client_cert(self) -> str:
        return str(self.info["certs"]["client_cert"])

    @property
    def client_key(self) -> str:
        return str(self.info["certs"]["client_key"])

    def client_config(
        self, listener: str = "PLAINTEXT", mechanism: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """librdkafka settings for a client of ``listener``.

        SASL listeners default to SCRAM-SHA-256; the SSL listener presents the client
        certificate (the broker requires it).
        """
        conf: dict[str, Any] = {
            "bootstrap.servers": self.address(listener),
            "security.protocol": listener,
        }
        if listener.startswith("SASL"):
            mech = mechanism or "SCRAM-SHA-256"
            user, password = self.user(mech)
            conf.update({"sasl.mechanism": mech, "sasl.username": user, "sasl.password": password})
        if listener.endswith("SSL"):
            conf["ssl.ca.location"] = self.ca_file
            if listener == "SSL":
                conf["ssl.certificate.location"] = self.client_cert
                conf["ssl.key.location"] = self.client_key
        conf.update(extra)
        return conf

    def sink_settings(
        self, listener: str = "PLAINTEXT", mechanism: str | None = None
    ) -> dict[str, Any]:
        """The ``sinks.kafka`` keys (brokers, auth, tls) that reach ``listener``."""
        sink: dict[str, Any] = {"brokers": [self.address(listener)]}
        if listener.startswith("SASL"):
            mech = mechanism or "SCRAM-SHA-256"
            user, password = self.user(mech)
            sink["auth"] = {
                "enabled": True,
                "mechanism": mech,
                "username": user,
                "password": password,
            }
        if listener.endswith("SSL"):
            tls: dict[str, Any] = {
                "enabled": True,
                "verify_certificate": True,
                "ca_file": self.ca_file,
            }
            if listener == "SSL":
                tls.update({"cert_file": self.client_cert, "key_file": self.client_key})
            sink["tls"] = tls
        return sink


def _quiet(conf: dict[str, Any]) -> dict[str, Any]:
    """The harness's own clients log warnings and errors only: librdkafka's notices
    (such as purging its background queue at exit) are routine, not news."""
    return {"log_level": 4, **conf}


def create_topic(
    admin_config: dict[str, Any],
    name: str | None = None,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create a topic (uuid-named unless ``name`` is given) and wait until it has leaders."""
    topic = name or f"test-{uuid.uuid4().hex[:16]}"
    admin = AdminClient(_quiet(admin_config))
    fut = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})]
    )[topic]
    fut.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            if all(p.leader >= 0 for p in t.partitions.values()):
                return topic
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic} has no leaders after {timeout}s")


def delete_topic(admin_config: dict[str, Any], topic: str, timeout: float = 30.0) -> None:
    admin = AdminClient(_quiet(admin_config))
    try:
        admin.delete_topics([topic], operation_timeout=timeout)[topic].result(timeout=timeout)
    except KafkaException:
        pass  # already gone: nothing to clean up


@contextmanager
def temporary_topic(
    admin_config: dict[str, Any], partitions: int = 1, config: dict[str, str] | None = None
) -> Iterator[str]:
    topic = create_topic(admin_config, partitions=partitions, config=config)
    try:
        yield topic
    finally:
        delete_topic(admin_config, topic)


def consume_all(
    client_config: dict[str, Any],
    topic: str,
    expected: int | None = None,
    timeout: float = 30.0,
    idle: float = 2.0,
) -> list[Message]:
    """Read every message of ``topic`` from the beginning.

    Stops when ``expected`` messages were read, or (without ``expected``) when every
    partition has been read up to the high watermark seen at the start and nothing new
    came for ``idle`` seconds; raises ``TimeoutError`` after ``timeout`` with the count
    read so far when ``expected`` is not reached.
    """
    conf = dict(client_config)
    conf.update(
        {
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer = Consumer(_quiet(conf))
    try:
        md = consumer.list_topics(topic, timeout=10)
        tmeta = md.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise ValueError(f"topic {topic} not found: {tmeta.error if tmeta else 'no metadata'}")
        parts = sorted(tmeta.partitions)
        ends: dict[int, int] = {}
        for p in parts:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[Message] = []
        # Next offset to read per partition, to know when the start-time ends are reached.
        nxt = {p: 0 for p in parts}
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=10000, timeout=0.2)
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                out.append(m)
                nxt[m.partition() or 0] = (m.offset() or 0) + 1
            if msgs:
                last_new = time.monotonic()
            if expected is not None:
                if len(out) >= expected:
                    return out
                continue
            reached = all(nxt[p] >= ends[p] for p in parts)
            if reached and time.monotonic() - last_new >= idle:
                return out
        if expected is not None:
            raise TimeoutError(f"read {len(out)} of {expected} messages from {topic} in {timeout}s")
        return out
    finally:
        consumer.close()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process below it (Linux), so a crash is a crash:
    ``shipper run`` keeps its work in a child of its own session (see
    ``actors.shield``), which a SIGKILL of the parent alone would let drain."""
    import signal

    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += [c for c in _children(p) if c not in seen]
    for p in reversed(seen):  # the deepest first: nobody is left to react
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            continue
