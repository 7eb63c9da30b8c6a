"""Configuration: the typed model of a config file and the loader that builds it.

- :mod:`shipper.config.types`    durations, broker addresses, topic names, acks
- :mod:`shipper.config.model`    one frozen pydantic class per section
- :mod:`shipper.config.sources`  the ``sources`` section (files, checkpoints, HTTP)
- :mod:`shipper.config.fleet`    the ``fleet`` section (which nodes run a pipeline)
- :mod:`shipper.config.loading`  YAML, ``${ENV}``, presets, errors that name YAML paths

Everything a caller needs is re-exported here: ``from shipper.config import
load_config, KafkaSinkConfig``.
"""

from shipper.config.fleet import ActorResources, FleetConfig, FleetResources
from shipper.config.loading import (
    PRESETS,
    check_files,
    load_config,
    parse_config_text,
    to_yaml,
)
from shipper.config.model import (
    AuthConfig,
    BackpressureConfig,
    CircuitBreakerConfig,
    DlqConfig,
    KafkaSinkConfig,
    LoggingConfig,
    MetricsConfig,
    PartitioningConfig,
    PipelineConfig,
    ReprocessingConfig,
    RoutingConfig,
    ShipperConfig,
    SinksConfig,
    TlsConfig,
)
from shipper.config.sources import (
    CheckpointConfig,
    FileGroupConfig,
    HttpSourceConfig,
    SourcesConfig,
    TailConfig,
)
from shipper.config.types import MASK

__all__ = [
    "MASK",
    "PRESETS",
    "ActorResources",
    "AuthConfig",
    "BackpressureConfig",
    "CheckpointConfig",
    "CircuitBreakerConfig",
    "DlqConfig",
    "FileGroupConfig",
    "FleetConfig",
    "FleetResources",
    "HttpSourceConfig",
    "KafkaSinkConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PartitioningConfig",
    "PipelineConfig",
    "ReprocessingConfig",
    "RoutingConfig",
    "ShipperConfig",
    "SinksConfig",
    "SourcesConfig",
    "TailConfig",
    "TlsConfig",
    "check_files",
    "load_config",
    "parse_config_text",
    "to_yaml",
]
