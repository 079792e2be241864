"""Three-phase commit: counts, non-blocking termination under crashes, split decisions under partitions."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.scenario import Scenario

# One closed-loop client whose only transaction starts at t=100 and touches n2, n3, n4;
# 1 ms links and forced writes: can-commits arrive at 102, yes votes leave at 103 and
# arrive at 104, pre-commits leave at 104, are durable at 106, acks arrive at 107, the
# coordinator's commit record is durable and the do-commits leave at 108.
TIMING = {"decision_timeout": 60, "retry_interval": 20, "vote_timeout": 25}


def one_txn(faults=()):
    return Scenario.from_dict({
        "cluster": {"count": 4},
        "workload": {"clients": 1, "mode": "closed", "think_time": 100, "target": "fixed", "target_node": "n1",
                     "timeout": 5000},
        "protocol": {"name": "three_phase_commit", "min_participants": 3, **TIMING},
        "faults": {"schedule": list(faults)},
        "run": {"duration": 150},
    })


def busy(faults=None, protocol="three_phase_commit", duration="4s", latency=1.0, **kw):
    return Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": latency},
        "workload": {"clients": 4, "rate": 25, "target": "fixed", "target_node": "n1", "keys": 20, "timeout": 2000},
        "protocol": {"name": protocol, **kw},
        "faults": faults or {},
        "run": {"duration": duration},
    })


def test_no_faults_exact_message_and_log_counts():
    """No faults: commit iff all vote yes; 5n messages, 3n+1 forced writes per commit; 3n-m and n-m per abort."""
    r = sim.run(busy(abort_probability=0.15), seed=3, keep_world=True)
    t = r.tables["transactions"]
    committed = t["outcome"] == "committed"
    n, m = t["n"], t["no_votes"]
    assert len(t) > 300 and committed.any() and (~committed).any() and r.verdicts["atomicity"].ok
    assert (committed == (m == 0)).all()
    assert (t["messages"] == np.where(committed, 5 * n, 3 * n - m)).all()
    assert (t["forced_writes"] == np.where(committed, 3 * n + 1, n - m)).all()
    sent = r.world.network.sent_by_type
    assert sent["CanCommit"] == sent["Vote"] == n.sum()
    assert sent["PreCommit"] == sent["PreCommitAck"] == sent["DoCommit"] == n[committed].sum()
    assert "StateRequest" not in sent and not t["blocked"].any()


@pytest.mark.parametrize("outage", [200.0, 800.0])
@pytest.mark.parametrize("crash_at, outcome", [(103.5, "aborted"), (106.5, "committed")])
def test_coordinator_crash_is_terminated_without_waiting(crash_at, outcome, outage):
    """Coordinator crash before/after pre-commit: participants terminate alone (abort/commit), whatever the outage."""
    # all uncertain -> abort, all pre-committed -> commit, within the timeout plus one state round
    r = sim.run(one_txn([{"kind": "crash", "node": "n1", "start": crash_at, "end": crash_at + outage}]),
                         seed=1)
    p = r.tables["participants"]
    assert (p["outcome"] == outcome).all() and not p["blocked"].any() and r.verdicts["atomicity"].ok
    bound = TIMING["decision_timeout"] + TIMING["retry_interval"] + 5  # + pre-commit and commit writes
    assert (p["uncertain_time"] <= bound).all() and (p["outcome_time"] < crash_at + outage).all()
    assert r.tables["events"].iloc[-1]["detail"].startswith("termination:")
    assert r.tables["transactions"]["client_outcome"].tolist() == ["info"]


@pytest.mark.slow
def test_coordinator_crashes_never_block_or_split():
    """Random coordinator crashes over many seeds: 3PC never blocks nor splits, where 2PC blocks."""
    # delays are bounded (uniform 0.5-3 ms), as 3PC's timeout rules assume
    faults = {"random": {"crash_mtbf": "400ms", "crash_duration": {"dist": "uniform", "low": 200, "high": 800},
                         "crash_nodes": ["n1"], "end": "3s"}}
    latency = {"dist": "uniform", "low": 0.5, "high": 3}
    terminations = 0
    for seed in range(6):
        r = sim.run(busy(faults, latency=latency, abort_probability=0.05), seed=seed, keep_world=True)
        assert r.verdicts["atomicity"].ok, r.verdicts["atomicity"].explanation
        assert r.summary["txn.blocked"] == 0 and r.summary["txn.unresolved"] == 0
        assert r.tables["participants"]["uncertain_time"].max() < 150 + 50 + 10  # decision_timeout + a state round
        terminations += sum("termination protocol" in n[3] for n in r.world.state.notes)
    assert terminations > 20
    two = sim.run(busy(faults, protocol="two_phase_commit", latency=latency, abort_probability=0.05),
                           seed=0, keep_world=True)
    assert two.summary["txn.blocked"] > 0 and two.verdicts["atomicity"].ok


@pytest.mark.slow
def test_some_partition_schedule_makes_3pc_decide_both_ways():
    """A seed search finds a partition schedule under which 3PC commits and aborts one transaction; 2PC stays atomic."""
    # the checker names both sides, money is no longer conserved; 2PC runs the very same schedule
    faults = {"random": {"partition_mtbf": "500ms", "partition_duration": {"dist": "uniform", "low": 200, "high": 600},
                         "partition": "random_halves", "end": "3s"}}
    latency = {"dist": "exponential", "mean": 2}
    for seed in range(20):
        three = sim.run(busy(faults, latency=latency), seed=seed)
        if not three.verdicts["atomicity"].atomic:
            break
    else:
        pytest.fail("no partition schedule in 20 seeds split a 3PC decision")
    v = three.verdicts["atomicity"].violations
    split = v[v["kind"] == "split"].iloc[0]
    assert split["committed"] and split["aborted"]
    assert "committed at" in three.verdicts["atomicity"].explanation and three.summary["txn.atomicity_violations"] >= 1
    assert three.tables["balances"]["change"].sum() != 0
    assert (three.faults["kind"] == "partition").all()
    two = sim.run(busy(faults, protocol="two_phase_commit", latency=latency), seed=seed)
    assert two.verdicts["atomicity"].ok and two.tables["balances"]["change"].sum() == 0
