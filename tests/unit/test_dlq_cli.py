"""``shipper dlq ...`` on a real LMDB store in ``tmp_path``, through ``cli.main``.

Replay runs here with the in-memory Kafka client put in place of the real one (the
``_make_client`` seam); ``tests/integration/test_dlq_cli_replay.py`` replays into the
real broker.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shipper import cli
from shipper.cli import dlq as dlq_cli
from shipper.cli import dlq_replay
from shipper.cli.dlq import Progress, record_to_json, replay_records
from shipper.dlq import DlqFilter, DlqRecord, LmdbDlqStore, MemoryDlqStore
from shipper.kafka.client import MemoryProducerClient
from shipper.outcomes import Reason

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-never-printed"
NOW = time.time()
MAP = 16 << 20
BUDGET = 8 << 20


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Works whether or not shipper.cli registers the dlq commands itself.
    dlq_cli.register(cli.register_subcommand)
    for name in ("KAFKA_BROKERS", "KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def rec(
    value: bytes,
    topic: str = "logs",
    reason: str = "timeout",
    age: float = 10.0,
    **kw: Any,
) -> DlqRecord:
    return DlqRecord(
        value=value,
        topic=topic,
        reason=Reason(reason),
        first_failure=NOW - age,
        error="boom",
        **kw,
    )


SAMPLE = [
    rec(b'{"msg":"one"}', age=5),  # 1: <1m
    rec(b'{"msg":"two"}', topic="audit", reason="error", age=120, key=b"tenant-a"),  # 2: <1h
    rec(b"\xff\xfe\x00binary", reason="error", age=7200),  # 3: <1d, not UTF-8
    rec(b"big" * 100, reason="message_too_large", age=3 * 86400, parked=True),  # 4: older
    rec(b'{"msg":"five"}', topic="audit", reason="circuit_open", age=30),  # 5: <1m
]


def _rebase_sample() -> None:
    """Move NOW and the sample's ages to the present, so ages hold however late in a
    long test session this runs."""
    global NOW
    shift = time.time() - NOW
    NOW += shift
    SAMPLE[:] = [msgspec.structs.replace(r, first_failure=r.first_failure + shift) for r in SAMPLE]


@pytest.fixture
def dlq(tmp_path: Path) -> Path:
    _rebase_sample()
    path = tmp_path / "dlq"
    with LmdbDlqStore(path, map_size=MAP, max_disk_bytes=BUDGET) as store:
        store.put_batch(SAMPLE)
    return path


def records(path: Path) -> list[DlqRecord]:
    with LmdbDlqStore(path, map_size=MAP, max_disk_bytes=BUDGET) as store:
        return store.select(DlqFilter(), 10_000)


def write_config(tmp_path: Path, dlq: Path, extra: str = "") -> str:
    cfg = tmp_path / "shipper.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            sinks:
              kafka:
                enabled: true
                brokers: ["127.0.0.1:19092"]
                topic: logs
                timeout: 2s
                dlq_config:
                  path: {dlq}
                  map_size_bytes: {MAP}
                  max_disk_bytes: {BUDGET}
                  reprocessing_config:
                    max_retries: 2
                    batch_size: 2
            """
        )
        + extra
    )
    return str(cfg)


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def go(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["dlq", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return go


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- stats


def test_stats_json_counts_by_reason_topic_age_and_state(
    dlq: Path, tmp_path: Path, run: Run
) -> None:
    code, out, _ = run("stats", "--config", write_config(tmp_path, dlq), "--json")
    assert code == 0
    s = json.loads(out)
    assert s["total"] == 5 and s["active"] == 4 and s["parked"] == 1
    assert s["by_reason"] == {
        "circuit_open": 1,
        "error": 2,
        "message_too_large": 1,
        "timeout": 1,
    }
    assert s["by_topic"] == {"audit": 2, "logs": 3}
    assert s["by_age"] == {"<1m": 2, "<1h": 1, "<1d": 1, "older": 1}
    assert s["disk_budget_bytes"] == BUDGET and s["disk_budget_source"] == "config"
    assert 0 < s["disk_used_bytes"] <= s["file_bytes"]
    assert s["path"] == str(dlq)
    assert s["oldest_first_failure"] == pytest.approx(NOW - 3 * 86400)


def test_stats_table(dlq: Path, run: Run) -> None:
    code, out, _ = run("stats", "--path", str(dlq))
    assert code == 0
    assert "5 (4 active, 1 parked)" in out
    assert "(default; --config for yours)" in out  # no config: default budget
    for word in ("by reason", "by topic", "by age", "message_too_large", "audit", "<1h"):
        assert word in out


# --------------------------------------------------------------------------- list


def test_list_one_line_per_record_with_previews(dlq: Path, run: Run) -> None:
    code, out, err = run("list", "--path", str(dlq))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "REASON", "TOPIC"]
    assert len(lines) == 1 + len(SAMPLE)
    assert lines[1].split()[:3] == ["1", "timeout", "logs"]
    assert '{"msg":"one"}' in lines[1]
    assert "not UTF-8" in lines[3] and "fffe00" in lines[3]
    assert "parked" in lines[4] and "…" in lines[4]  # long value cut
    assert all(len(line) < 220 for line in lines)


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--reason", "error"], [2, 3]),
        (["--reason", "error", "--reason", "timeout"], [1, 2, 3]),
        (["--topic", "audit"], [2, 5]),
        (["--id", "3", "--id", "5"], [3, 5]),
        (["--parked"], [4]),
        (["--active"], [1, 2, 3, 5]),
        (["--all"], [1, 2, 3, 4, 5]),
        (["--older-than", "1m"], [2, 3, 4]),
        (["--older-than", "1d"], [4]),
        (["--topic", "audit", "--reason", "error"], [2]),
        (["--limit", "2"], [1, 2]),
    ],
)
def test_list_filters(dlq: Path, run: Run, args: list[str], ids: list[int]) -> None:
    code, out, _ = run("list", "--path", str(dlq), "--json", *args)
    assert code == 0
    assert [r["id"] for r in json_lines(out)] == ids


def test_list_says_when_the_limit_cut_it(dlq: Path, run: Run) -> None:
    _, out, err = run("list", "--path", str(dlq), "--limit", "3")
    assert len(out.splitlines()) == 4
    assert "first 3" in err
    _, out, err = run("list", "--path", str(dlq), "--limit", "0")
    assert len(out.splitlines()) == 6 and not err
    _, out, err = run("list", "--path", str(dlq), "--topic", "nope")
    assert out == "" and "no record matches" in err


def test_list_json_value_as_text_or_base64(dlq: Path, run: Run) -> None:
    _, out, _ = run("list", "--path", str(dlq), "--json")
    by_id = {r["id"]: r for r in json_lines(out)}
    assert by_id[1]["value"] == '{"msg":"one"}' and by_id[1]["value_encoding"] == "utf-8"
    assert by_id[3]["value_encoding"] == "base64"
    assert base64.b64decode(by_id[3]["value"]) == b"\xff\xfe\x00binary"
    assert by_id[2]["key"] == "tenant-a" and by_id[2]["key_encoding"] == "utf-8"
    assert by_id[1]["key"] is None
    assert by_id[4]["parked"] is True and by_id[4]["reason"] == "message_too_large"
    assert by_id[1]["first_failure"] == pytest.approx(NOW - 5)
    assert set(by_id[1]) >= {"topic", "error", "attempts", "last_failure", "headers"}


def test_record_to_json_headers_and_binary_key() -> None:
    r = DlqRecord(
        id=7,
        value=b"v",
        topic="t",
        key=b"\x80",
        headers=[("trace", b"abc"), ("bin", b"\xff")],
        reason=Reason.ERROR,
    )
    j = record_to_json(r)
    assert j["key"] == base64.b64encode(b"\x80").decode() and j["key_encoding"] == "base64"
    assert j["headers"] == [
        {"name": "trace", "value": "abc", "value_encoding": "utf-8"},
        {"name": "bin", "value": "/w==", "value_encoding": "base64"},
    ]


# --------------------------------------------------------------------------- export


def test_export_to_stdout_matches_list_json(dlq: Path, run: Run) -> None:
    code, out, err = run("export", "--path", str(dlq))
    assert code == 0
    assert [r["id"] for r in json_lines(out)] == [1, 2, 3, 4, 5]
    assert "exported 5 records" in err
    _, listed, _ = run("list", "--path", str(dlq), "--json")
    assert listed == out


def test_export_to_file_with_filters(dlq: Path, tmp_path: Path, run: Run) -> None:
    target = tmp_path / "out.jsonl"
    code, out, err = run("export", "--path", str(dlq), "--reason", "error", "--output", str(target))
    assert code == 0 and out == ""
    assert [r["id"] for r in json_lines(target.read_text())] == [2, 3]
    assert f"exported 2 records to {target}" in err
    code, _, err = run("export", "--path", str(dlq), "-o", str(tmp_path / "no" / "dir.jsonl"))
    assert code == 2 and "cannot write" in err


# --------------------------------------------------------------------------- purge


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_purge_with_yes_deletes_only_matching(dlq: Path, run: Run) -> None:
    code, out, _ = run("purge", "--path", str(dlq), "--reason", "error", "--yes")
    assert code == 0 and "purged 2 records" in out
    assert [r.id for r in records(dlq)] == [1, 4, 5]
    code, out, _ = run("purge", "--path", str(dlq), "--parked", "-y")
    assert code == 0 and "purged 1 record" in out
    assert [r.id for r in records(dlq)] == [1, 5]


def test_purge_refuses_without_tty_and_without_yes(dlq: Path, run: Run) -> None:
    # pytest's stdin is not a terminal.
    code, _, err = run("purge", "--path", str(dlq))
    assert code == 2
    assert "refusing to purge 5 records" in err and "--yes" in err
    assert len(records(dlq)) == 5


def test_purge_asks_on_a_terminal(dlq: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    code, _, err = run("purge", "--path", str(dlq), "--topic", "audit")
    assert code == 1 and "purge 2 records" in err and "[y/N]" in err
    assert "nothing purged" in err and len(records(dlq)) == 5
    monkeypatch.setattr(sys, "stdin", FakeTty("\n"))  # the default is no
    assert run("purge", "--path", str(dlq))[0] == 1
    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    code, out, _ = run("purge", "--path", str(dlq), "--topic", "audit")
    assert code == 0 and "purged 2 records" in out
    assert [r.id for r in records(dlq)] == [1, 3, 4]


def test_purge_nothing_matching_asks_nothing(dlq: Path, run: Run) -> None:
    code, out, err = run("purge", "--path", str(dlq), "--topic", "nope")
    assert code == 0 and "nothing purged" in out and "refusing" not in err


# --------------------------------------------------------------------------- errors


def test_missing_dlq_is_a_clear_usage_error(tmp_path: Path, run: Run) -> None:
    where = tmp_path / "never"
    for command in ("stats", "list", "export"):
        code, out, err = run(command, "--path", str(where))
        assert code == 2 and out == ""
        assert err.strip() == (
            f"no DLQ at {where} (nothing was ever dead-lettered, or dlq_config.path "
            "points elsewhere)"
        )
    assert not where.exists()  # looking did not create an empty DLQ


def test_config_path_and_errors(dlq: Path, tmp_path: Path, run: Run) -> None:
    code, out, _ = run("list", "--config", write_config(tmp_path, dlq), "--json")
    assert code == 0 and len(json_lines(out)) == 5
    # --path wins over the config's path.
    code, _, err = run("list", "--config", write_config(tmp_path, dlq), "--path", "/nonexistent")
    assert code == 2 and "no DLQ at /nonexistent" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("sinks:\n  kafka:\n    compression: brotli\n")
    code, _, err = run("stats", "--config", str(bad))
    assert code == 2 and "compression" in err
    code, _, err = run("stats", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "does not exist" in err
    code, _, err = run("stats")
    assert code == 2 and "--config FILE" in err and "--path DIR" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--reason", "bogus"],
        ["list", "--older-than", "soon"],
        ["list", "--limit", "-1"],
        ["list", "--parked", "--active"],
        ["replay", "--batch-size", "0"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(dlq: Path, run: Run, argv: list[str]) -> None:
    code, _, err = run(*argv, "--path", str(dlq)) if argv[0] != "frobnicate" else run(*argv)
    assert code == 2 and err


def test_no_dlq_command_prints_help(run: Run) -> None:
    code, _, err = run()
    assert code == 2 and "replay" in err and "purge" in err


def test_a_dlq_open_in_this_process_is_reported(dlq: Path, run: Run) -> None:
    with LmdbDlqStore(dlq, map_size=MAP, max_disk_bytes=BUDGET):
        code, _, err = run("list", "--path", str(dlq))
    assert code == 1 and "already open in this process" in err


# --------------------------------------------------------------------------- replay


@pytest.fixture
def kafka_mem(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryProducerClient]:
    client = MemoryProducerClient(partitions=3)
    confs: list[dict[str, Any]] = []

    def make(conf: dict[str, Any], unreachable_after: float = 0.0) -> MemoryProducerClient:
        confs.append(conf)
        return client

    monkeypatch.setattr(dlq_replay, "_make_client", make)
    client.confs = confs  # type: ignore[attr-defined]
    yield client


def test_replay_delivers_and_deletes(
    dlq: Path, tmp_path: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    code, out, err = run("replay", "--config", write_config(tmp_path, dlq))
    assert code == 0, out + err
    # Active records only by default: the parked one (4) stays.
    assert [r.id for r in records(dlq)] == [4]
    assert sorted(v for _, _, v in kafka_mem.topics["logs"]) == [
        b'{"msg":"one"}',
        b"\xff\xfe\x00binary",
    ]
    assert [(k, v) for _, k, v in kafka_mem.topics["audit"]] == [
        (b"tenant-a", b'{"msg":"two"}'),
        (None, b'{"msg":"five"}'),
    ]
    assert "4 delivered" in out and "0 failed" in out
    assert "replay: 4/4" in err  # not a terminal: plain progress lines
    conf = kafka_mem.confs[0]  # type: ignore[attr-defined]
    assert conf["bootstrap.servers"] == "127.0.0.1:19092"
    assert conf["partitioner"] == "murmur2_random"


def test_replay_parked_and_filters(
    dlq: Path, tmp_path: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    cfg = write_config(tmp_path, dlq)
    code, out, _ = run("replay", "--config", cfg, "--reason", "message_too_large")
    assert code == 0 and "nothing to replay" in out  # parked, not asked for
    code, _, _ = run("replay", "--config", cfg, "--reason", "message_too_large", "--parked")
    assert code == 0 and [r.id for r in records(dlq)] == [1, 2, 3, 5]
    code, _, _ = run("replay", "--config", cfg, "--id", "2", "--id", "3")
    assert code == 0 and [r.id for r in records(dlq)] == [1, 5]
    code, _, _ = run("replay", "--config", cfg, "--topic", "audit")
    assert code == 0 and [r.id for r in records(dlq)] == [1]


def test_replay_failures_stay_with_attempts_and_error(
    dlq: Path, tmp_path: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    kafka_mem.fail_next(1, "timeout")  # the first record sent fails
    code, out, _ = run("replay", "--config", write_config(tmp_path, dlq), "--keep-going")
    assert code == 1
    left = records(dlq)
    assert [r.id for r in left] == [1, 4]
    failed = left[0]
    assert failed.attempts == 1 and failed.error == "injected failure: timeout"
    assert not failed.parked and failed.last_failure >= failed.first_failure
    assert "3 delivered" in out and "1 failed" in out
    assert "1 x injected failure: timeout" in out
    # A second failure reaches max_retries (2): the record is parked, still kept.
    kafka_mem.fail_next(1, "timeout")
    code, out, _ = run("replay", "--config", write_config(tmp_path, dlq))
    assert code == 1 and "1 of them now parked" in out
    (again,) = [r for r in records(dlq) if r.id == 1]
    assert again.attempts == 2 and again.parked


def test_replay_stops_when_kafka_refuses_a_whole_batch(
    dlq: Path, tmp_path: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    kafka_mem.fail_next(2, "error")  # batch_size is 2: the first batch fails entirely
    code, out, _ = run("replay", "--config", write_config(tmp_path, dlq))
    assert code == 1
    assert "stopped early" in out and "2 records were not tried" in out
    by_id = {r.id: r for r in records(dlq)}
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1].attempts == by_id[2].attempts == 1
    assert by_id[3].attempts == by_id[5].attempts == 0  # untouched


def test_replay_wait_tries_again_while_kafka_does_not_answer_and_spends_no_retry(
    dlq: Path,
    tmp_path: Path,
    run: Run,
    kafka_mem: MemoryProducerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dlq_replay, "WAIT_STEP", 0.01)
    # Two tries meet an unreachable Kafka (the client fails them circuit_open), then it
    # answers: every active record is delivered, none spent a retry.
    kafka_mem.fail_next(4, "circuit_open")
    code, out, err = run("replay", "--config", write_config(tmp_path, dlq), "--wait", "5s")
    assert code == 0, out + err
    assert err.count("trying again in") == 2, err
    assert "4 delivered" in out, out
    assert [r.id for r in records(dlq)] == [4]  # the parked one stays


def test_replay_without_wait_stops_at_once_when_kafka_does_not_answer(
    dlq: Path, tmp_path: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    kafka_mem.fail_next(2, "circuit_open")
    code, _, err = run("replay", "--config", write_config(tmp_path, dlq))
    assert code == 1 and "trying again" not in err
    assert all(r.attempts == 0 for r in records(dlq)), "no retry spent on an unreachable Kafka"


def test_replay_dry_run_changes_nothing(
    dlq: Path, run: Run, kafka_mem: MemoryProducerClient
) -> None:
    code, out, err = run("replay", "--path", str(dlq), "--dry-run", "--parked")
    assert code == 0
    assert len(out.splitlines()) == 1 + 5
    assert "would send 5 records" in err and "nothing was sent" in err
    assert kafka_mem.topics == {} and len(records(dlq)) == 5


def test_replay_needs_a_config(dlq: Path, run: Run) -> None:
    code, _, err = run("replay", "--path", str(dlq))
    assert code == 2 and "replay needs --config FILE" in err


def test_no_secret_in_any_output(
    dlq: Path,
    tmp_path: Path,
    run: Run,
    kafka_mem: MemoryProducerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", SECRET)
    cfg = write_config(
        tmp_path,
        dlq,
        textwrap.indent(
            textwrap.dedent(
                """
                auth:
                  enabled: true
                  mechanism: SCRAM-SHA-256
                  username: shipper
                  password: "${KAFKA_PASSWORD}"
                """
            ),
            "    ",
        ),
    )
    kafka_mem.fail_next(1, "auth_failure")
    seen = ""
    for argv in (["stats"], ["list"], ["export"], ["replay", "--keep-going"]):
        _, out, err = run(*argv, "--config", cfg)
        seen += out + err
    assert "1 failed" in seen, seen
    assert kafka_mem.confs[0]["sasl.password"] == SECRET  # type: ignore[attr-defined]
    assert SECRET not in seen


def test_replay_matches_failures_to_records_by_content() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"same"), rec(b"same"), rec(b"other", key=b"k"), rec(b"", topic="")])
    client = MemoryProducerClient()
    client.fail_next(1, "error")
    s = replay_records(
        store, client, [1, 2, 3, 4], include_parked=False, batch_size=10, max_retries=5, wait=5
    )
    assert (s.delivered, s.failed) == (2, 2)
    left = store.select(DlqFilter(), 10)
    # One of the two equal values failed; the keyless/topicless record cannot be sent.
    assert [r.value for r in left] == [b"same", b""]
    assert left[1].error == "the record has no topic, so it cannot be replayed"
    assert client.topics["logs"][-1] == (client.topics["logs"][-1][0], b"k", b"other")


def test_replay_sends_each_records_headers_again() -> None:
    store = MemoryDlqStore()
    hs = [("env", b"prod"), ("x-log-id", b"0123456789abcdef0123456789abcdef")]
    store.put_batch(
        [
            DlqRecord(value=b"a", topic="logs", headers=hs, reason=Reason.TIMEOUT),
            rec(b"b"),
        ]
    )
    client = MemoryProducerClient()
    s = replay_records(
        store, client, [1, 2], include_parked=False, batch_size=10, max_retries=5, wait=5
    )
    assert s.delivered == 2
    assert client.headers["logs"] == [hs, []]


def test_replay_counts_records_gone_meanwhile() -> None:
    store = MemoryDlqStore()
    store.put_batch([rec(b"a"), rec(b"b"), rec(b"c")])
    store.delete([2])  # e.g. a running DLQ actor replayed it in the meantime
    s = replay_records(
        store,
        MemoryProducerClient(),
        [1, 2, 3],
        include_parked=False,
        batch_size=2,
        max_retries=3,
        wait=5,
    )
    assert (s.selected, s.delivered, s.gone, s.ok) == (3, 2, 1, True)


# --------------------------------------------------------------------------- progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    clock = Clock()
    p = Progress(100, out, tty=False, clock=clock, line_interval=5.0)
    p.update(10, 10, 0)
    assert out.getvalue() == ""  # too soon
    clock.now += 5
    p.update(50, 45, 5)
    clock.now += 1
    p.update(60, 55, 5)
    p.finish()
    lines = out.getvalue().splitlines()
    assert lines == [
        "replay: 50/100 (50%)  10/s  delivered 45  failed 5",
        "replay: 60/100 (60%)  10/s  delivered 55  failed 5",
    ]


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    clock = Clock()
    p = Progress(4, out, tty=True, clock=clock, width=8)
    clock.now += 1
    p.update(2, 2, 0)
    clock.now += 1
    p.update(4, 3, 1)
    p.finish()
    text = out.getvalue()
    assert "\r\x1b[K[####....] 2/4 (50%)  2/s  delivered 2  failed 0" in text
    assert text.endswith("[########] 4/4 (100%)  2/s  delivered 3  failed 1\n")


# --------------------------------------------------------------------------- processes


def test_works_while_another_process_holds_the_dlq(dlq: Path, run: Run) -> None:
    """A running DLQ actor keeps the environment open in its process; the CLI still
    reads it and deletes from it, and sees what the other process writes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from shipper.dlq import DlqRecord, LmdbDlqStore
                store = LmdbDlqStore({str(dlq)!r}, map_size={MAP}, max_disk_bytes={BUDGET})
                store.put_batch([DlqRecord(value=b"late", topic="logs", reason="timeout")])
                print("ready", flush=True)
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
        assert holder.stdout.readline().strip() == "ready"
        code, out, _ = run("stats", "--path", str(dlq), "--json")
        assert code == 0 and json.loads(out)["total"] == 6
        code, out, _ = run("purge", "--path", str(dlq), "--reason", "error", "--yes")
        assert code == 0 and "purged 2 records" in out
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "4"  # the holder sees the purge
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
