"""``shipper status``: what a running shipper's fleet is doing, per node.

Joins the Ray cluster (``--address``, else ``RAY_ADDRESS``, else the local one),
finds the shippers running there (each is a Ray namespace with a ``supervisor``
actor) and prints, per node: the pipeline's actors, queue use per topic, the breaker
state (and what opened it), the DLQ's depth, what the sources took (in, delivered, to
the DLQ by reason, failed) and the entries/s delivered since the last look. ``--watch N``
prints it again every N seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any

__all__ = ["add_status_arguments", "find_shippers", "running_shippers", "status_command"]

from . import names

_STATES = {0: "closed", 1: "OPEN", 2: "half-open"}


def add_status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else auto)")
    p.add_argument("--namespace", help="the shipper to show (default: every one found)")
    p.add_argument(
        "--watch", type=float, metavar="SECONDS", help="print again every SECONDS until Ctrl-C"
    )


def running_shippers(namespace: str | None) -> list[str]:
    import ray

    found = sorted(
        {
            a["namespace"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"] == names.SUPERVISOR and a["namespace"].startswith("shipper-")
        }
    )
    return [namespace] if namespace else found


def snapshot(namespace: str) -> dict[str, Any]:
    """Everything ``status`` prints for one shipper, as plain data."""
    import ray

    def get(ref: Any) -> Any:
        return ray.get(ref, timeout=30)

    sup = ray.get_actor(names.SUPERVISOR, namespace=namespace)
    fleet: dict[str, dict[str, Any]] = get(sup.fleet.remote())
    lost: list[str] = get(sup.lost_nodes.remote())
    states: dict[str, dict[str, Any]] = get(sup.states.remote())
    found = sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    )
    nodes: dict[str, Any] = {}
    for key in fleet:
        mine = names.of_node(found, key)
        row: dict[str, Any] = {"actors": mine, "topics": [], "dlq": None}
        try:
            router = ray.get_actor(names.router(key), namespace=namespace)
            row["topics"] = get(router.batcher_stats.remote())
        except Exception as exc:
            row["error"] = str(exc).splitlines()[-1][:200]
        row["sources"] = {}
        for kind in ("files", "http"):
            if names.source(kind, key) in found:
                try:
                    src = ray.get_actor(names.source(kind, key), namespace=namespace)
                    row["sources"][kind] = get(src.run_stats.remote())
                except Exception:
                    continue
        if names.dlq(key) in found:
            try:
                dlq = ray.get_actor(names.dlq(key), namespace=namespace)
                row["dlq"] = get(dlq.count.remote())
            except Exception:
                row["dlq"] = None
        nodes[key] = row
    return {"namespace": namespace, "nodes": nodes, "lost": lost, "breakers": states,
            "at": time.monotonic()}  # fmt: skip


def _kind(name: str) -> str:
    parsed = names.parse(name)
    if parsed is None:
        return name
    # "file source", "http source": the kind of source, not the actor's name.
    return f"{parsed.detail} source" if parsed.role == "source" else parsed.role


def render(snap: dict[str, Any], before: dict[str, Any] | None) -> str:
    lines = [f"shipper {snap['namespace']}"]
    for bs, b in sorted(snap["breakers"].items()):
        why = f": {b['why']}" if b.get("why") else ""
        retry = f", next probe in {b['retry_in']:.0f} s" if b["state"] == 1 else ""
        lines.append(f"  breaker {bs}: {_STATES.get(b['state'], b['state'])}{why}"
                     f" (opened {b['opens_total']} times{retry})")  # fmt: skip
    for key, row in sorted(snap["nodes"].items()):
        delivered = sum(t.get("delivered", 0) for t in row["topics"])
        rate = ""
        if before is not None and key in before["nodes"]:
            was = sum(t.get("delivered", 0) for t in before["nodes"][key]["topics"])
            dt = snap["at"] - before["at"]
            if dt > 0:
                rate = f", {max(0, delivered - was) / dt:,.0f} entries/s"
        dlq = "off" if row["dlq"] is None else f"{row['dlq']:,}"
        lines.append(f"  node {key}: {len(row['actors'])} actors, DLQ {dlq}, "
                     f"{delivered:,} delivered{rate}")  # fmt: skip
        kinds = sorted({_kind(n) for n in row["actors"]})
        lines.append(f"    actors: {', '.join(kinds)}")
        for kind, run in sorted(row.get("sources", {}).items()):
            lines.append(f"    from {kind}: {run.brief()}")
        for t in row["topics"]:
            lines.append(
                f"    {t['topic']:<32} queue {t['queued']:>8,} / {t['capacity']:,} "
                f"({t['utilization']:.0%})  breaker {_STATES.get(t['breaker_state'], '?')}"
            )
        if "error" in row:
            lines.append(f"    (could not ask its Router: {row['error']})")
    for key in snap["lost"]:
        lines.append(f"  node {key}: LOST (its pipeline restarts when it comes back)")
    return "\n".join(lines)


def find_shippers(args: argparse.Namespace, command: str) -> list[str] | int:
    """Join the cluster of ``--address`` (else ``RAY_ADDRESS``, else the local one) and
    list the shippers running there; or the exit code after saying why not."""
    from actors import local_ray

    address = args.address or os.environ.get("RAY_ADDRESS") or "auto"
    local_ray.prepare(address)
    import ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:
        print(
            f"shipper {command}: cannot join the Ray cluster at {address}: {exc}", file=sys.stderr
        )
        return 2
    found = running_shippers(args.namespace)
    if not found:
        print(f"shipper {command}: no shipper runs on this cluster", file=sys.stderr)
        return 1
    return found


def status_command(args: argparse.Namespace) -> int:
    shippers = find_shippers(args, "status")
    if isinstance(shippers, int):
        return shippers
    before: dict[str, dict[str, Any]] = {}
    try:
        while True:
            for ns in shippers:
                snap = snapshot(ns)
                print(render(snap, before.get(ns)), flush=True)
                before[ns] = snap
            if not args.watch:
                return 0
            time.sleep(args.watch)
            print()
    except KeyboardInterrupt:
        return 0
