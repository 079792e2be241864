"""Lab 2 (leader-based replication): the reference passes, known-wrong logs fail the test they break.

Also the lab's own pieces: the base class's hooks (``become_leader``, ``apply``),
the ``@leader`` target the nemesis aims at, and each checker on hand-made bad input.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import leader_reference
import leader_wrong
import pandas as pd
import pytest

from sim.harness import Harness
from sim.kernel.messages import ClientRequest
from sim.labs import get_lab, grade, skeleton_path
from sim.labs.core import solution_key
from sim.labs.leader import (
    APPLIED_COLUMNS,
    LEADER_COLUMNS,
    MIN_AVAILABILITY,
    NODES,
    RECOVERY_MS,
    TIMEOUT,
    check_election_safety,
    check_leader_failover,
    check_no_lost_writes,
    check_state_machine_safety,
)
from sim.runner import build_world
from sim.scenario import Scenario

LAB = get_lab("lab2")


def _failed(report) -> dict[str, int]:
    return {t.test: t.seed for t in report.tests if not t.passed}


# -- grading the reference and the known-wrong solutions ------------------------------------------
def test_reference_passes_every_test(tmp_path):
    report = grade("lab2", leader_reference.LeaderNode, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50, 50, 50, 50]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("variant", "test"), [
    (leader_wrong.TermInMemory, "election-safety"),
    (leader_wrong.CountsVoteMessages, "election-safety"),
    (leader_wrong.VotesWithoutLogCheck, "state-machine-safety"),
    (leader_wrong.VotesWithoutLogCheck, "no-lost-writes"),
    (leader_wrong.AcksOnAppend, "no-lost-writes"),
    (leader_wrong.LocalReads, "no-lost-writes"),
    (leader_wrong.FixedElectionTimeout, "leader-failover"),
])
def test_known_wrong_solutions_fail_the_test_they_break(variant, test, tmp_path):
    report = grade("lab2", variant, out=tmp_path, tests=[test], shrink_seconds=3)
    assert _failed(report).keys() == {test}, str(report)
    outcome = report.tests[0]
    assert outcome.error is None and outcome.evidence is not None
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0


def test_acks_on_append_keeps_elections_and_logs_safe(tmp_path):
    """Acknowledging early loses writes, yet every node still applies the same log: the tests tell them apart."""
    report = grade("lab2", leader_wrong.AcksOnAppend, seeds=10, out=tmp_path,
                   tests=["election-safety", "state-machine-safety", "leader-failover"])
    assert report.passed, str(report)


def test_a_cluster_that_rarely_elects_is_safe_and_failover_catches_it(tmp_path):
    """Fixed timeouts split the vote until a crash puts one node out of step: never unsafe, seldom live."""
    report = grade("lab2", leader_wrong.FixedElectionTimeout, seeds=10, out=tmp_path,
                   tests=["election-safety", "state-machine-safety"])
    assert report.passed, str(report)


def test_grading_is_deterministic(tmp_path):
    a = grade("lab2", leader_wrong.TermInMemory, seeds=5, out=tmp_path / "a", tests=["election-safety"])
    b = grade("lab2", leader_wrong.TermInMemory, seeds=5, out=tmp_path / "b", tests=["election-safety"])
    assert not a.passed and a.tests[0].shrunk
    assert [(t.test, t.passed, t.seed, t.message, t.faults) for t in a.tests] == \
        [(t.test, t.passed, t.seed, t.message, t.faults) for t in b.tests]


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab2", skeleton_path("lab2"), seeds=2, out=tmp_path)
    assert report.score == "0/4"
    for t in report.tests:
        assert "NotImplementedError: TODO" in t.error
        assert "lab2_leader.py" in t.error and "sim/runner.py" not in t.error


# -- the base class ---------------------------------------------------------------------------------
def _scenario(**run) -> dict:
    scenario = LAB.tests[0].scenario(1, solution_key(LAB, leader_reference.LeaderNode))
    scenario["faults"] = {"schedule": []}
    scenario["run"] = {**scenario["run"], **run}
    return scenario


def test_apply_runs_the_operations_in_order_and_ignores_a_repeated_op_id():
    h = Harness(_scenario())
    n1 = h.nodes["n1"]
    assert n1.apply(1, 1, ClientRequest(7, "write", 0, 70)) is None
    assert n1.apply(2, 1, ClientRequest(8, "read", 0)) == 70
    assert n1.apply(3, 2, None) is None                            # a no-op
    assert n1.apply(4, 2, ClientRequest(7, "write", 0, 70)) is None  # op 7 again: no effect
    assert n1.apply(5, 2, ClientRequest(8, "read", 0)) == 70         # the first result
    rows = h.events["applied"].dicts()
    assert [(r["index"], r["op_id"], r["op"]) for r in rows] == [(1, 7, "write"), (2, 8, "read"), (3, 0, "noop"),
                                                                 (4, 7, "write"), (5, 8, "read")]


def test_apply_out_of_order_is_an_error_naming_the_indices_and_a_restart_starts_at_one():
    h = Harness(_scenario())
    n1 = h.nodes["n1"]
    n1.apply(1, 1, ClientRequest(7, "write", 0, 70))
    with pytest.raises(ValueError, match=r"apply\(index=3\) but the last index applied since it started is 1"):
        n1.apply(3, 1, ClientRequest(8, "write", 0, 80))
    with pytest.raises(TypeError, match="must be the client's ClientRequest"):
        n1.apply(2, 1, ("write", 0, 80))
    h.crash("n1")
    h.recover("n1")
    assert n1.apply(1, 1, ClientRequest(9, "read", 0)) is None      # empty again after the restart
    assert h.events["applied"].dicts()[-1]["life"] == 1


def test_leader_target_is_the_live_node_that_last_won_the_highest_term():
    scenario = Scenario.from_dict(_scenario())
    world = build_world(scenario)
    world.start()
    world.env.run(until=1000.0)
    leader = world.leader()
    assert leader is not None and world.nodes[leader].role == "leader"
    world.nodes[leader].crash()
    assert world.leader() is None                                   # a crash ends its leadership
    world.env.run(until=1600.0)
    assert world.leader() not in (None, leader)
    terms = [row[2] for row in world.events["leaders"]]
    assert terms == sorted(terms) and len(set(terms)) == len(terms)


# -- the checkers, on hand-made runs -----------------------------------------------------------------
def _history(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (op_id, node, op, key, value, invoke, complete, outcome[, side, node_up])."""
    out = []
    for r in rows:
        op_id, node, op, key, value, invoke, complete, outcome = r[:8]
        side, up = (r[8], r[9]) if len(r) > 8 else ("none", True)
        out.append({"op_id": op_id, "client": f"c{NODES.index(node)}", "op": op, "key": key, "value": value,
                    "invoke": invoke, "complete": complete, "outcome": outcome, "node": node, "side": side,
                    "node_up": up, "error": None})
    return pd.DataFrame(out)


def _result(history=(), leaders=(), applied=(), faults=()) -> SimpleNamespace:
    return SimpleNamespace(
        history=_history(list(history)),
        tables={"leaders": pd.DataFrame(list(leaders), columns=list(LEADER_COLUMNS)),
                "applied": pd.DataFrame(list(applied), columns=list(APPLIED_COLUMNS))},
        faults=pd.DataFrame(list(faults), columns=["kind", "start", "end", "detail"]),
        scenario=SimpleNamespace(nodes=NODES))


def _applied_everywhere(log: list[tuple[int, int, str, int, int | None]], nodes=NODES, time=100.0):
    """Apply rows for ``log`` = [(term, op_id, op, key, value)] at index 1.. on every node."""
    return [(time + i, n, 0, i, term, op_id, op, key, value)
            for n in nodes for i, (term, op_id, op, key, value) in enumerate(log, start=1)]


def test_election_safety_rejects_two_leaders_in_one_term():
    good = _result(leaders=[(10.0, "n1", 1), (300.0, "n2", 2), (900.0, "n1", 3), (950.0, "n1", 3)])
    assert check_election_safety(good).ok
    bad = _result(leaders=[(10.0, "n1", 1), (300.0, "n2", 2), (1200.0, "n4", 2)])
    verdict = check_election_safety(bad)
    assert not verdict.ok and "two leaders in term 2: n2 at 300.0 ms and n4 at 1200.0 ms" in verdict.message
    assert verdict.window[0] < 1200.0 < verdict.window[1] and list(verdict.evidence["node"]) == ["n2", "n4"]


def test_election_safety_requires_the_hook_to_be_called_when_operations_succeed():
    silent = _result(history=[(1, "n1", "write", 0, 1, 0.0, 9.0, "ok")])
    verdict = check_election_safety(silent)
    assert not verdict.ok and "no node called self.become_leader" in verdict.message


def test_state_machine_safety_rejects_two_operations_at_one_index():
    log = [(1, 1, "write", 0, 1), (1, 2, "read", 0, None)]
    assert check_state_machine_safety(_result(applied=_applied_everywhere(log))).ok
    bad = _applied_everywhere(log) + [(500.0, "n3", 1, 2, 2, 5, "write", 0, 5)]    # n3, after a restart
    verdict = check_state_machine_safety(_result(applied=bad))
    assert not verdict.ok and "two operations applied at index 2" in verdict.message
    assert "n3 applied op 5 (write of term 2)" in verdict.message and verdict.ops == (2, 5)


def test_no_lost_writes_rejects_a_write_a_majority_does_not_hold():
    history = [(1, "n1", "write", 0, 1, 0.0, 10.0, "ok"), (2, "n2", "write", 0, 2, 20.0, 30.0, "ok")]
    log = [(1, 1, "write", 0, 1), (1, 2, "write", 0, 2)]
    assert check_no_lost_writes(_result(history, applied=_applied_everywhere(log))).ok
    short = _applied_everywhere(log[:1]) + [r for r in _applied_everywhere(log, nodes=("n1", "n2")) if r[3] == 2]
    verdict = check_no_lost_writes(_result(history, applied=short))
    assert not verdict.ok and "op 2 (write 2 to key 0" in verdict.message and "by 2 of 5" in verdict.message


def test_no_lost_writes_counts_only_what_a_node_applied_since_its_last_restart():
    history = [(1, "n1", "write", 0, 1, 0.0, 10.0, "ok")]
    log = [(1, 1, "write", 0, 1)]
    earlier_lives = [(50.0, n, 0, 1, 1, 1, "write", 0, 1) for n in NODES]
    later = [(900.0, n, 1, 1, 2, 9, "noop", None, None) for n in ("n1", "n2", "n3")]   # restarted, log replaced
    verdict = check_no_lost_writes(_result(history, applied=earlier_lives + later))
    assert not verdict.ok and "by 2 of 5" in verdict.message
    assert check_no_lost_writes(_result(history, applied=_applied_everywhere(log))).ok


def test_no_lost_writes_rejects_writes_applied_out_of_acknowledgement_order():
    history = [(1, "n1", "write", 0, 1, 0.0, 10.0, "ok"), (2, "n2", "write", 0, 2, 20.0, 30.0, "ok")]
    log = [(1, 2, "write", 0, 2), (1, 1, "write", 0, 1)]          # the later write first
    verdict = check_no_lost_writes(_result(history, applied=_applied_everywhere(log)))
    assert not verdict.ok and "write 2 to key 0 was applied before write 1" in verdict.message


def test_no_lost_writes_rejects_a_stale_read():
    history = [(1, "n1", "write", 0, 1, 0.0, 10.0, "ok"), (2, "n2", "read", 0, None, 20.0, 30.0, "ok")]
    log = [(1, 1, "write", 0, 1)]
    verdict = check_no_lost_writes(_result(history, applied=_applied_everywhere(log)))
    assert not verdict.ok and "not linearizable on key 0" in verdict.message


def _failover(outcomes: list[str], leader_at: float = 100.0) -> SimpleNamespace:
    start, end = 500.0, 3200.0
    t0 = start + RECOVERY_MS
    history = [(i + 1, NODES[1 + i % 4], "read", 0, None, t0 + 10.0 * i, t0 + 10.0 * i + 5.0, out, "majority", True)
               for i, out in enumerate(outcomes)]
    history.append((99, "n1", "read", 0, None, t0, t0 + TIMEOUT, "info", "minority", True))   # the cut-off side
    return _result(history, leaders=[(leader_at, "n1", 1)],
                   faults=[("isolate", start, end, "node=@leader")])


def test_leader_failover_needs_the_other_nodes_to_answer():
    n = 40
    allowed = n - math.ceil(n * MIN_AVAILABILITY)
    assert check_leader_failover(_failover(["ok"] * (n - allowed) + ["info"] * allowed)).ok
    verdict = check_leader_failover(_failover(["ok"] * (n - allowed - 1) + ["fail"] * (allowed + 1)))
    assert not verdict.ok and f"of the {n} operations at the other nodes" in verdict.message


def test_leader_failover_fails_when_no_leader_was_there_to_cut_off():
    verdict = check_leader_failover(_failover(["ok"] * 10, leader_at=800.0))
    assert not verdict.ok and "no node had called self.become_leader(term) by 500 ms" in verdict.message
