"""The ``fleet`` section: on which Ray nodes a pipeline runs, and what its actors ask for.

::

    fleet:
      nodes: resource:log_shipper   # driver (default) | all | resource:NAME
      reconcile_interval: 2s
      resources:
        batcher: {num_cpus: 0.5}

A *node pipeline* (Router, Batchers, Producers, DLQ, the sources) runs on every
selected node, pinned to it; the supervisor and the telemetry endpoint are one for
the fleet. Not part of the spec.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from shipper.config.types import MODEL_CONFIG, PositiveDuration

__all__ = ["ActorResources", "FleetConfig", "FleetResources"]


class ActorResources(BaseModel):
    """What one actor reserves from Ray on its node."""

    model_config = MODEL_CONFIG

    num_cpus: float = Field(
        default=0.0,
        ge=0.0,
        le=1024.0,
        description="CPUs reserved (0: none, the default; on a 2-core node a CPU per actor "
        "would leave room for two actors).",
    )
    memory: int | None = Field(
        default=None, ge=1 << 20, description="Memory reserved, in bytes (unset: none)."
    )


class FleetResources(BaseModel):
    """Reservations per kind of actor of a node pipeline."""

    model_config = MODEL_CONFIG

    router: ActorResources = Field(default_factory=lambda: ActorResources(), description="Router.")
    batcher: ActorResources = Field(
        default_factory=lambda: ActorResources(), description="Each Batcher."
    )
    producer: ActorResources = Field(
        default_factory=lambda: ActorResources(), description="Each Producer."
    )
    dlq: ActorResources = Field(default_factory=lambda: ActorResources(), description="The DLQ.")
    source: ActorResources = Field(
        default_factory=lambda: ActorResources(), description="Each source (files, HTTP)."
    )


class FleetConfig(BaseModel):
    """Where node pipelines run."""

    model_config = MODEL_CONFIG

    nodes: str = Field(
        default="driver",
        description="driver: one pipeline on the driver's node; all: one on every node; "
        "resource:NAME: one on every node that offers the custom resource NAME.",
    )
    reconcile_interval: PositiveDuration = Field(
        default=2.0,
        description="How often the supervisor compares the pipelines with Ray's nodes (a "
        "node that joins gets its pipeline within this, plus its start-up).",
    )
    start_timeout: PositiveDuration = Field(
        default=120.0,
        description="Longest the node pipelines may take to start (each node's actors "
        "placed and answering); past it the shipper stops with the nodes still waiting.",
    )
    resources: FleetResources = Field(
        default_factory=lambda: FleetResources(), description="Reservations per actor kind."
    )

    @field_validator("nodes")
    @classmethod
    def _selector(cls, value: str) -> str:
        if value in ("driver", "all"):
            return value
        kind, _, name = value.partition(":")
        if kind == "resource" and name:
            return value
        raise ValueError("must be driver, all, or resource:NAME (e.g. resource:log_shipper)")
