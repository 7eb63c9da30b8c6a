from shipper.stopping import ROLES, STEPS, StopRecord


def test_steps_and_roles_run_entrances_first() -> None:
    assert STEPS == ("stop_intake", "drain", "park", "close")
    assert ROLES.index("source") < ROLES.index("router") < ROLES.index("batcher")
    assert ROLES.index("batcher") < ROLES.index("producer") < ROLES.index("dlq")


def test_totals_sum_the_answers_per_step_and_role() -> None:
    r = StopRecord()
    r.answered("drain", "batcher", "batcher:n1:logs", 5)
    r.answered("drain", "batcher", "batcher:n1:errors", 2)
    r.answered("drain", "source", "source:files:n1", 1)
    r.answered("drain", "router", "router:n1", None)
    assert r.total("drain") == 8
    assert r.total("drain", "batcher") == 7
    assert r.total("park") == 0
    assert not r.settled("drain")


def test_an_actor_that_does_not_answer_is_a_problem_never_a_zero() -> None:
    r = StopRecord()
    r.answered("drain", "batcher", "batcher:n1:logs", 0)
    assert r.settled("drain")
    line = r.failed("drain", "source:files:n1", "no answer within 10s")
    assert line == "source:files:n1 did not answer drain: no answer within 10s"
    assert r.problems == [line]
    # Everything that answered has nothing left, yet the step is not settled.
    assert r.total("drain") == 0 and not r.settled("drain")
    assert r.settled("park")


def test_closed_answers_by_role() -> None:
    r = StopRecord()
    r.answered("close", "source", "source:http:n2", {"run": 2})
    r.answered("close", "source", "source:files:n1", {"run": 1})
    r.answered("close", "dlq", "dlq:n1", {"counts": {}})
    assert r.closed("source") == [{"run": 1}, {"run": 2}]
    assert r.closed("router") == []
