"""Reading the configuration again, without Ray: refused, unchanged, what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shipper.config import load_config
from shipper.reload import changes, check_reload


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
