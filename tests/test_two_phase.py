"""Two-phase commit: outcomes, message and log counts, blocking, termination, recovery."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas.testing as pdt
import pytest
from scipy import stats

import sim
from sim.errors import ScenarioError
from sim.runner import build_world
from sim.scenario import Scenario

# Timeline scenarios: one closed-loop client whose only transaction starts at t=100 and
# touches n2, n3, n4. With 1 ms links and 1 ms forced writes: prepares arrive at 102,
# the prepared records are durable and the yes votes leave at 103, the votes arrive
# at 104, the coordinator's commit record is durable and the commits leave at 105.
TIMING = {"decision_timeout": 60, "retry_interval": 20, "vote_timeout": 25}


def one_txn(faults=(), **protocol):
    return Scenario.from_dict({
        "cluster": {"count": 4},
        "workload": {"clients": 1, "mode": "closed", "think_time": 100, "target": "fixed", "target_node": "n1",
                     "timeout": 5000},
        "protocol": {"name": "two_phase_commit", "min_participants": 3, **TIMING, **protocol},
        "faults": {"schedule": list(faults)},
        "run": {"duration": 150},
    })


def busy(faults=None, nodes=5, duration="5s", latency=1.0, **protocol):
    """Several open-loop clients sending transfers to the coordinator n1."""
    return Scenario.from_dict({
        "cluster": {"count": nodes},
        "network": {"latency": latency},
        "workload": {"clients": 4, "rate": 25, "target": "fixed", "target_node": "n1", "keys": 20, "timeout": 2000},
        "protocol": {"name": "two_phase_commit", **protocol},
        "faults": faults or {},
        "run": {"duration": duration},
    })


def crash(node, start, end):
    return {"kind": "crash", "node": node, "start": start, "end": end}


def test_no_faults_all_yes_commits_any_no_aborts_with_exact_counts():
    """No faults: commit iff all vote yes; 4n messages, 2n+1 forced writes per commit; 3n-m and n-m per abort."""
    # n participants, m of them voting no; the network's per-type send counters must agree
    s = busy(abort_probability=0.15, duration="4s")
    for seed in range(3):
        r = sim.run(s, seed=seed, keep_world=True)
        t = r.tables["transactions"]
        assert len(t) > 300 and r.verdicts["atomicity"].ok
        committed = t["outcome"] == "committed"
        assert set(t["outcome"]) == {"committed", "aborted"}
        assert (committed == (t["no_votes"] == 0)).all()
        assert 0.2 < (~committed).mean() < 0.8
        n, m = t["n"], t["no_votes"]
        assert (t["messages"] == np.where(committed, 4 * n, 3 * n - m)).all()
        assert (t["forced_writes"] == np.where(committed, 2 * n + 1, n - m)).all()
        assert (t["client_outcome"] == np.where(committed, "ok", "fail")).all()
        assert not t["blocked"].any() and r.summary["txn.blocked_fraction"] == 0
        sent = r.world.network.sent_by_type
        assert sent["Prepare"] == sent["Vote"] == n.sum()
        assert sent["Commit"] == sent["Ack"] == n[committed].sum()
        assert sent["Abort"] == (n - m)[~committed].sum()
        assert r.summary["txn.messages_per_commit"] == pytest.approx(4 * n[committed].mean())
        reasons = set(r.tables["participants"]["vote_reason"].dropna())
        assert "local check failed" in reasons and any(x.startswith("account") for x in reasons)


def test_insufficient_balance_votes_no():
    """With empty accounts the payer cannot pay: it votes no, the others abort, money is unchanged."""
    r = sim.run(busy(initial_balance=0, min_participants=2, max_participants=2, duration="1s"), seed=1)
    t, p = r.tables["transactions"], r.tables["participants"]
    assert len(t) > 50 and (t["outcome"] == "aborted").all() and (t["no_votes"] == 1).all()
    payers = p.merge(t[["gtid", "payer"]], on="gtid")
    payers = payers[payers["node"] == payers["payer"]]
    assert (payers["vote"] == "no").all()
    reasons = payers["vote_reason"]  # a lock held by another transfer is checked first
    assert (reasons == "insufficient balance").mean() > 0.9 and reasons.str.contains("insufficient|locked").all()
    assert (t["decision_how"].str.startswith("vote no from")).all()
    assert r.tables["balances"].empty


@pytest.mark.parametrize("cooperative", [False, True])
@pytest.mark.parametrize("outage", [200.0, 800.0])
def test_coordinator_crash_after_yes_votes_blocks_for_the_outage(outage, cooperative):
    """Coordinator crash after all yes votes: participants stay uncertain and locked for the outage."""
    # n1 is down from 104.5 (votes in, commit record not yet durable): blocked time = outage plus
    # at most one retry interval and a round trip; cooperative termination cannot help here
    # because no participant knows the outcome
    r = sim.run(one_txn([crash("n1", 104.5, 104.5 + outage)], cooperative_termination=cooperative),
                         seed=1)
    p = r.tables["participants"]
    assert (p["vote"] == "yes").all() and (p["outcome"] == "aborted").all()  # presumed abort
    assert p["blocked"].all() and (p["cause"] == "coordinator crash").all()
    assert ((p["blocked_time"] >= outage) & (p["blocked_time"] <= outage + TIMING["retry_interval"] + 4)).all()
    locks = r.tables["locks"]
    assert len(locks) == 3 and np.allclose(locks["held"], p["blocked_time"] + 1)
    assert r.tables["transactions"]["client_outcome"].tolist() == ["info"] and r.verdicts["atomicity"].ok


def test_cooperative_termination_learns_the_decision_from_a_peer():
    """Commit lost to n4, then the coordinator crashes: n4 waits out the outage alone, or asks n2/n3 and commits."""
    faults = [{"kind": "loss", "probability": 1.0, "src": "n1", "dst": "n4", "start": 104.9, "end": 110},
              crash("n1", 105.5, 605.5)]
    alone = sim.run(one_txn(faults), seed=1).tables["participants"].set_index("node")
    assert alone.loc["n4", "blocked"] and alone.loc["n4", "cause"] == "coordinator crash"
    assert 500 <= alone.loc["n4", "blocked_time"] <= 500 + 5  # the recovered coordinator resends Commit
    coop = sim.run(one_txn(faults, cooperative_termination=True), seed=1)
    p = coop.tables["participants"].set_index("node")
    assert (p["outcome"] == "committed").all() and not p["blocked"].any()
    assert TIMING["decision_timeout"] <= p.loc["n4", "uncertain_time"] <= TIMING["decision_timeout"] + 5
    assert "learned from n2" in coop.tables["events"].iloc[-1]["detail"] and coop.verdicts["atomicity"].ok


def test_cooperative_termination_learns_abort_from_the_no_voter():
    """A no voter and a coordinator crash before the decision: yes voters block alone, learn abort cooperatively."""
    # with empty accounts the payer votes no (insufficient balance); n1 crashes as the votes travel
    faults = [crash("n1", 103.5, 903.5)]
    alone = sim.run(one_txn(faults, initial_balance=0), seed=1).tables["participants"]
    coop = sim.run(one_txn(faults, initial_balance=0, cooperative_termination=True), seed=1).tables["participants"]
    for p in (alone, coop):
        assert sorted(p["vote"]) == ["no", "yes", "yes"] and (p["outcome"] == "aborted").all()
    assert alone["blocked"].sum() == 2 and (alone.loc[alone["blocked"], "blocked_time"] >= 800).all()
    assert not coop["blocked"].any() and coop["uncertain_time"].max() <= TIMING["decision_timeout"] + 5


def _hand_world(scenario):
    world = build_world(scenario)
    for node in world.nodes.values():
        node.start()
    for client in world.clients:
        client.start()
    world.injector.start()
    return world


def test_participant_crash_in_doubt_keeps_its_lock_and_recovers_from_its_log():
    """A participant crashing after its yes vote recovers in doubt from its log, locked, then asks and commits."""
    world = _hand_world(one_txn([crash("n2", 103.5, 403.5)]))
    n2 = world.nodes["n2"]
    world.env.run(until=403.5 + 0.01)
    assert n2.alive and n2.crashes == 1
    (gtid, t), = n2.txns.items()
    assert t.state == "prepared" and n2.locks == {t.account: gtid}
    assert [r[0] for r in n2.disk["log"]] == ["prepared"]
    world.env.run(until=500)
    assert not n2.txns and not n2.locks and n2.decided[gtid] == "commit"
    assert [r[0] for r in n2.disk["log"]] == ["prepared", "commit"]
    assert n2.balances[t.account] == 1000 + t.delta
    rec = world.state
    lock = [row for row in rec.locks if row[1] == "n2"]
    assert len(lock) == 1 and lock[0][3] == 102 and 403.5 < lock[0][4] < 410  # held across the crash
    assert rec.messages[gtid]["Commit"] > 3  # the coordinator kept resending to n2


@pytest.mark.slow
def test_random_crashes_and_partitions_never_break_atomicity():
    """Random crashes and partitions over many seeds: atomic, and blocking only when cut off after a yes vote."""
    # no split, flip, lost application or wrong client answer; every blocked participant voted
    # yes and a crash (coordinator or itself) or a partition between them explains it
    faults = {"random": {"crash_mtbf": "2s", "crash_duration": {"dist": "uniform", "low": 100, "high": 800},
                         "partition_mtbf": "1500ms", "partition_duration": {"dist": "uniform", "low": 50, "high": 600},
                         "partition": "random_halves", "end": "3s"}}
    blocked = 0
    for seed in range(8):
        s = busy(faults, duration="4s", latency={"dist": "exponential", "mean": 2}, abort_probability=0.1,
                 cooperative_termination=seed % 2 == 1)
        r = sim.run(s, seed=seed, keep_world=True)
        assert r.verdicts["atomicity"].ok, r.verdicts["atomicity"].explanation
        assert r.summary["txn.unresolved"] == 0
        # undecided: the prepares were all lost and the coordinator crashed before its vote
        # timeout, so nobody ever locked anything (presumed abort)
        undecided = r.tables["transactions"][r.tables["transactions"]["outcome"] == "undecided"]
        assert (undecided["client_outcome"] == "info").all()
        parts = r.tables["participants"]
        assert parts.loc[parts["gtid"].isin(undecided["gtid"]), "vote"].isna().all()
        # a stale presumed-abort answer may reach a committed participant (it ignores it),
        # but a commit never reaches a participant that aborted
        assert not [n for n in r.world.state.notes if n[3].startswith("Commit")]
        p = r.tables["participants"][r.tables["participants"]["blocked"]]
        assert (p["vote"] == "yes").all()
        assert set(p["cause"]) <= {"coordinator crash", "participant crash", "partition"}, p
        blocked += len(p)
    assert blocked > 20
    calm = sim.run(busy(duration="5s", latency={"dist": "exponential", "mean": 2}, abort_probability=0.1))
    assert calm.summary["txn.blocked"] == 0 and calm.summary["txn.uncertain_time.p99"] < 30


@pytest.mark.slow
def test_termination_protocol_only_leaves_all_yes_transactions_blocked():
    """With cooperative termination only all-yes transactions block; without it, those with a no vote block too."""
    faults = {"random": {"crash_mtbf": "400ms", "crash_duration": 400, "crash_nodes": ["n1"], "end": "4s"}}
    found = {False: 0, True: 0}
    for cooperative in (False, True):
        for seed in range(3):
            s = busy(faults, abort_probability=0.3, force_time=3, cooperative_termination=cooperative)
            t = sim.run(s, seed=seed).tables["transactions"]
            found[cooperative] += int((t["blocked"] & (t["no_votes"] > 0)).sum())
            if cooperative:
                assert t["blocked"].sum() > 0
    assert found[False] > 0 and found[True] == 0


LATENCY = {"dist": "exponential", "mean": 2}


@functools.cache
def _fault_free_windows(**base):
    """Uncertainty windows of the fault-free runs (seeds 0-2) of the blocking-probability scenario."""
    return np.concatenate([sim.run(busy(latency=LATENCY, **base), seed=s).tables["transactions"]["window"].to_numpy()
                           for s in range(3)])


def _ci95(values):
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), half


@pytest.mark.slow
@pytest.mark.parametrize("mtbf", [1000.0, 250.0])
def test_blocking_probability_follows_the_exponential_approximation(mtbf):
    """The fraction of blocked transactions matches 1 - exp(-lambda * tau), tau the mean uncertainty window."""
    # The coordinator crashes at rate lambda = 1/mtbf while up, each outage (300 ms) longer than
    # the blocking threshold (150 ms). A transaction blocks iff a crash falls inside its window W;
    # crashes are memoryless, so P(block | W) = 1 - exp(-lambda W) exactly and
    # P(block) = E[1 - exp(-lambda W)]. Using tau = E[W] (measured without faults) instead is the
    # approximation; by Jensen it errs upwards by at most lambda^2 Var(W) / 2. Tolerance: the 95%
    # t-interval of the measured fraction over seeds, plus that bound, plus twice lambda times
    # the standard error of tau.
    base = dict(nodes=4, duration="5s", force_time=5, decision_timeout=60, retry_interval=20)
    windows = _fault_free_windows(**base)
    base["latency"] = LATENCY
    tau, se_tau = windows.mean(), windows.std(ddof=1) / np.sqrt(len(windows))
    faults = {"random": {"crash_mtbf": mtbf, "crash_duration": 300, "crash_nodes": ["n1"]}}
    fractions = [sim.run(busy(faults, **base), seed=s).summary["txn.blocked_fraction"] for s in range(12)]
    mean, half = _ci95(fractions)
    lam = 1.0 / mtbf
    predicted = 1 - math.exp(-lam * tau)
    tolerance = half + lam**2 * windows.var() / 2 + 2 * lam * se_tau
    assert 10 < tau < 25
    assert abs(mean - predicted) <= tolerance, (mean, half, predicted, tolerance)


def test_same_seed_same_tables():
    """Two runs with one seed give identical transaction and participant tables."""
    s = busy({"random": {"crash_mtbf": "1s", "crash_duration": 300}}, duration="2s", abort_probability=0.1)
    a, b = sim.run(s, seed=4), sim.run(s, seed=4)
    pdt.assert_frame_equal(a.tables["transactions"], b.tables["transactions"])
    pdt.assert_frame_equal(a.tables["participants"], b.tables["participants"])
    assert a.summary == b.summary or all(x == y or (x != x and y != y) for x, y in zip(a.summary.values(),
                                                                                    b.summary.values()))


def test_sim_run_reports_transaction_summary():
    """sim.run carries the txn.* numbers; committed transactions are the ok operations."""
    res = sim.run(busy(duration="1s", abort_probability=0.2), seed=2)
    s = res.summary
    assert s["txn.committed"] == s["ok"] and s["txn.aborted"] == s["fail"] and s["txn.atomicity_violations"] == 0
    assert s["txn.committed"] + s["txn.aborted"] == s["txn.count"] == s["ops"]
    assert s["txn.commit_latency.p50"] == 6.0  # client->n1, prepare, force, vote, force, reply: 1+1+1+1+1+1


@pytest.mark.parametrize("protocol, path, message", [
    ({"coordinator": "n2", "participants": ["n1", "n2"]}, "protocol.participants[1]", "must not be the coordinator"),
    ({"participants": ["n2", "n2"]}, "protocol.participants[1]", "duplicate participant"),
    ({"max_participants": 5}, "protocol.max_participants", "must be <= the number of participants (3)"),
    ({"min_participants": 3, "max_participants": 2}, "protocol.max_participants", "must be >= min_participants"),
    ({"coordinator": "n9"}, "protocol.coordinator", "unknown node 'n9'"),
    ({"abort_probability": 1.5}, "protocol.abort_probability", "must be in [0, 1]"),
    ({"cooperative": True}, "protocol.cooperative", "unknown key"),
])
def test_bad_config_names_the_field(protocol, path, message):
    """Impossible transaction configs raise ScenarioError naming the field."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"cluster": {"count": 4}, "protocol": {"name": "two_phase_commit", **protocol}})
    assert err.value.path == path and message in str(err.value)
