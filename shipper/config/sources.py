"""The ``sources`` section: where log lines come from besides the Python API.

::

    sources:
      files:
        - paths: ["/var/log/app/*.log"]       # globs; files that start to match are picked up
          labels: {service: app}              # added to every entry of these files
      checkpoints:
        path: ./data/checkpoints              # LMDB; default: beside the DLQ
      tail: {...}                             # how files (and stdin) are read
      http:
        enabled: true
        port: 8080
        auth_token_env: SHIPPER_HTTP_TOKEN

Not part of the spec: it names the Kafka sink only. Every key has a default, so
``sources: {}`` and no ``sources`` at all both mean "no file or HTTP source".
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipper.config.types import MODEL_CONFIG, NonEmptyStr, PositiveDuration

__all__ = [
    "CheckpointConfig",
    "FileGroupConfig",
    "HttpSourceConfig",
    "MultilineConfig",
    "SourcesConfig",
    "StdinConfig",
    "TailConfig",
]

#: Label that names the file an entry was read from.
FILE_LABEL = "file"


#: Rules for the stack traces of common runtimes (``multiline: java``); see
#: shipper.sources.multiline.
MULTILINE_PRESETS: dict[str, dict[str, str]] = {
    # "	at com.x.Y.z(Y.java:10)", "	... 12 more", "Caused by: ...", "Suppressed: ...",
    # and the exception's own line ("java.lang.IllegalStateException: boom").
    "java": {
        "continue": r"^(\s+at\s|\s+\.\.\.\s+\d+\s+more|\s*(Caused by|Suppressed):|"
        r"[\w$.]*(Exception|Error|Throwable)(:|\s*$))"
    },
    # "Traceback (most recent call last):", indented frames and code, the exception's
    # line, blank lines and the "During handling ..." / "The above exception ..." joins
    # of a chained traceback.
    "python": {
        "continue": r"^(Traceback \(most recent call last\):|\s|$|"
        r"[\w.]*(Error|Exception|Warning|Exit|Interrupt|Iteration)\b|"
        r"During handling of the above exception|The above exception was the direct cause)"
    },
    # "panic: ...", then a blank line, "goroutine 1 [running]:", frames ("main.f(...)")
    # and their tab-indented file lines, "created by ...", "exit status 2".
    "go": {
        "continue": r"^(\s|$|goroutine \d+ \[|created by |exit status \d+|\[signal |"
        r"[\w./*()\[\]-]+\(.*\)$)"
    },
}


class MultilineConfig(BaseModel):
    """Lines grouped into entries (a stack trace as one entry): see
    :mod:`shipper.sources.multiline`. Exactly one of ``start`` and ``continue``."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "populate_by_name": True})

    start: NonEmptyStr | None = Field(
        default=None, description="A line this pattern finds a match in starts an entry."
    )
    continue_: NonEmptyStr | None = Field(
        default=None,
        alias="continue",
        description="A line this pattern finds a match in continues the entry before it.",
    )
    negate: bool = Field(
        default=False, description="Act on the lines the pattern finds no match in instead."
    )
    max_lines: int = Field(
        default=500, ge=1, le=100_000, description="Most lines in one entry; the next starts one."
    )
    max_bytes: int = Field(
        default=1 << 20, ge=256, le=64 << 20, description="Most bytes in one entry."
    )
    timeout: PositiveDuration = Field(
        default=1.0, description="An entry with no next line goes after this long."
    )

    @field_validator("start", "continue_")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value.encode())
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> MultilineConfig:
        if (self.start is None) == (self.continue_ is None):
            raise ValueError("set exactly one of start and continue")
        return self


def _preset(value: Any) -> Any:
    """``multiline: java`` (or python, go): the preset's rule."""
    if isinstance(value, str):
        if value not in MULTILINE_PRESETS:
            raise ValueError(f"unknown preset {value!r}; use one of "
                             f"{', '.join(MULTILINE_PRESETS)}, or a block with start or "
                             "continue")  # fmt: skip
        return dict(MULTILINE_PRESETS[value])
    return value


class FileGroupConfig(BaseModel):
    """Files read and followed like ``tail -F``, with labels for their entries."""

    model_config = MODEL_CONFIG

    paths: list[NonEmptyStr] = Field(
        min_length=1,
        description="Glob patterns (``*``, ``?``, ``[...]``, ``**``); matching files are "
        "followed, files that start to match later are picked up.",
    )
    labels: dict[NonEmptyStr, str] = Field(
        default_factory=dict,
        description="Labels added to every entry of these files (an entry's own label of "
        "the same name wins); the file's path is added as label ``file``.",
    )
    start_at: Literal["beginning", "end"] = Field(
        default="beginning",
        description="Where to start in a file there when the source starts (without a "
        "checkpoint): its beginning, or its end (only new lines). A file that appears "
        "later is read from its beginning.",
    )
    multiline: MultilineConfig | None = Field(
        default=None,
        description="Group lines into entries (stack traces): a block with start or "
        "continue, or a preset: java, python, go.",
    )

    format: Literal["lines", "cri", "docker", "auto"] = Field(
        default="lines",
        description="How lines are written: plain lines; cri (containerd, CRI-O) or "
        "docker (json-file) container logs, whose prefix gives each entry its timestamp "
        "and a stream label and whose partial lines are joined; auto: either, per line.",
    )

    _multiline_preset = field_validator("multiline", mode="before")(_preset)

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        # Globs are resolved against the working directory of the node's source
        # actor; spelling them out once avoids surprises between driver and actors.
        return [os.path.abspath(os.path.expanduser(p)) for p in paths]


class CheckpointConfig(BaseModel):
    """Where read positions are kept between runs."""

    model_config = MODEL_CONFIG

    path: NonEmptyStr | None = Field(
        default=None,
        description="Directory of the LMDB environment of read positions; default: "
        "``checkpoints`` beside ``sinks.kafka.dlq_config.path``.",
    )
    map_size_bytes: int = Field(
        default=64 << 20,
        ge=1 << 20,
        le=1 << 36,
        description="Largest size the checkpoint file may reach.",
    )


class TailConfig(BaseModel):
    """How files and stdin are read."""

    model_config = MODEL_CONFIG

    poll_interval: PositiveDuration = Field(
        default=0.25, description="How often files are checked for new lines and new files."
    )
    watch: bool = Field(
        default=True,
        description="Also read as soon as the file system reports a change to a followed "
        "directory (Linux inotify), not only every poll_interval.",
    )
    read_bytes: int = Field(
        # Large: a source that is behind (a busy file, a big pipe) ships in few large
        # submissions, and each Ray hop costs per call; a source that keeps up reads
        # what is there, whatever this says. Measured in docs/performance.md.
        default=8 << 20,
        ge=4096,
        le=64 << 20,
        description="Most bytes read from one file in one go (one submission at most).",
    )
    max_line_bytes: int = Field(
        default=1 << 20,
        ge=256,
        le=64 << 20,
        description="Longer lines are cut to this size (the rest is dropped and counted).",
    )
    partial_line_timeout: PositiveDuration = Field(
        default=5.0,
        description="How long a last line without its newline waits before it is sent as is.",
    )
    close_inactive: PositiveDuration = Field(
        default=300.0,
        description="A file renamed or deleted away is released after it has been read to "
        "its end and nothing was appended for this long.",
    )
    max_inflight_bytes: int = Field(
        default=16 << 20,
        ge=1 << 16,
        description="Bytes read and not yet acknowledged, per node, before reading pauses.",
    )


class HttpTlsConfig(BaseModel):
    """HTTPS for the intake: on when ``cert_file`` is set; mutual TLS (clients must show
    a certificate signed by ``client_ca_file``) when that is set too."""

    model_config = MODEL_CONFIG

    cert_file: NonEmptyStr | None = Field(
        default=None, description="The server's certificate (PEM, chain after it); turns HTTPS on."
    )
    key_file: NonEmptyStr | None = Field(
        default=None, description="The private key of ``cert_file`` (PEM)."
    )
    client_ca_file: NonEmptyStr | None = Field(
        default=None,
        description="CA certificates (PEM) that client certificates must be signed by; when "
        "set, a client without such a certificate cannot connect (mutual TLS).",
    )

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _pairs(self) -> HttpTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both, or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file (mutual TLS is HTTPS)")
        return self


class HttpSourceConfig(BaseModel):
    """The HTTP intake: ``POST /v1/logs`` with NDJSON or a JSON array of entries."""

    model_config = MODEL_CONFIG

    enabled: bool = Field(default=False, description="Serve the HTTP intake.")
    host: NonEmptyStr = Field(
        default="127.0.0.1", description="Address to listen on (0.0.0.0 for the network)."
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Port; 0 picks a free one.")
    max_body_bytes: int = Field(
        default=10 << 20,
        ge=1024,
        le=1 << 30,
        description="Largest request body; larger requests get 413.",
    )
    auth_token_env: NonEmptyStr | None = Field(
        default=None,
        description="Name of an environment variable holding a bearer token; when it is "
        "set, requests without ``Authorization: Bearer <token>`` get 401.",
    )
    tls: HttpTlsConfig = Field(
        default_factory=lambda: HttpTlsConfig(),
        description="HTTPS (and mutual TLS) for the intake; a token on plain HTTP travels "
        "in clear.",
    )


class StdinConfig(BaseModel):
    """How ``shipper run`` reads stdin and ``--input`` files."""

    model_config = MODEL_CONFIG

    multiline: MultilineConfig | None = Field(
        default=None,
        description="Group lines into entries, as for files (a block or a preset).",
    )

    _multiline_preset = field_validator("multiline", mode="before")(_preset)


class SourcesConfig(BaseModel):
    """Inputs other than the Python API and ``--input``."""

    model_config = MODEL_CONFIG

    files: list[FileGroupConfig] = Field(
        default_factory=list, description="Groups of files to follow."
    )
    checkpoints: CheckpointConfig = Field(
        default_factory=lambda: CheckpointConfig(), description="Read positions."
    )
    tail: TailConfig = Field(default_factory=lambda: TailConfig(), description="Reading.")
    stdin: StdinConfig = Field(
        default_factory=lambda: StdinConfig(), description="stdin and --input."
    )
    http: HttpSourceConfig = Field(
        default_factory=lambda: HttpSourceConfig(), description="HTTP intake."
    )

    @property
    def any(self) -> bool:
        """Whether a file or HTTP source is configured (``shipper run`` then serves)."""
        return bool(self.files) or self.http.enabled
