"""Multiline: lines grouped into entries (shipper.sources.multiline), in files too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shipper.config import load_config
from shipper.config.sources import FileGroupConfig, TailConfig
from shipper.errors import ConfigError
from shipper.sources.checkpoints import MemoryCheckpoints
from shipper.sources.files import FileTailer
from shipper.sources.multiline import PRESETS, Combiner, MultilineRule


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(data: bytes) -> list[str]:
    out = []
    for line in data.decode().splitlines():
        out.append(json.loads(line)["message"] if line.startswith("{") else line)
    return out


JAVA = b"""2026-01-01 10:00:00 ERROR request failed
java.lang.IllegalStateException: boom
\tat com.example.Handler.run(Handler.java:42)
\tat java.base/java.lang.Thread.run(Thread.java:833)
Caused by: java.io.IOException: disk
\tat com.example.Store.write(Store.java:7)
\t... 3 more
2026-01-01 10:00:01 INFO next request
"""

PYTHON = b"""2026-01-01 10:00:00 ERROR job failed
Traceback (most recent call last):
  File "/app/job.py", line 3, in <module>
    run()
ValueError: bad input

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/app/job.py", line 5, in <module>
KeyError: 'x'
2026-01-01 10:00:01 INFO next job
"""

GO = b"""panic: runtime error: index out of range [3] with length 3

goroutine 1 [running]:
main.main()
\t/app/main.go:8 +0x1d
exit status 2
2026/01/01 10:00:01 next start
"""


@pytest.mark.parametrize(
    ("preset", "text", "first_lines"),
    [
        ("java", JAVA, 7),
        ("python", PYTHON, 11),
        ("go", GO, 6),
    ],
)
def test_presets_make_one_entry_of_a_stack_trace(
    preset: str, text: bytes, first_lines: int
) -> None:
    spec = PRESETS[preset]
    c = Combiner(MultilineRule.of(spec.get("start"), spec.get("continue")))  # type: ignore[arg-type]
    out = c.feed(text)
    # The trace is one entry; the next log line is held until something follows it.
    got = messages(out.data)
    assert len(got) == 1 and out.lines == first_lines
    assert got[0] == b"\n".join(text.split(b"\n")[:first_lines]).decode()
    assert c.pending_lines == 1
    rest = c.flush()
    assert rest.lines == 1 and rest.data.endswith(b"next start\n" if preset == "go" else b"\n")


def test_start_rule_negate_and_a_single_line_stays_as_it_was() -> None:
    rule = MultilineRule.of(r"^\d{4}-", None)
    c = Combiner(rule)
    out = c.feed(b'{"message":"json","level":"warn"}\n2026-01-01 a\n  more\n2026-01-01 b\n')
    # A first line that does not match starts an entry anyway; a single line is unchanged.
    assert out.data.split(b"\n")[0] == b'{"message":"json","level":"warn"}'
    assert messages(out.data)[1] == "2026-01-01 a\n  more"
    assert out.lines == 3 and c.pending_lines == 1
    # negate: lines NOT matching "^\s" start entries (the same grouping, said the other way).
    c2 = Combiner(MultilineRule.of(r"^\s", None, negate=True))
    assert messages(c2.feed(b"a\n b\n c\nd\n").data) == ["a\n b\n c"]


def test_limits_cut_an_entry_and_the_rest_starts_the_next_nothing_is_dropped() -> None:
    c = Combiner(MultilineRule.of(None, r"^\s", max_lines=3, max_bytes=1000))
    out = c.feed(b"head\n 1\n 2\n 3\n 4\nnext\n")
    assert messages(out.data) == ["head\n 1\n 2", " 3\n 4"]
    assert c.cut == 1
    c2 = Combiner(MultilineRule.of(None, r"^\s", max_bytes=12))
    out2 = c2.feed(b"head\n aaaa\n bbbb\nx\n")
    assert messages(out2.data) == ["head\n aaaa", " bbbb"] and c2.cut == 1


def test_a_held_entry_goes_after_the_timeout() -> None:
    clock = Clock()
    c = Combiner(MultilineRule.of(None, r"^\s", timeout=1.0), clock)
    assert c.feed(b"head\n more\n").data == b""
    assert not c.due()
    clock.now += 1.0
    assert c.due()
    assert messages(c.flush().data) == ["head\n more"]
    assert c.pending_bytes == 0 and not c.due()


def tailer(tmp_path: Path, store: MemoryCheckpoints, clock: Clock, multiline: Any) -> FileTailer:
    group = FileGroupConfig(paths=[str(tmp_path / "*.log")], multiline=multiline)
    tail = TailConfig(poll_interval=0.1, partial_line_timeout=5.0, close_inactive=60)
    return FileTailer([group], store, tail, clock=clock)


def test_a_file_position_never_splits_an_entry_across_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(JAVA)
    store, clock = MemoryCheckpoints(), Clock()
    t = tailer(tmp_path, store, clock, "java")
    t.scan()
    [block] = t.read(1 << 20)
    assert block.lines == 1 and block.first_line == 1
    t.acked(block)
    t.commit()
    # The last line is held: the position stops before it, at the end of the trace.
    [cp] = store.data.values()
    assert cp.offset == len(JAVA) - len(b"2026-01-01 10:00:01 INFO next request\n")
    assert cp.line == 7
    # A crash now, then a restart: the held entry is read again, whole, with the rest.
    with log.open("ab") as fh:
        fh.write(b"\tat com.example.Late.run(Late.java:1)\n2026-01-01 10:00:02 INFO last\n")
    again = tailer(tmp_path, store, clock, "java")
    again.scan()
    [b2] = again.read(1 << 20)
    assert messages(b2.data) == [
        "2026-01-01 10:00:01 INFO next request\n\tat com.example.Late.run(Late.java:1)"
    ]
    assert b2.first_line == 8
    clock.now += 1.0  # the last entry goes after the timeout
    [b3] = again.read(1 << 20)
    assert messages(b3.data) == ["2026-01-01 10:00:02 INFO last"] and b3.first_line == 10


def test_cut_entries_are_counted_by_the_tailer(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"head\n" + b" x\n" * 5 + b"next\n")
    t = tailer(tmp_path, MemoryCheckpoints(), Clock(), {"continue": r"^\s", "max_lines": 2})
    t.scan()
    [block] = t.read(1 << 20)
    assert messages(block.data) == ["head\n x", " x\n x", " x\n x"]
    assert t.multiline_cut == 2


def test_bad_multiline_settings_name_their_yaml_path(tmp_path: Path) -> None:
    sink = {"enabled": True, "brokers": ["h:9092"], "topic": "logs"}
    base: dict[str, Any] = {"sinks": {"kafka": sink}}
    bad = [
        ({"start": "(", "continue": None}, "sources.files[0].multiline.start"),
        ({"negate": True}, "sources.files[0].multiline"),
        ("ruby", "sources.files[0].multiline"),
    ]
    for ml, where in bad:
        cfg = {**base, "sources": {"files": [{"paths": ["/x/*.log"], "multiline": ml}]}}
        with pytest.raises(ConfigError) as err:
            load_config(cfg)
        assert where in str(err.value), str(err.value)
    ok = load_config({**base, "sources": {"stdin": {"multiline": "python"}}})
    assert ok.sources.stdin.multiline is not None
