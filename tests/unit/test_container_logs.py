"""Container log files (shipper.sources.container), alone and in the file tailer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipper.config.sources import FileGroupConfig, TailConfig
from shipper.entries import decode_lines
from shipper.sources.checkpoints import MemoryCheckpoints
from shipper.sources.container import ContainerDecoder, pod_labels, record_line
from shipper.sources.files import FileTailer

CID = "0123456789abcdef" * 4


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def objs(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_cri_lines_give_timestamp_and_stream_and_partial_lines_are_joined() -> None:
    d = ContainerDecoder("cri")
    recs = d.feed(
        b"2026-01-01T00:00:00.1Z stdout F hello\n"
        b"2026-01-01T00:00:00.2Z stderr P part one, \n"
        b"2026-01-01T00:00:00.3Z stderr P part two, \n"
    )
    assert [(r.message, r.timestamp, r.stream) for r in recs] == [
        (b"hello", "2026-01-01T00:00:00.1Z", "stdout")
    ]
    assert d.pending_lines == 2 and d.pending_bytes > 0
    [joined] = d.feed(b"2026-01-01T00:00:00.4Z stderr F end\n")
    assert joined.message == b"part one, part two, end" and joined.lines == 3
    assert joined.timestamp == "2026-01-01T00:00:00.2Z" and joined.stream == "stderr"
    assert d.pending_bytes == 0 and d.bad == 0


def test_docker_lines_and_auto_and_bad_lines_go_on_as_plain_lines() -> None:
    d = ContainerDecoder("auto")
    recs = d.feed(
        b'{"log":"split ","stream":"stdout","time":"t1"}\n'
        b'{"log":"line\\n","stream":"stdout","time":"t2"}\n'
        b"2026-01-01T00:00:00Z stdout F cri line\n"
        b"not a container line\n"
    )
    assert [r.message for r in recs] == [b"split line", b"cri line", b"not a container line"]
    assert recs[0].timestamp == "t1" and recs[2].stream is None
    assert d.bad == 1


def test_a_record_becomes_an_entry_and_a_json_message_keeps_its_own_keys() -> None:
    d = ContainerDecoder("cri")
    text, inner = d.feed(
        b"2026-01-01T00:00:00Z stdout F plain words\n"
        b'2026-01-01T00:00:01Z stderr F {"message":"m","level":"error","labels":{"app":"a"}}\n'
    )
    entries, errors = decode_lines([record_line(text)[:-1], record_line(inner)[:-1]])
    assert errors == []
    assert entries[0].message == "plain words" and entries[0].labels == {"stream": "stdout"}
    assert entries[0].timestamp == "2026-01-01T00:00:00Z"
    assert entries[1].level == "error" and entries[1].labels == {"stream": "stderr", "app": "a"}


def test_pod_labels_come_from_the_file_name() -> None:
    assert pod_labels(f"/var/log/containers/web-7d4_shop_nginx-{CID}.log") == {
        "pod": "web-7d4",
        "namespace": "shop",
        "container": "nginx",
    }
    assert pod_labels("/var/log/pods/shop_web-7d4_1f2e/nginx/0.log") == {
        "namespace": "shop",
        "pod": "web-7d4",
        "container": "nginx",
    }
    assert pod_labels("/var/log/app.log") == {}


def tailer(tmp_path: Path, store: MemoryCheckpoints, clock: Clock, **group: Any) -> FileTailer:
    g = FileGroupConfig(paths=[str(tmp_path / "**" / "*.log")], **group)
    tail = TailConfig(poll_interval=0.1, partial_line_timeout=5.0, close_inactive=60)
    return FileTailer([g], store, tail, clock=clock)


def test_the_tailer_reads_cri_files_with_pod_labels_and_holds_partial_lines(
    tmp_path: Path,
) -> None:
    d = tmp_path / "containers"
    d.mkdir()
    log = d / f"web-7d4_shop_app-{CID}.log"
    log.write_bytes(b"2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z stdout P two \n")
    store, clock = MemoryCheckpoints(), Clock()
    t = tailer(tmp_path, store, clock, format="cri", labels={"team": "x"})
    t.scan()
    [block] = t.read(1 << 20)
    assert block.labels["namespace"] == "shop" and block.labels["team"] == "x"
    assert [o["message"] for o in objs(block.data)] == ["one"]
    t.acked(block)
    t.commit()
    # The position stops before the partial line: a restart reads it again whole.
    [cp] = store.data.values()
    assert cp.offset == len(b"2026-01-01T00:00:00Z stdout F one\n") and cp.line == 1
    with log.open("ab") as fh:
        fh.write(b"2026-01-01T00:00:02Z stdout F halves\n")
    again = tailer(tmp_path, store, clock, format="cri")
    again.scan()
    [b2] = again.read(1 << 20)
    assert [o["message"] for o in objs(b2.data)] == ["two halves"]
    assert b2.first_line == 2 and again.files[b2.key].line == 3


def test_docker_files_with_multiline_group_the_messages(tmp_path: Path) -> None:
    lines = [
        "2026-01-01 ERROR failed\n",
        "java.lang.IllegalStateException: boom\n",
        "\tat a.B.c(B.java:1)\n",
        "2026-01-01 INFO next\n",
    ]
    (tmp_path / "a.log").write_text(
        "".join(
            json.dumps({"log": x, "stream": "stderr", "time": f"t{i}"}) + "\n"
            for i, x in enumerate(lines)
        )
    )
    t = tailer(tmp_path, MemoryCheckpoints(), Clock(), format="docker", multiline="java")
    t.scan()
    [block] = t.read(1 << 20)
    [entry] = objs(block.data)
    assert entry["message"] == "".join(lines[:3]).rstrip("\n")
    assert entry["timestamp"] == "t0" and entry["labels"] == {"stream": "stderr"}
    assert block.first_line == 1 and t.files[block.key].line == 3


def test_bad_lines_of_a_cri_file_are_shipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"garbage\n2026-01-01T00:00:00Z stdout F ok\n")
    t = tailer(tmp_path, MemoryCheckpoints(), Clock(), format="cri")
    t.scan()
    [block] = t.read(1 << 20)
    assert [o["message"] for o in objs(block.data)] == ["garbage", "ok"]
    assert t.bad_format == 1
