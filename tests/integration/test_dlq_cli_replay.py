"""``shipper dlq replay`` into the real broker, from a real LMDB DLQ.

Records are written the way the DLQ actor writes them (an ``LmdbDlqStore`` on local
disk) for a fresh uuid topic; the replay must bring every one of them to Kafka and
leave the DLQ empty, also while another process (standing in for a live DLQ actor)
has the environment open. Failed replays keep their records, one attempt more.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper import cli
from shipper.cli import dlq as dlq_cli
from shipper.dlq import DlqFilter, DlqRecord, LmdbDlqStore
from shipper.outcomes import Reason
from shipper.partitioning import kafka_partition
from shipper.testing import LocalKafka, consume_all
from tests.conftest import sink_config

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
REASONS = [Reason.TIMEOUT, Reason.CIRCUIT_OPEN, Reason.ERROR, Reason.AUTH_FAILURE]


@pytest.fixture(autouse=True)
def _registered() -> None:
    dlq_cli.register(cli.register_subcommand)


def write_config(tmp_path: Path, cfg: dict[str, Any]) -> str:
    path = tmp_path / "shipper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def fill(path: Path, records: list[DlqRecord]) -> None:
    with LmdbDlqStore(path) as store:  # the config's defaults: 1 GiB map, 512 MiB budget
        store.put_batch(records)


def left(path: Path) -> list[DlqRecord]:
    with LmdbDlqStore(path) as store:
        return store.select(DlqFilter(), 100_000)


def replay(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["dlq", "replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_delivers_every_record_and_empties_the_dlq(
    kafka: LocalKafka,
    make_topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topic(partitions=3)
    dlq = tmp_path / "dlq"
    n = 1200
    records = [
        DlqRecord(
            value=f'{{"seq":{i},"msg":"entry {i}"}}'.encode(),
            topic=topic,
            key=f"tenant-{i % 7}".encode() if i % 2 else None,
            reason=REASONS[i % len(REASONS)],
            error="Local: Message timed out",
            attempts=i % 3,
            parked=i % 10 == 0,  # parked ones need --parked
        )
        for i in range(n)
    ]
    fill(dlq, records)
    cfg = write_config(
        tmp_path,
        sink_config(
            kafka,
            topic,
            dlq_config={"path": str(dlq), "reprocessing_config": {"batch_size": 250}},
        ),
    )
    # A live DLQ actor has the environment open in its own process meanwhile.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from shipper.dlq import LmdbDlqStore
                store = LmdbDlqStore({str(dlq)!r})
                print(store.count(), flush=True)
                sys.stdin.readline()
                print(store.count(), flush=True)
                store.close()
                """
            ),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == str(n)
        code, out, err = replay(capsys, "--config", cfg, "--parked")
        assert code == 0, out + err
        assert f"{n} delivered" in out and "0 failed" in out
        assert f"replay: {n}/{n}" in err
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "0"  # the other process sees it empty
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
    assert left(dlq) == []

    msgs = consume_all(kafka.client_config(), topic, expected=n)
    got = sorted((m.value(), m.key()) for m in msgs)
    assert got == sorted((r.value, r.key) for r in records)
    # Keyed records land where the pipeline (and any Kafka client) puts that key.
    for m in msgs:
        key = m.key()
        if key is not None:
            assert m.partition() == kafka_partition(key, 3)


def test_unreachable_broker_keeps_records_with_one_more_attempt(
    kafka: LocalKafka,
    make_topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topic(partitions=1)
    dlq = tmp_path / "dlq"
    fill(
        dlq,
        [DlqRecord(value=f"v{i}".encode(), topic=topic, reason=Reason.TIMEOUT) for i in range(6)],
    )
    conf = sink_config(
        kafka,
        topic,
        brokers=["127.0.0.1:1"],  # nothing listens there
        timeout="1s",
        retry_max=0,
        dlq_config={"path": str(dlq), "reprocessing_config": {"batch_size": 2, "max_retries": 2}},
    )
    cfg = write_config(tmp_path, conf)

    # By default the replay stops after the first batch Kafka refuses entirely.
    code, out, _ = replay(capsys, "--config", cfg)
    assert code == 1
    assert "stopped early" in out and "4 records were not tried" in out
    assert "timed out" in out.lower()
    assert [r.attempts for r in left(dlq)] == [1, 1, 0, 0, 0, 0]

    # --keep-going tries every batch: the first batch times out again and reaches
    # max_retries (parked); by then the client knows nothing answers (no answer for a
    # whole message timeout) and fails the rest at once: no retry spent on them.
    code, out, _ = replay(capsys, "--config", cfg, "--keep-going")
    assert code == 1 and "2 failed" in out and "2 of them now parked" in out
    assert "4 records met an open circuit breaker" in out
    after = left(dlq)
    assert [r.attempts for r in after] == [2, 2, 0, 0, 0, 0]
    assert [r.parked for r in after] == [True, True, False, False, False, False]
    assert all("timed out" in r.error.lower() for r in after[:2])
    assert all(r.reason == Reason.TIMEOUT for r in after)  # the original reason stays


def test_a_record_kafka_refuses_stays_while_the_rest_is_delivered(
    kafka: LocalKafka,
    make_topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = make_topic(partitions=2)
    dlq = tmp_path / "dlq"
    big = b"x" * 200_000  # over message.max.bytes = max_message_bytes + 64 KiB
    small = [f"ok-{i}".encode() for i in range(20)]
    fill(
        dlq,
        [DlqRecord(value=v, topic=topic, reason=Reason.CIRCUIT_OPEN) for v in small[:10]]
        + [DlqRecord(value=big, topic=topic, reason=Reason.MESSAGE_TOO_LARGE)]
        + [DlqRecord(value=v, topic=topic, reason=Reason.CIRCUIT_OPEN) for v in small[10:]],
    )
    cfg = write_config(
        tmp_path,
        sink_config(kafka, topic, max_message_bytes=1000, dlq_config={"path": str(dlq)}),
    )
    code, out, err = replay(capsys, "--config", cfg)
    assert code == 1, out + err
    assert "20 delivered" in out and "1 failed" in out
    (kept,) = left(dlq)
    assert kept.value == big and kept.attempts == 1 and kept.id == 11
    assert "too large" in kept.error.lower()
    msgs = consume_all(kafka.client_config(), topic, expected=20)
    assert sorted(bytes(m.value() or b"") for m in msgs) == sorted(small)
