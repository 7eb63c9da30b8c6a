"""The fleet's decisions without Ray: which nodes get a pipeline, which gets work."""

from __future__ import annotations

from typing import Any

import pytest

from shipper.config import load_config
from shipper.errors import ConfigError
from shipper.fleet import FleetPlan, FleetReconciler, NodeInfo, Spreader, node_path


def raw(node_id: str, alive: bool = True, label: str | None = None, **res: float) -> dict[str, Any]:
    labels = {"shipper-node": label} if label else {}
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerHostname": "host-1",
        "Resources": {"CPU": 2.0, **res},
        "Labels": labels,
    }


def test_a_node_is_named_by_its_label_else_its_hostname() -> None:
    assert NodeInfo.from_ray(raw("a" * 56, label="n1")).key == "n1"
    assert NodeInfo.from_ray(raw("a" * 56)).key == "host-1"
    assert NodeInfo.from_ray(raw("a" * 56, label="we/ird name")).key == "we_ird_name"
    assert node_path("/var/lib/shipper/{node}/dlq", "n1") == "/var/lib/shipper/n1/dlq"


def test_two_nodes_with_one_hostname_and_no_label_get_distinct_keys() -> None:
    plan = FleetPlan("all", "a" * 56)
    todo = plan.reconcile([NodeInfo.from_ray(raw("a" * 56)), NodeInfo.from_ray(raw("b" * 56))])
    keys = [n.key for n in todo.start]
    assert len(set(keys)) == 2 and all(k.startswith("host-1-") for k in keys)


@pytest.mark.parametrize(
    ("selector", "wanted"),
    [("driver", ["n1"]), ("all", ["n1", "n2", "n3"]), ("resource:log_shipper", ["n2", "n3"])],
)
def test_the_selector_picks_the_nodes(selector: str, wanted: list[str]) -> None:
    nodes = [
        NodeInfo.from_ray(raw("1" * 56, label="n1")),
        NodeInfo.from_ray(raw("2" * 56, label="n2", log_shipper=1)),
        NodeInfo.from_ray(raw("3" * 56, label="n3", log_shipper=1)),
    ]
    plan = FleetPlan(selector, "1" * 56)
    assert sorted(n.key for n in plan.reconcile(nodes).start) == wanted


def test_lost_nodes_are_reported_once_and_come_back_on_their_key() -> None:
    plan = FleetPlan("all", "1" * 56)
    a, b = (
        NodeInfo.from_ray(raw("1" * 56, label="n1")),
        NodeInfo.from_ray(raw("2" * 56, label="n2")),
    )
    for n in plan.reconcile([a, b]).start:
        plan.started(n)
    assert plan.reconcile([a, b]).start == []  # nothing to do
    gone = NodeInfo.from_ray(raw("2" * 56, alive=False, label="n2"))
    todo = plan.reconcile([a, gone])
    assert (todo.lost, todo.start) == (["n2"], [])
    assert plan.reconcile([a, gone]).lost == []  # once
    assert plan.up() == ["n1"]
    again = NodeInfo.from_ray(raw("9" * 56, label="n2"))  # same key, a new Ray node
    todo = plan.reconcile([a, gone, again])
    assert todo.back == ["n2"] and [n.node_id for n in todo.start] == ["9" * 56]
    plan.started(todo.start[0])
    assert plan.up() == ["n1", "n2"] and plan.lost == set()


def test_a_running_node_keeps_its_key_and_a_namesake_waits_for_it() -> None:
    plan = FleetPlan("all", "1" * 56)
    old = NodeInfo.from_ray(raw("1" * 56, label="n1"))
    for n in plan.reconcile([old]).start:
        plan.started(n)
    # The same host back under a new Ray node before Ray has declared the old dead
    # (or a second host with the same name): no second pipeline, no renamed first.
    new = NodeInfo.from_ray(raw("2" * 56, label="n1"))
    todo = plan.reconcile([old, new])
    assert (todo.start, [n.node_id for n in todo.held], todo.lost) == ([], ["2" * 56], [])
    assert plan.up() == ["n1"] and plan.running == {"n1": "1" * 56}
    # Once the old node is dead, the newcomer takes the name (and its paths) over.
    dead = NodeInfo.from_ray(raw("1" * 56, alive=False, label="n1"))
    todo = plan.reconcile([dead, new])
    assert todo.lost == ["n1"] and todo.back == ["n1"]
    assert [(n.key, n.node_id) for n in todo.start] == [("n1", "2" * 56)]


def test_nodes_that_started_with_one_name_keep_their_keys_when_one_leaves() -> None:
    plan = FleetPlan("all", "a" * 56)
    a, b = NodeInfo.from_ray(raw("a" * 56)), NodeInfo.from_ray(raw("b" * 56))
    for n in plan.reconcile([a, b]).start:
        plan.started(n)
    keys = dict(plan.running)
    gone = NodeInfo.from_ray(raw("b" * 56, alive=False))
    todo = plan.reconcile([a, gone])
    assert todo.start == [] and len(todo.lost) == 1
    assert {k: v for k, v in plan.running.items()} == keys  # nobody renamed


def test_work_goes_to_the_pipeline_with_the_fewest_entries_in_flight() -> None:
    s = Spreader()
    s.set_pipelines(["a", "b", "c"])
    assert s.pick() == "a"
    s.add("a", 100)
    s.add("b", 50)
    assert s.pick() == "c"
    s.add("c", 80)
    assert s.pick() == "b"
    assert s.pick(avoid=["b"]) == "c"
    assert s.pick(avoid=["a", "b", "c"]) == "b"  # nothing else left: still one
    s.done("a", 100)
    assert s.pick() == "a"
    s.set_pipelines(["b"])
    assert s.pick() == "b"
    s.set_pipelines([])
    assert s.pick() is None


def test_an_intake_keeps_work_on_its_own_node_until_another_has_less_in_flight() -> None:
    s = Spreader()
    s.set_pipelines(["a", "b", "c"])
    assert s.pick(prefer="b") == "b"  # a tie: its own node
    s.add("b", 10)
    assert s.pick(prefer="b") == "a"  # its own is busier: the least loaded
    s.add("a", 10)
    s.add("c", 10)
    assert s.pick(prefer="b") == "b"


def test_the_fleet_section_checks_its_selector() -> None:
    base: dict[str, Any] = {"sinks": {"kafka": {"enabled": True, "brokers": ["a:1"], "topic": "t"}}}
    cfg = load_config({**base, "fleet": {"nodes": "resource:log_shipper"}})
    assert cfg.fleet.nodes == "resource:log_shipper"
    assert cfg.fleet.resources.batcher.num_cpus == 0
    with pytest.raises(ConfigError, match=r"fleet\.nodes"):
        load_config({**base, "fleet": {"nodes": "some"}})


def test_a_slow_start_is_one_line_with_the_nodes_still_waiting_and_why_one_failed() -> None:
    from shipper.fleet import start_line

    line = start_line({"running": ["n1", "n2"], "starting": ["n3"], "errors": {}}, 20.4)
    assert line == "started 2 of 3 node pipelines in 20 s; waiting for node n3"
    line = start_line({"running": [], "starting": ["a", "b"], "errors": {"c": "TimeoutError"}}, 61)
    assert line == (
        "started 0 of 2 node pipelines in 61 s; waiting for node a, b (c: TimeoutError)"
    )


def test_the_reconciler_books_starts_failures_losses_and_a_held_node_once() -> None:
    book = FleetReconciler(FleetPlan("all", "1" * 56))
    a = NodeInfo.from_ray(raw("1" * 56, label="n1"))
    b = NodeInfo.from_ray(raw("2" * 56, label="n2"))
    todo = book.round([a, b])
    assert [n.key for n in todo.start] == ["n1", "n2"]
    assert book.progress() == {"running": [], "starting": ["n1", "n2"], "errors": {}}
    book.started(a, {"node_id": a.node_id})
    book.failed("n2", "no room for the actors")
    assert book.progress() == {
        "running": ["n1"],
        "starting": [],
        "errors": {"n2": "no room for the actors"},
    }
    # The next round starts n2 again; this time it runs, and its error is gone.
    todo = book.round([a, b])
    assert [n.key for n in todo.start] == ["n2"]
    book.started(b, {"node_id": b.node_id})
    assert book.progress()["errors"] == {} and book.counts() == (2, 0)
    book.set_sources({"n1": {"files": "/var/log/*.log"}, "n9": {"files": "x"}})
    assert book.pipelines["n1"]["sources"] == {"files": "/var/log/*.log"}
    assert "n9" not in book.pipelines
    # A namesake of a running node is reported once, not every round.
    twin = NodeInfo.from_ray(raw("3" * 56, label="n1"))
    assert [n.node_id for n in book.round([a, b, twin]).held] == ["3" * 56]
    assert book.round([a, b, twin]).held == []
    # A lost node leaves the pipelines.
    gone = NodeInfo.from_ray(raw("2" * 56, alive=False, label="n2"))
    assert book.round([a, gone]).lost == ["n2"]
    assert sorted(book.pipelines) == ["n1"] and book.counts() == (1, 1)


def test_a_restarted_supervisor_takes_over_what_the_keeper_holds() -> None:
    book = FleetReconciler(FleetPlan("all", "1" * 56))
    book.held_by_keeper({"n1": {"node_id": "1" * 56, "router": "router:n1", "sources": {}}})
    assert book.progress()["running"] == ["n1"]
    # Ray's nodes match what runs: nothing to start.
    assert book.round([NodeInfo.from_ray(raw("1" * 56, label="n1"))]).start == []
