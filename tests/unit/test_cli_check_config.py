"""``shipper check-config``: exit codes, the printed config, masking, problems on stderr."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from shipper import cli
from shipper.config import MASK, load_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pa55-Word-never-shown"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BROKERS", "KAFKA_USERNAME", "KAFKA_PASSWORD", "KAFKA_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "shipper.yaml"
    path.write_text(text)
    return str(path)


GOOD = """
sinks:
  kafka:
    enabled: true
    brokers: ["127.0.0.1:19092"]
    topic: logs
    batch_timeout: 100ms
    auth:
      enabled: true
      mechanism: SCRAM-SHA-256
      username: shipper
      password: "${KAFKA_PASSWORD}"
"""


def test_valid_config_prints_effective_yaml_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", SECRET)
    path = write(tmp_path, GOOD)
    assert cli.main(["check-config", path]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out and SECRET not in err
    shown = yaml.safe_load(out)
    assert shown["sinks"]["kafka"]["auth"]["password"] == MASK
    assert shown["sinks"]["kafka"]["batch_timeout"] == "100ms"
    assert shown["sinks"]["kafka"]["queue_size"] == 50000  # defaults are shown too
    assert shown["metrics"]["port"] == 9464
    assert "configuration is valid" in err
    # The printed config is itself a valid config (with the secret given back).
    shown["sinks"]["kafka"]["auth"]["password"] = SECRET
    assert load_config(shown, env={}) == load_config(path)


def test_invalid_config_lists_every_problem_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "sinks:\n  kafka:\n    brokers: [k:1]\n    topic: t\n    compression: brotli\n"
        "    required_acks: 2\n"
        "    auth: {enabled: true, username: u, password: '${KAFKA_PASSWORD}'}\n",
    )
    assert cli.main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"3 configuration problems in {path}:" in err
    assert "sinks.kafka.compression: 'brotli' is not one of none, gzip, snappy, lz4, zstd" in err
    assert "sinks.kafka.required_acks: 2 is not one of 0, 1, -1" in err
    assert "sinks.kafka.auth.password: environment variable KAFKA_PASSWORD is not set" in err


def test_yaml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "sinks:\n  kafka:\n    topic: [logs\n")
    assert cli.main(["check-config", path]) == 2
    assert "line 4, column 1: YAML syntax error" in capsys.readouterr().err


def test_missing_tls_files_fail_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.pem"
    text = GOOD.replace("auth:", f"tls: {{enabled: true, ca_file: '{ca}'}}\n    auth:")
    path = write(tmp_path, text.replace("${KAFKA_PASSWORD}", "p"))
    assert cli.main(["check-config", path]) == 2
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["sinks"]["kafka"]["tls"]["ca_file"] == str(ca)
    assert f"sinks.kafka.tls.ca_file: file {ca} does not exist" in err
    # Checking a config meant for another machine: the files are not looked at.
    assert cli.main(["check-config", "--skip-file-checks", path]) == 0
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert cli.main(["check-config", path]) == 0


def test_missing_file_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # A command-line argument is a file name even when it looks like YAML.
    assert cli.main(["check-config", "sinks: {}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "check-config" in capsys.readouterr().err
    assert cli.main(["check-config"]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["--version"]) == 0
    assert "shipper 0.1.0" in capsys.readouterr().out


def test_kafka_brokers_env_shows_in_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "b1:9092,b2:9092")
    path = write(tmp_path, GOOD.replace("${KAFKA_PASSWORD}", "p"))
    assert cli.main(["check-config", path]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["sinks"]["kafka"]["brokers"] == [
        "b1:9092",
        "b2:9092",
    ]


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=str)
def test_shipped_examples_are_valid(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_USERNAME", "log-capturer")
    monkeypatch.setenv("KAFKA_PASSWORD", SECRET)
    assert cli.main(["check-config", "--skip-file-checks", str(example)]) == 0
    assert SECRET not in capsys.readouterr().out


def test_local_example_targets_the_local_broker() -> None:
    sink = load_config(ROOT / "examples" / "local.yaml", env={}).sinks.kafka
    assert (sink.brokers, sink.topic, sink.security_protocol) == (
        ["127.0.0.1:19092"],
        "logs",
        "PLAINTEXT",
    )


def test_subcommands_can_be_registered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        print("hello " * args.times)
        return 0

    cli.register_subcommand("hello", "say hello", add, run)
    assert cli.main(["hello", "--times", "2"]) == 0
    assert capsys.readouterr().out.strip() == "hello hello"
    assert "check-config" in cli.build_parser().format_help()
