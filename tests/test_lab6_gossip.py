"""Lab 6 (gossip): an eventually consistent store graded on convergence, lost writes, resurrections, availability.

The reference (dotted version vectors, push-pull anti-entropy) passes every test;
each known-wrong store fails the test its mistake breaks; the sibling checker
judges from what clients saw, so a store whose own vectors vouch for a wrong
answer still fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gossip_reference
import gossip_wrong
import pandas as pd
import pytest

import sim
from sim.checkers.siblings import audit_siblings, read_resurrections, replaced_values
from sim.errors import ScenarioError
from sim.labs import get_lab, grade, skeleton_path
from sim.labs.core import solution_key
from sim.labs.gossip import CONVERGE_MS, Get, GetReply, Put, PutReply

LAB = get_lab("lab6")
TESTS = [t.name for t in LAB.tests]


def _test(name):
    return next(t for t in LAB.tests if t.name == name)


def test_reference_passes_every_test(tmp_path):
    report = grade("lab6", gossip_reference.GossipNode, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50] * len(TESTS)
    assert not any(tmp_path.iterdir())                      # nothing written for a pass


def test_anti_entropy_alone_converges_within_the_bound(tmp_path):
    """No push at write time: the bound holds for gossip alone, it is not fitted to the reference's pushes."""
    report = grade("lab6", gossip_reference.AntiEntropyOnly, seeds=30, out=tmp_path, tests=["converges"])
    assert report.passed, str(report)


@pytest.mark.parametrize(("variant", "test"), [
    (gossip_wrong.LastWriterWins, "no-lost-writes"),
    (gossip_wrong.ServerVersionVectors, "no-lost-writes"),
    (gossip_wrong.OverwriteOnGossip, "no-lost-writes"),
    (gossip_wrong.VolatileCounter, "no-lost-writes"),
    (gossip_wrong.NodeWideContext, "no-lost-writes"),
    (gossip_wrong.NoAntiEntropy, "converges"),
    (gossip_wrong.KeepEverything, "no-resurrection"),
    (gossip_wrong.NoDedup, "no-resurrection"),
    (gossip_wrong.MajorityAck, "available"),
])
def test_known_wrong_solutions_fail_the_test_they_break(variant, test, tmp_path):
    report = grade("lab6", variant, out=tmp_path, tests=[test], shrink_seconds=5)
    outcome = report.tests[0]
    assert not outcome.passed, str(report)
    assert outcome.error is None and outcome.evidence is not None
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0


@pytest.mark.parametrize(("variant", "passes"), [
    (gossip_wrong.LastWriterWins, ["converges", "available"]),
    (gossip_wrong.KeepEverything, ["converges", "no-lost-writes", "available"]),
    (gossip_wrong.MajorityAck, ["converges", "no-lost-writes", "no-resurrection"]),
])
def test_the_tests_tell_the_mistakes_apart(variant, passes, tmp_path):
    """Converging is not keeping writes, keeping everything is not losing nothing, and waiting for copies is safe
    but unavailable: each variant passes the tests its mistake does not touch."""
    report = grade("lab6", variant, seeds=10, out=tmp_path, tests=passes)
    assert report.passed, str(report)


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab6", skeleton_path("lab6"), seeds=2, out=tmp_path, shrink_seconds=1)
    assert not report.passed
    for t in report.tests:
        assert "NotImplementedError: TODO" in t.error
        assert "lab6_gossip.py" in t.error and "sim/runner.py" not in t.error


def test_same_seed_same_run():
    key = solution_key(LAB, gossip_reference.GossipNode)
    scenario = sim.Scenario.from_dict(_test("no-lost-writes").scenario(7, key))
    a, b = sim.run(scenario), sim.run(scenario)
    pd.testing.assert_frame_equal(a.history, b.history)
    for name in ("lab_gossip_puts", "lab_gossip_final"):
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])


def test_a_run_has_siblings_and_overwrites_to_judge():
    """The workload makes the checks bite: concurrent writes meet, clients read siblings and overwrite them."""
    key = solution_key(LAB, gossip_reference.GossipNode)
    res = sim.run(sim.Scenario.from_dict(_test("no-lost-writes").scenario(1, key)))
    reads = res.history[(res.history["op"] == "read") & (res.history["outcome"] == "ok")]
    assert sum(isinstance(v, tuple) and len(v) >= 2 for v in reads["value"]) > 10
    puts = res.tables["lab_gossip_puts"]
    assert sum(len(s) >= 2 for s in puts["seen"]) > 5           # writes that resolved siblings
    assert (puts["read_op"].isna()).sum() > 10                     # blind writes
    assert res.summary["convergence.after_quiesce"] < CONVERGE_MS


class _LyingState(gossip_reference.GossipNode):
    """Reports an empty replica state: replicas 'agree' while reads say otherwise."""

    def replica_state(self):
        return {}


def test_replica_state_must_describe_what_reads_return(tmp_path):
    report = grade("lab6", _LyingState, seeds=1, out=tmp_path, tests=["converges"], shrink_seconds=1)
    assert "replica_state() must describe what reads return" in report.tests[0].message


# -- the node API under the harness ---------------------------------------------------------------
def _harness():
    key = solution_key(LAB, gossip_reference.GossipNode)
    return sim.Harness(sim.Scenario.from_dict(_test("converges").scenario(1, key)))


def test_harness_builds_nodes_without_clients_and_a_put_is_acknowledged_and_pushed():
    h = _harness()
    sent = h.deliver("n1", Put(1, 0, 10, None), src="c1")
    assert (sent[-1].dst, sent[-1].msg) == ("c1", PutReply(1))
    assert sorted(s.dst for s in sent[:-1]) == ["n2", "n3", "n4", "n5"]
    reply = h.deliver("n1", Get(2, 0), src="c1")[0].msg
    assert isinstance(reply, GetReply) and reply.values == (10,)
    h.deliver("n1", Put(3, 0, 11, None), src="c1")                  # blind: a sibling
    both = h.deliver("n1", Get(4, 0), src="c1")[0].msg
    assert both.values == (10, 11)
    h.deliver("n1", Put(5, 0, 12, both.context), src="c1")          # based on that read: replaces both
    assert h.deliver("n1", Get(6, 0), src="c1")[0].msg.values == (12,)
    assert h.timers_of("n1")                                         # anti-entropy is scheduled


def test_reply_get_rejects_values_that_are_not_written_values():
    h = _harness()
    with pytest.raises(TypeError, match="reply_get: values must be the values clients wrote"):
        h.nodes["n1"].reply_get("c1", 1, [("n1", 1)], None)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("read_fraction", 1.5, "must be between 0 and 1"),
    ("blind_fraction", 0.8, "read_fraction + blind_fraction must be <= 1"),
    ("final_reads", 99_999, "before run.duration"),
])
def test_config_mistakes_name_the_field(field, value, message):
    data = _test("converges").scenario(1, "x.py")
    data["protocol"][field] = value
    with pytest.raises(ScenarioError, match=re.escape(message)) as err:
        sim.Scenario.from_dict(data)
    assert f"protocol.{field}" in str(err.value)


def test_cli_shows_the_lab():
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "lab", "show", "lab6"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "GossipNode (a subclass of sim.labs.gossip.GossipBase)" in proc.stdout
    for name in TESTS:
        assert name in proc.stdout


# -- the sibling checker on hand-made states --------------------------------------------------------
def _writes(*rows):
    return pd.DataFrame(rows, columns=["key", "value", "outcome", "seen"])


# a and b blind and concurrent; c read a and replaced it; d (unacknowledged) read b
WRITES = _writes((0, "a", "ok", ()), (0, "b", "ok", ()), (0, "c", "ok", ("a",)), (0, "d", "info", ("b",)))


def _problems(final, writes=WRITES):
    audit = audit_siblings(writes, final)
    return sorted(zip(audit.findings["node"], audit.findings["value"], audit.findings["problem"]))


def test_audit_accepts_siblings_and_overwrites():
    assert _problems({("n1", 0): {"b", "c"}, ("n2", 0): {"b", "c"}}) == []
    assert _problems({("n1", 0): {"c", "d"}}) == []                 # d took effect: it is there


def test_audit_finds_a_concurrent_write_dropped_at_one_replica():
    assert _problems({("n1", 0): {"b", "c"}, ("n2", 0): {"c"}}) == [("n2", "b", "lost")]


def test_audit_follows_chains_of_overwrites_and_breaks_with_them():
    chain = _writes((0, "a", "ok", ()), (0, "w", "info", ("a",)), (0, "z", "ok", ("w",)))
    assert _problems({("n1", 0): {"z"}}, chain) == []               # a -> w -> z: a was replaced in the end
    assert _problems({("n1", 0): set()}, chain) == [("n1", "a", "lost"), ("n1", "z", "lost")]


def test_audit_a_write_that_may_not_have_happened_replaces_nothing():
    unsure = _writes((0, "a", "ok", ()), (0, "w", "info", ("a",)))
    assert _problems({("n1", 0): {"a"}}, unsure) == []               # w never took effect: a stays
    assert _problems({("n1", 0): set()}, unsure) == [("n1", "a", "lost")]


def test_audit_finds_resurrected_and_invented_values():
    assert _problems({("n1", 0): {"a", "b", "c"}}) == [("n1", "a", "resurrected")]
    audit = audit_siblings(WRITES, {("n1", 0): {"a", "b", "c"}})
    assert audit.resurrected["because"].tolist() == ["c"]
    assert _problems({("n1", 0): {"b", "c", "x"}}) == [("n1", "x", "invented")]


def test_audit_survives_malformed_cycles():
    cycle = _writes((0, "a", "ok", ("b",)), (0, "b", "ok", ("a",)))
    assert _problems({("n1", 0): set()}, cycle) == [("n1", "a", "lost"), ("n1", "b", "lost")]
    assert replaced_values(cycle)["a"] >= {"b"}


def _reads(*rows):
    return pd.DataFrame(rows, columns=["op_id", "node", "key", "invoke", "complete", "values"])


def test_read_resurrection_needs_an_earlier_read_at_the_same_node():
    chain = _writes((0, "a", "ok", ()), (0, "b", "ok", ("a",)), (0, "c", "ok", ("b",)))
    back = read_resurrections(_reads((1, "n1", 0, 0.0, 5.0, {"c"}), (2, "n1", 0, 10.0, 12.0, {"a", "c"})), chain)
    assert back[["node", "value", "read_op", "earlier_op", "replaced_by"]].values.tolist() == [["n1", "a", 2, 1, "c"]]
    overlapping = _reads((1, "n1", 0, 0.0, 15.0, {"c"}), (2, "n1", 0, 10.0, 12.0, {"a"}))
    elsewhere = _reads((1, "n1", 0, 0.0, 5.0, {"c"}), (2, "n2", 0, 10.0, 12.0, {"a"}))
    forward = _reads((1, "n1", 0, 0.0, 5.0, {"a"}), (2, "n1", 0, 10.0, 12.0, {"c"}))
    for reads in (overlapping, elsewhere, forward):
        assert read_resurrections(reads, chain).empty
