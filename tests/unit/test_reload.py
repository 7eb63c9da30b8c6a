"""Reading the configuration again, without Ray: refused, unchanged, what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from actors.reload import Switched
from shipper.config import ShipperConfig, load_config
from shipper.reload import changes, check_reload, resumed
from shipper.submissions import CloseReport, RunStats


def cfg(**kafka: Any) -> dict[str, Any]:
    return {
        "sinks": {
            "kafka": {"enabled": True, "brokers": ["127.0.0.1:9092"], "topic": "logs", **kafka}
        }
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_file_that_does_not_validate_is_refused_with_its_problems(tmp_path: Path) -> None:
    running = load_config(cfg())
    check = check_reload(write(tmp_path / "c.yaml", cfg(compression="brotli")), running)
    assert check.refused and check.config is None
    assert check.problems == [
        "sinks.kafka.compression: 'brotli' is not one of none, gzip, snappy, lz4, zstd"
    ]
    gone = check_reload(tmp_path / "missing.yaml", running)
    assert gone.refused and "missing.yaml" in gone.problems[0]
    off = check_reload(write(tmp_path / "off.yaml", cfg(enabled=False)), running)
    assert off.refused and "disabled" in off.problems[0]


def test_an_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", cfg())
    check = check_reload(path, load_config(path))
    assert check.unchanged and not check.refused


def test_changes_name_the_settings_that_differ() -> None:
    old = load_config(cfg())
    new_data = cfg(headers={"env": "prod"}, compression="lz4")
    new_data["sources"] = {"files": [{"paths": ["/var/log/*.log"]}]}
    new_data["metrics"] = {"enabled": False}
    assert changes(old, load_config(new_data)) == [
        "metrics",
        "sinks.kafka.compression",
        "sinks.kafka.headers",
        "sources.files",
    ]


def test_a_new_password_is_a_change_and_never_shown() -> None:
    auth = {"enabled": True, "mechanism": "PLAIN", "username": "u"}
    old = load_config(cfg(auth={**auth, "password": "first-secret"}))
    new = load_config(cfg(auth={**auth, "password": "second-secret"}))
    found = changes(old, new)
    assert found == ["sinks.kafka.auth"]
    assert "secret" not in " ".join(found)


# --------------------------------------------------------------------------- switch-over


class FakeShipper:
    """What actors.reload.Switched uses of a Shipper, without Ray."""

    made: ClassVar[list[FakeShipper]] = []

    def __init__(self, config: Any, fail_sources: bool = False) -> None:
        self.config = load_config(config)
        self.fail_sources = fail_sources
        self.closed = 0
        self.sources = 0
        self.node_id = "n"
        self.metrics_url = None
        self.source_counts = {"file_lines": 10}
        self.run = RunStats(entries_in=10, submissions=1)
        FakeShipper.made.append(self)

    def start_sources(self) -> list[str]:
        if self.fail_sources:
            raise RuntimeError("the HTTP port is taken")
        self.sources += 1
        return ["following /logs/*.log on n"]

    def stats(self) -> RunStats:
        return self.run

    def close(self, timeout: float | None = None) -> CloseReport:
        self.closed += 1
        return CloseReport(True, 0, 0, self.run)


def switched(tmp_path: Path, starts: list[bool]) -> tuple[Switched, Path]:
    """A Switched whose n-th start after the first fails its sources when starts[n]."""
    path = write(tmp_path / "c.yaml", cfg())
    FakeShipper.made = []
    plan = iter(starts)

    def start(config: Any) -> FakeShipper:
        return FakeShipper(config, next(plan))

    s = Switched(FakeShipper(path), start, str(path))
    s.start_sources()
    return s, path


def test_a_new_config_whose_start_fails_is_closed_and_the_old_one_runs_again(
    tmp_path: Path,
) -> None:
    s, path = switched(tmp_path, [True, False])
    said: list[str] = []
    write(path, cfg(compression="lz4"))
    assert s.reload(said.append) == "failed"
    first, broken, again = FakeShipper.made
    assert first.closed == 1 and broken.closed == 1  # the half-started one is gone
    assert again.sources == 1 and again.config.sinks.kafka.compression == "none"
    assert any("did not start (the HTTP port is taken)" in x for x in said)
    assert s.reloads["failed"] == 1
    assert s.stats().entries_in == 20  # the first run's figures and the new one's
    assert s.close().stats.entries_in == 20 and s.source_counts == {"file_lines": 20}


def test_when_no_config_starts_again_the_run_ends_with_every_figure_once(tmp_path: Path) -> None:
    s, path = switched(tmp_path, [True, True])
    write(path, cfg(compression="lz4"))
    with pytest.raises(RuntimeError, match="did not start again either"):
        s.reload(lambda _line: None)
    assert s.reloads["failed"] == 1
    report = s.close()  # nothing runs: the first run's figures, once
    assert report.stats.entries_in == 10 and s.stats().entries_in == 10
    assert s.source_counts == {"file_lines": 10}


def test_an_applied_reload_counts_and_refused_and_unchanged_change_nothing(
    tmp_path: Path,
) -> None:
    s, path = switched(tmp_path, [False])
    assert s.reload(lambda _line: None) == "unchanged"
    path.write_text("sinks: [")
    assert s.reload(lambda _line: None) == "refused"
    write(path, cfg(compression="lz4"))
    assert s.reload(lambda _line: None) == "applied"
    assert len(FakeShipper.made) == 2 and FakeShipper.made[1].sources == 1
    assert s.reloads == {"applied": 1, "unchanged": 1, "refused": 1, "failed": 0}


def test_groups_followed_already_read_new_files_from_their_beginning() -> None:
    def with_groups(*groups: dict[str, Any]) -> ShipperConfig:
        data = cfg()
        data["sources"] = {"files": list(groups)}
        return load_config(data)

    old = with_groups({"paths": ["/a/*.log"], "start_at": "end"})
    new = with_groups(
        {"paths": ["/a/*.log"], "start_at": "end"}, {"paths": ["/b/*.log"], "start_at": "end"}
    )
    got = [g.start_at for g in resumed(old, new).sources.files]
    assert got == ["beginning", "end"]  # a group the reload adds keeps start_at
    assert resumed(old, old).sources.files[0].start_at == "beginning"
