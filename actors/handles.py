"""Typed views of the actor handles: what each actor answers, for mypy.

Ray's handles are untyped (every ``h.method.remote(...)`` is ``Any``). These
Protocols say which remote methods each actor has, with their arguments and results,
so a call with the wrong arguments fails type checking instead of at run time in
another process. :class:`actors.wiring.Wiring` hands out handles typed this way.

``Ref[T]`` (Ray's ``ObjectRef``) is what ``.remote()`` returns: awaitable in an async
actor, or passed to ``ray.get``/``ray.wait`` in the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from ray import ObjectRef

if TYPE_CHECKING:
    from shipper.dlq import DlqStats
    from shipper.dlq.reprocess import ReplaySummary
    from shipper.kafka.client import SendResult
    from shipper.outcomes import EntryFailure, SegmentOutcome, SubmissionResult
    from shipper.telemetry import Snapshot

    from .payload import Stored

__all__ = [
    "BatcherHandle",
    "DlqHandle",
    "Order",
    "ProducerHandle",
    "Ref",
    "Remote",
    "RouterHandle",
    "StopHandle",
    "SupervisorHandle",
    "TelemetryHandle",
]

T = TypeVar("T")
P = ParamSpec("P")

#: A sender's call number: (sender id, sequence), see ``shipper.ordering``.
Order = tuple[str, int]


#: What ``.remote()`` returns: Ray's ``ObjectRef`` of a ``T``.
Ref = ObjectRef


class Remote(Protocol, Generic[P, T]):
    """A remote method: ``.remote(...)`` starts the call and returns its ``Ref``."""

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[T]: ...


Values = Any  # a list of bytes, a shipper.packed.Packed, or a Stored handle
Keys = list[bytes | None] | None
HeaderLists = Any  # a shipper.headers.HeaderTable, or each message's list of pairs


class StopHandle(Protocol):
    """The stop protocol every node actor speaks (see :mod:`actors.stopping`)."""

    stop_intake: Remote[[], None]
    drain: Remote[[float], int]
    park: Remote[[], int]
    close: Remote[[], dict[str, Any]]


class RouterHandle(StopHandle, Protocol):
    submit_lines: Remote[
        [bytes | list[bytes] | Stored, float, int, Order | None, dict[str, str] | None],
        SubmissionResult,
    ]
    submit_objects: Remote[[list[Any], float, Order | None], SubmissionResult]
    flush: Remote[[Order | None], int]
    batcher_stats: Remote[[], list[dict[str, Any]]]
    stats: Remote[[], dict[str, Any]]


class BatcherHandle(StopHandle, Protocol):
    enqueue: Remote[
        [Values, Keys, list[str] | None, float, Order | None, HeaderLists], SegmentOutcome
    ]
    replay: Remote[[Values, Keys, HeaderLists], SegmentOutcome]
    flush: Remote[[Order | None], int]
    set_breaker_state: Remote[[int], None]
    stats: Remote[[], dict[str, Any]]
    start: Remote[[], dict[str, Any]]


class ProducerHandle(StopHandle, Protocol):
    produce: Remote[[str, list[Any], Order | None, bool], list[SendResult]]
    partition_count: Remote[[str], int]
    health: Remote[[], dict[str, Any]]


class DlqHandle(StopHandle, Protocol):
    put: Remote[[list[EntryFailure]], int]
    kick: Remote[[], None]
    reprocess: Remote[..., ReplaySummary]
    count: Remote[[], int]
    has_room: Remote[[], bool]
    stats: Remote[[], DlqStats]


class SupervisorHandle(Protocol):
    register: Remote[[str, str], int]
    report: Remote[[str, bool], None]
    trip: Remote[[str, str], None]
    reachable: Remote[[str], None]
    acquire_probe: Remote[[str], bool]
    started: Remote[[str, str, str], None]
    states: Remote[[], dict[str, dict[str, Any]]]
    history: Remote[[], list[tuple[float, str, int, int]]]
    restart_counts: Remote[[], dict[str, int]]
    start_fleet: Remote[[], dict[str, dict[str, Any]]]
    start_progress: Remote[[], dict[str, Any]]
    fleet: Remote[[], dict[str, dict[str, Any]]]
    lost_nodes: Remote[[], list[str]]
    start_sources: Remote[[dict[str, str] | None], dict[str, dict[str, str]]]
    stop_sources: Remote[[], None]


class TelemetryHandle(Protocol):
    push: Remote[[Snapshot], bool]
    report_health: Remote[[str, int | None, float | None], None]
    report_node: Remote[[str, bool], None]
    url: Remote[[], str]
