"""Raft log compaction: snapshots, InstallSnapshot for lagging followers, bounded logs, and safety with both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sim
from sim.harness import Harness
from sim.kernel.messages import ClientRequest
from sim.replication.raft import NOOP, AppendEntries, AppendReply, Entry, InstallSnapshot, RaftNode, Snapshot
from sim.replication.raft.messages import SnapshotReply
from sim.runner import build_world
from sim.scenario import Scenario
from tests.test_raft import (
    assert_linearizable,
    assert_one_leader_per_term,
    random_faults_scenario,
    scenario,
)

THRESHOLD = 8


def compacting(threshold: int = THRESHOLD, **protocol: Any) -> dict[str, Any]:
    return {"snapshot_threshold": threshold, **protocol}


def leader_harness(threshold: int = THRESHOLD) -> tuple[Harness, RaftNode]:
    """n1 leads term 1 of a five-node harness that compacts after ``threshold`` applied entries."""
    h = Harness(scenario(compacting(threshold), workload={"clients": 0}))
    n1 = h.nodes["n1"]
    n1._persist(1, "n1")
    n1._become_leader()
    h.take()
    return h, n1


def commit_writes(h: Harness, leader: RaftNode, count: int, first_op: int = 1) -> None:
    """Append ``count`` writes at the leader and have n2 and n3 acknowledge all of them (a majority)."""
    for i in range(count):
        leader.log.append(Entry(leader.term, first_op + i, "write", i % 3, f"v{first_op + i}"))
    last = leader.log_start + len(leader.log) - 1
    for peer in ("n2", "n3"):
        h.deliver(leader.name, AppendReply(leader.term, True, last, 0, 0, 1), src=peer)


# -- handlers, driven by hand -------------------------------------------------------------


def test_a_node_snapshots_after_threshold_applied_entries_and_recovers_from_it():
    """Once THRESHOLD entries are applied the log is cut to its base; a crash keeps the snapshot and the
    state machine comes back from it, not from an empty map."""
    h, n1 = leader_harness()
    commit_writes(h, n1, THRESHOLD - 2)  # no-op + 6 writes = 7 applied: below the threshold
    assert n1.snapshots_taken == 0 and n1.log_start == 0 and len(n1.log) == THRESHOLD
    commit_writes(h, n1, 3, first_op=100)
    assert n1.snapshots_taken == 1 and n1.log_start == n1.last_applied == THRESHOLD + 2
    assert n1.log == [Entry(1, 0, NOOP, None, None)]
    snap: Snapshot = n1.disk["snapshot"]
    assert (snap.last_index, snap.last_term) == (THRESHOLD + 2, 1)
    state = n1.replica_state()
    assert state == {0: "v100", 1: "v101", 2: "v102"}  # the second batch overwrote the first
    h.crash("n1")
    h.recover("n1")
    assert n1.replica_state() == state and n1.commit_index == n1.log_start == THRESHOLD + 2


def test_the_leader_sends_install_snapshot_to_a_follower_behind_its_log_start():
    """A follower whose nextIndex is at or below the leader's log start gets InstallSnapshot (once while it is in
    flight, heartbeats from the snapshot's base meanwhile), and its reply moves nextIndex past the snapshot."""
    h, n1 = leader_harness()
    commit_writes(h, n1, THRESHOLD + 2)
    h.take()
    n1.next_index["n4"] = 1
    n1._broadcast()
    to_n4 = [m.msg for m in h.take() if m.dst == "n4"]
    assert len(to_n4) == 1 and isinstance(to_n4[0], InstallSnapshot)
    assert to_n4[0].snapshot is n1.disk["snapshot"]
    assert n1.snapshots_sent == 2  # n5, which has answered nothing either, is behind too
    n1._broadcast()  # the next round, the snapshot still in flight
    (heartbeat,) = [m.msg for m in h.take() if m.dst == "n4"]
    assert isinstance(heartbeat, AppendEntries) and heartbeat.prev_index == n1.log_start and not heartbeat.entries
    # n4's refusal of that heartbeat (its log is empty) is not answered while the snapshot travels
    assert h.deliver("n1", AppendReply(1, False, 0, 1, 0, heartbeat.seq), src="n4") == []
    h.deliver("n1", SnapshotReply(1, n1.log_start, to_n4[0].seq), src="n4")
    assert n1.match_index["n4"] == n1.log_start and n1.next_index["n4"] == n1.log_start + 1


def test_a_snapshot_leaves_after_its_transfer_time():
    """With snapshot_record_time, InstallSnapshot departs size x record time after the leader decides to send it."""
    h = Harness(scenario(compacting(snapshot_record_time="0.5ms"), workload={"clients": 0}))
    n1 = h.nodes["n1"]
    n1._persist(1, "n1")
    n1._become_leader()
    commit_writes(h, n1, THRESHOLD + 2)
    h.take()
    n1.next_index["n4"] = 1
    n1._broadcast()
    assert not [m for m in h.take() if m.dst == "n4"]
    size = n1.disk["snapshot"].size
    assert size == 3 + THRESHOLD + 2  # three keys and every write's op id
    sends = [t for t in h.timers_of("n1") if t.callback == "send"]
    assert sorted(t.args[0] for t in sends) == ["n4", "n5"]  # n5 never answered either
    assert all(t.at == h.now + 0.5 * size for t in sends)
    (to_n4,) = [t for t in sends if t.args[0] == "n4"]
    assert [(m.dst, type(m.msg)) for m in h.fire(to_n4)] == [("n4", InstallSnapshot)]


def test_a_follower_installs_a_snapshot_and_keeps_only_the_log_that_follows_a_matching_base():
    """Raft section 7: a snapshot whose last entry the follower holds (same index and term) keeps the entries
    after it; otherwise the whole log goes. Either way the state machine is the snapshot's."""
    snap = Snapshot(3, 1, {0: "x"}, {7: None}, 0, {1: 3}, {0: {1: 2}})
    for own_term, kept in ((1, [Entry(1, 9, "write", 1, "y")]), (2, [])):
        h = Harness(scenario(compacting(), workload={"clients": 0}))
        n2 = h.nodes["n2"]
        n2.log.extend([Entry(1, 5, "write", 0, "a"), Entry(1, 6, "write", 0, "b"),
                       Entry(own_term, 7, "write", 0, "x"), Entry(own_term, 9, "write", 1, "y")])
        (reply,) = h.deliver("n2", InstallSnapshot(1 + own_term, "n1", snap, 4), src="n1")
        assert reply.msg == SnapshotReply(1 + own_term, 3, 4)
        assert n2.log == [Entry(1, 0, NOOP, None, None), *kept] and n2.log_start == 3
        assert n2.replica_state() == {0: "x"} and n2.commit_index == n2.last_applied == 3
        assert n2.disk["snapshot"] is snap and n2.snapshots_installed == 1
        # an AppendEntries from before the snapshot's base is checked only beyond it
        entries = (Entry(1, 5, "write", 0, "a"), Entry(1, 6, "write", 0, "b"), Entry(1, 7, "write", 0, "x"),
                   Entry(1, 9, "write", 1, "y"), Entry(1 + own_term, 10, "write", 2, "z"))
        (ok,) = h.deliver("n2", AppendEntries(1 + own_term, "n1", 0, 0, entries, 5, 5), src="n1")
        assert ok.msg.success and ok.msg.match == 5 and n2.replica_state() == {0: "x", 1: "y", 2: "z"}


def test_dedup_window_keeps_the_newest_ids_and_drops_requests_older_than_them():
    """With dedup_window = 4 the applied-operation table keeps at most 8 ids, forgets the oldest, and a late
    request at or below the floor is neither appended nor answered."""
    h = Harness(scenario({"dedup_window": 4}, workload={"clients": 0}))
    n1 = h.nodes["n1"]
    n1._persist(1, "n1")
    n1._become_leader()
    commit_writes(h, n1, 9)  # op ids 1..9
    assert sorted(n1.results) == [6, 7, 8, 9] and n1.floor == 5
    h.take()
    before = len(n1.log)
    assert h.deliver("n1", ClientRequest(3, "write", 0, "late"), src="c0") == []
    assert len(n1.log) == before


# -- whole runs ---------------------------------------------------------------------------


def lagging_scenario(threshold: int = 20) -> Scenario:
    """n5 is cut off from 0.5 s to 3 s while the others commit hundreds of entries."""
    return scenario(compacting(threshold), workload={"clients": 5, "rate": 40, "keys": 5},
                    faults={"schedule": [{"kind": "isolate", "node": "n5", "start": 500.0, "end": 3000.0}]},
                    run={"duration": 4000.0, "settle": 500.0})


def test_a_follower_cut_off_for_long_catches_up_by_install_snapshot():
    """After the heal n5 receives the leader's snapshot (its log ends far below the leader's log start), installs
    it and ends with the leader's state; without compaction it catches up entry by entry, no snapshot sent."""
    s = lagging_scenario()
    world = build_world(s, 2)
    world.start()
    world.env.run(until=2900.0)
    n5 = world.nodes["n5"]
    behind = n5.commit_index
    assert n5.snapshots_installed == 0
    world.env.run(until=4500.0)
    leader = world.nodes[s.protocol.leader(world)]
    assert n5.snapshots_installed >= 1 and n5.log_start > behind + 100
    assert n5.replica_state() == leader.replica_state()
    r = sim.run(s, 2)
    assert r.summary["protocol.snapshots_installed"] >= 1
    assert r.summary["protocol.snapshots_sent"] >= r.summary["protocol.snapshots_installed"]
    assert_linearizable(r.history)
    plain = sim.run(s.variant({"protocol.snapshot_threshold": 0}), 2)
    assert plain.summary["protocol.snapshots_sent"] == 0
    assert plain.summary["protocol.max_log"] >= plain.summary["protocol.committed"]  # every entry kept
    assert r.summary["protocol.max_log"] < r.summary["protocol.committed"] / 5


def test_the_log_stays_bounded_under_crashes_and_partitions():
    """At every 50 ms sample of a 20 s run with random faults, no node keeps THRESHOLD or more applied entries
    in its log; the log retains a small fraction of what was committed."""
    s = random_faults_scenario(20.0).variant({"protocol.snapshot_threshold": THRESHOLD})
    world = build_world(s, 5)
    world.start()
    longest = 0
    t = 0.0
    while t < 20_000.0:
        t += 50.0
        world.env.run(until=t)
        for node in world.nodes.values():
            if isinstance(node, RaftNode) and node.alive:
                assert node.last_applied - node.log_start < THRESHOLD
                longest = max(longest, len(node.log) - 1)
    committed = max(n.max_commit for n in world.nodes.values() if isinstance(n, RaftNode))
    assert committed > 50 * THRESHOLD  # the run went through many snapshots
    assert longest < committed / 10


def test_safety_holds_with_compaction_over_many_seeds():
    """24 seeds of partitions, crashes, loss, duplication and reordering with snapshots every 5 entries (reads by
    read-index, or through the log on odd seeds): linearizable, one leader per term, and state machine safety
    (nodes that applied the same prefix hold the same data, at a hundred points of each run; and the run's
    verdict: no two nodes applied different entries at one index); snapshots were installed."""
    base = random_faults_scenario(4.0).variant({"protocol.snapshot_threshold": 5, "protocol.dedup_window": 64})
    installed = 0
    for seed in range(24):
        s = base.variant({"protocol.read_mode": "log"}) if seed % 2 else base
        world = build_world(s, seed)
        seen: dict[int, dict[Any, Any]] = {}

        def same_prefix_same_state(_now: float, world: Any = world, seen: dict = seen, seed: int = seed) -> None:
            for node in world.nodes.values():
                if isinstance(node, RaftNode) and node.alive:
                    state = seen.setdefault(node.last_applied, node.replica_state())
                    assert state == node.replica_state(), (seed, node.name, node.last_applied)

        world.run(same_prefix_same_state)
        assert len(seen) > 50
        assert_linearizable(world.history.to_frame())
        assert_one_leader_per_term(pd.DataFrame(world.node_events, columns=["time", "node", "event"]))
        sms = s.protocol.verdicts(world, world.state)["state_machine_safety"]
        assert sms.ok and sms.indices > 50, (seed, sms.explanation)
        assert len(world.state.remembered) < sms.indices  # indices every node has in its snapshot were forgotten
        installed += sum(n.snapshots_installed for n in world.nodes.values() if isinstance(n, RaftNode))
    assert installed > 24


def test_state_machine_check_rejects_diverging_replicas():
    """The safety test's comparison is not vacuous: two nodes at the same applied index with different data fail it."""
    h = Harness(scenario(workload={"clients": 0}))
    a, b = h.nodes["n1"], h.nodes["n2"]
    a.data[0], b.data[0] = "x", "y"
    seen: dict[int, dict[Any, Any]] = {}
    with pytest.raises(AssertionError):
        for node in (a, b):
            state = seen.setdefault(node.last_applied, node.replica_state())
            assert state == node.replica_state()


def test_compaction_settings_are_checked():
    """Negative thresholds and windows, and a non-positive snapshot timeout, are errors naming the field."""
    for field, value in (("snapshot_threshold", -1), ("dedup_window", -5), ("snapshot_timeout", 0),
                         ("forward_ttl", "-1s")):
        with pytest.raises(sim.ScenarioError, match=f"protocol.{field}"):
            scenario({field: value})
    with pytest.raises(sim.ScenarioError, match="protocol.snapshot_threshold"):
        scenario({"snapshot_threshold": "many"})


def test_the_example_scenario_catches_up_a_restarted_node_by_snapshot():
    """experiments/scenarios/raft-compaction.toml: n5, down while the others commit over a thousand entries, is
    caught up by InstallSnapshot; logs stay a fraction of the committed entries; linearizable."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "raft-compaction.toml"
    s = Scenario.from_toml(path)
    r = sim.run(s, keep_world=True)
    n5 = r.world.nodes["n5"]
    assert n5.snapshots_installed >= 1 and n5.log_start >= s.protocol.snapshot_threshold
    assert r.summary["protocol.committed"] > 10 * s.protocol.snapshot_threshold
    assert r.summary["protocol.max_log"] < r.summary["protocol.committed"] / 5
    assert_linearizable(r.history)


_DIGEST = """
import hashlib, json, sys
import sim
r = sim.run(sim.Scenario.from_toml(sys.argv[1]), seed=4)
summary = json.dumps({k: v for k, v in r.summary.items() if k != "runtime"}, sort_keys=True, default=str)
print(hashlib.sha256((r.history.to_csv(index=False) + summary).encode()).hexdigest())
"""


@pytest.mark.parametrize("name", ["raft-compaction", "dynamo-anti-entropy"])
def test_compaction_and_anti_entropy_runs_are_identical_across_processes(name):
    """The new examples give byte-identical histories and summaries in interpreters with different hash seeds
    (snapshots, Merkle hashes and the tables they keep never depend on Python's per-process hashing)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / f"{name}.toml"
    digests = {subprocess.run([sys.executable, "-c", _DIGEST, str(path)], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout.strip()
               for seed in ("1", "2")}
    assert len(digests) == 1 and len(next(iter(digests))) == 64


# -- idempotency keys across compaction ---------------------------------------------------------------------------


def keyed_leader(ttl: str = "60s") -> tuple[Harness, RaftNode]:
    """n1 leads term 1 of a harness whose clients retry with idempotency keys (key ttl ``ttl``)."""
    h = Harness(scenario(compacting(dedup={"ttl": ttl}),
                         workload={"clients": 0, "retry": {"policy": "immediate", "idempotency_keys": True}}))
    n1 = h.nodes["n1"]
    n1._persist(1, "n1")
    n1._become_leader()
    h.take()
    return h, n1


def commit(h: Harness, leader: RaftNode, *entries: Entry) -> None:
    """Append ``entries`` at the leader and have n2 and n3 acknowledge its whole log."""
    leader.log.extend(entries)
    last = leader.log_start + len(leader.log) - 1
    for peer in ("n2", "n3"):
        h.deliver(leader.name, AppendReply(leader.term, True, last, 0, 0, 1), src=peer)


FIRST_AT = 100.0


def compact_a_keyed_write(ttl: str = "60s") -> tuple[Harness, RaftNode, Snapshot]:
    """The leader applies a keyed write of 'first' to key 0 (key 101), then enough other writes to key 0 that a
    snapshot drops the keyed entry from its log."""
    h, n1 = keyed_leader(ttl)
    commit(h, n1, Entry(1, 101, "write", 0, "first", 101, FIRST_AT))
    commit(h, n1, *(Entry(1, 200 + i, "write", 0, f"v{i}", None, FIRST_AT + i) for i in range(THRESHOLD)))
    snap: Snapshot = n1.disk["snapshot"]
    assert n1.snapshots_taken == 1 and all(e.op_id != 101 for e in n1.log)
    assert snap.idempotency_keys is not None and len(snap.idempotency_keys) == 1  # key 101
    assert n1.replica_state() == {0: f"v{THRESHOLD - 1}"}
    return h, n1, snap


def retry_of_first(term: int, at: float) -> Entry:
    """A client's retry of the keyed write: a new request (op id 999), the same value and idempotency key."""
    return Entry(term, 999, "write", 0, "first", 101, at)


def test_a_node_restarted_from_a_snapshot_still_skips_a_retry_whose_first_attempt_was_compacted_away():
    """The idempotency-key table is in the snapshot: after a crash the leader's state machine starts from it, the
    keyed entry being gone from its log, and a retry within the key's ttl is answered ok and not applied."""
    h, n1, _snap = compact_a_keyed_write()
    h.crash("n1")
    h.recover("n1")
    assert n1.log_start == n1.last_applied and n1.dedup.lookup(101, FIRST_AT)[0]
    n1._persist(2, "n1")
    n1._become_leader()
    commit(h, n1, retry_of_first(2, FIRST_AT + 1000))
    assert n1.last_applied == n1.log_start + len(n1.log) - 1  # the retry was applied ...
    assert n1.results[999] is None  # ... answered ok ...
    assert n1.replica_state() == {0: f"v{THRESHOLD - 1}"}  # ... and skipped: 'first' is not written again
    applied = h.events["applications"].frame()
    assert applied["request_id"].tolist().count(101) == 1 and 999 not in applied["request_id"].tolist()


def _install_then_apply_retry(snap: Snapshot, at: float, ttl: str = "60s") -> dict[Any, Any]:
    """A fresh follower installs ``snap``, then gets the retry (after the new leader's no-op) committed."""
    h, _n1 = keyed_leader(ttl)
    n4 = h.nodes["n4"]
    h.deliver("n4", InstallSnapshot(2, "n1", snap, 1), src="n1")
    base = snap.last_index
    entries = (Entry(2, 0, NOOP, None, None), retry_of_first(2, at))
    h.deliver("n4", AppendEntries(2, "n1", base, snap.last_term, entries, base + 2, 2), src="n1")
    assert n4.snapshots_installed == 1 and n4.last_applied == base + 2 and n4.results[999] is None
    return n4.replica_state()


def test_a_follower_that_installed_a_snapshot_decides_a_retry_as_the_leader_does():
    """A follower catching up by InstallSnapshot gets the key table with the data: it skips the retry within the
    ttl, as the leader does. The same snapshot without its key table would make it apply the retry (the other
    replicas skip it: diverged state machines), and past the ttl every replica applies it again."""
    _h, _n1, snap = compact_a_keyed_write(ttl="1s")
    within, expired = FIRST_AT + 900, FIRST_AT + 1100
    assert _install_then_apply_retry(snap, within, ttl="1s") == {0: f"v{THRESHOLD - 1}"}
    assert _install_then_apply_retry(snap._replace(idempotency_keys=None), within, ttl="1s") == {0: "first"}
    assert _install_then_apply_retry(snap, expired, ttl="1s") == {0: "first"}


def test_snapshot_size_counts_the_idempotency_keys():
    """An InstallSnapshot's transfer cost counts the keys it carries besides data and op ids."""
    _h, _n1, snap = compact_a_keyed_write()
    assert snap.size == len(snap.data) + len(snap.results) + len(snap.idempotency_keys) == 1 + (THRESHOLD + 1) + 1
