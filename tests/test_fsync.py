"""Durability as configured: fsync policies, what a hard crash loses, and the protocols that break without fsync."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from sim import Harness
from sim.checkers.election_safety import check_election_safety
from sim.errors import ScenarioError
from sim.fsync import FsyncPolicy
from sim.kernel.disk import Disk, snapshot
from sim.replication.raft import RequestVote, VoteReply
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
INTERVAL = {"policy": "interval", "interval": "50ms"}


def raft(fsync: object = "always", **cluster: object) -> Scenario:
    return Scenario.from_dict({"cluster": {"count": 3, "fsync": fsync, **cluster}, "workload": {"clients": 0},
                               "protocol": {"name": "raft"}})


# -- the policy: TOML, Python, errors --------------------------------------------------------------


def test_policies_read_from_toml_and_per_node_overrides_win():
    """fsync takes a word or a table; node_fsync overrides it for the nodes it names."""
    s = Scenario.from_toml_string("""
[cluster]
count = 3
fsync = { policy = "interval", interval = "20ms" }
node_fsync = { n2 = "never", n3 = "always" }
[protocol]
name = "raft"
""")
    assert s.cluster.fsync_of("n1") == FsyncPolicy(policy="interval", interval=20.0)
    assert s.cluster.fsync_of("n2") == FsyncPolicy(policy="never")
    assert s.cluster.fsync_of("n3").always
    assert Scenario.from_dict(s.to_dict()) == s  # the resolved scenario reads back the same
    assert s.variant({"cluster.fsync": "never"}).cluster.fsync_of("n1").policy == "never"


def test_the_default_is_always_and_shows_in_the_resolved_scenario():
    """Without a word about fsync every node syncs every write, and the resolved scenario says so."""
    s = raft()
    assert all(s.cluster.fsync_of(n).always for n in s.nodes)
    assert s.to_dict()["cluster"]["fsync"] == "always"


@pytest.mark.parametrize("cluster, path, message", [
    ({"fsync": "sometimes"}, "cluster.fsync", "must be 'always', 'never', or a table"),
    ({"fsync": "interval"}, "cluster.fsync", "'interval' needs its period"),
    ({"fsync": 50}, "cluster.fsync", "must be 'always', 'never', or a table"),
    ({"fsync": {"policy": "interval"}}, "cluster.fsync.interval", "is required when policy = 'interval'"),
    ({"fsync": {"policy": "never", "interval": "5ms"}}, "cluster.fsync.interval", "only applies to policy = "
                                                                                  "'interval', not 'never'"),
    ({"fsync": {"policy": "interval", "interval": "-5ms"}}, "cluster.fsync.interval", ""),
    ({"fsync": {"policy": "interval", "interval": 0}}, "cluster.fsync.interval", "must be > 0"),
    ({"fsync": {"policy": "sometimes"}}, "cluster.fsync.policy", "must be one of 'always', 'interval', 'never'"),
    ({"fsync": {"policy": "never", "every": "5ms"}}, "cluster.fsync.every", "unknown key; accepted keys: policy, "
                                                                           "interval"),
    ({"node_fsync": {"n9": "never"}}, "cluster.node_fsync.n9", "unknown node 'n9'; cluster nodes are n1, n2, n3"),
    ({"node_fsync": {"n2": "nightly"}}, "cluster.node_fsync.n2", "must be 'always', 'never', or a table"),
    ({"node_fsync": ["n2"]}, "cluster.node_fsync", "must be a table of node name -> fsync policy"),
])
def test_a_bad_policy_names_the_field_and_what_is_accepted(cluster, path, message):
    """Every mistake is a ScenarioError at the field's path saying what would be accepted."""
    with pytest.raises(ScenarioError) as err:
        raft(**cluster) if "fsync" not in cluster else raft(cluster.pop("fsync"), **cluster)
    assert err.value.path == path, str(err.value)
    assert message in str(err.value)


def test_a_policy_built_in_python_is_checked_when_a_scenario_uses_it():
    """FsyncPolicy objects are accepted where TOML values are, and checked the same way."""
    assert raft(FsyncPolicy(policy="interval", interval=10.0)).cluster.fsync.interval == 10.0
    with pytest.raises(ScenarioError, match=r"^cluster.fsync.interval: is required"):
        raft(FsyncPolicy(policy="interval"))


# -- the disk -----------------------------------------------------------------------------------------


def test_always_keeps_everything_through_a_hard_crash():
    """The default: the disk is a plain dict, as fast as before; a crash changes nothing and there is no flush."""
    h = Harness(raft())
    disk = h.nodes["n1"].disk
    assert type(disk) is dict
    disk["x"] = 1
    disk["log"].append("a")
    h.crash("n1")
    h.recover("n1")
    assert h.nodes["n1"].disk is disk and disk["x"] == 1 and disk["log"][-1] == "a"
    assert [t.callback for t in h.timers_of("n1")] == ["_on_election_timer"]  # no flush timer


def test_never_loses_every_write_at_a_hard_crash_but_not_at_a_clean_stop():
    """With fsync never, a kill loses what was written (in place too); a clean stop flushes first."""
    h = Harness(raft("never"))
    node = h.nodes["n1"]
    node.disk["x"] = 1
    node.disk["log"].append("in place")
    node.crash(clean=True)
    node.recover()
    assert node.disk["x"] == 1 and node.disk["log"][-1] == "in place"
    node.disk["x"] = 2
    node.disk["log"].append("lost")
    h.crash("n1")
    assert node.disk["x"] == 1 and node.disk["log"][-1] == "in place" and node.disk.rollbacks == 1
    h.recover("n1")
    node.disk["log"].append("again")  # changing what was read back does not change the durable image
    assert node.disk.durable["log"][-1] == "in place"


def test_interval_flushes_on_its_timer_and_a_crash_loses_the_tail():
    """Writes before the last flush survive a kill, later ones do not; the flush stops while the node is down
    and starts again, a full interval later, when it recovers."""
    h = Harness(raft(INTERVAL))
    node = h.nodes["n1"]
    node.disk["a"] = 1
    h.advance(50)
    node.disk["b"] = 2
    h.advance(20)
    h.crash("n1")
    assert "a" in node.disk and "b" not in node.disk
    assert not any(t.callback == "_flush" for t in h.timers_of("n1"))
    h.advance(100)
    h.recover("n1")
    (flush,) = [t for t in h.timers_of("n1") if t.callback == "_flush"]
    assert flush.at == h.now + 50


def test_a_process_crash_keeps_what_was_written():
    """restart_after is a process crash on a live machine: the page cache survives, nothing is lost."""
    h = Harness(raft("never"))
    node = h.nodes["n1"]
    node.disk["x"] = 7
    node.restart_after(10)
    assert not node.alive and node.disk["x"] == 7 and node.disk.rollbacks == 0


def test_per_node_policy_reaches_each_node():
    """node_fsync gives one node its own policy; the others keep cluster.fsync."""
    h = Harness(raft("always", node_fsync={"n2": "never"}))
    n2 = h.nodes["n2"].disk
    assert isinstance(n2, Disk) and n2.policy.policy == "never" and type(h.nodes["n1"].disk) is dict


values = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner,
                                                                                    max_size=4)
                      | st.tuples(inner, inner), max_leaves=20)


@given(values)
def test_a_snapshot_is_equal_and_shares_nothing_that_can_change(value):
    """snapshot() gives an equal object whose lists and dicts are new ones (so later in-place changes of the
    original never reach it) and keeps tuples of values as they are."""
    copied = snapshot(value)
    assert copied == value

    def containers(x, out):
        if isinstance(x, (list, dict)):
            out.append(id(x))
        for y in (x.values() if isinstance(x, dict) else x if isinstance(x, (list, tuple)) else ()):
            containers(y, out)
        return out

    assert not set(containers(value, [])) & set(containers(copied, []))
    if isinstance(value, tuple) and not containers(value, []):
        assert copied is value


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.tuples(st.integers(0, 3), st.integers(0, 3))),
    st.tuples(st.just("append"), st.integers(0, 3)),
    st.tuples(st.just("append_list"), st.integers(0, 3)),
    st.tuples(st.just("set"), st.integers(0, 4), st.integers(0, 3)),
    st.tuples(st.just("mutate_inner"), st.integers(0, 4), st.integers(0, 3)),
    st.tuples(st.just("truncate"), st.integers(0, 9)),
    st.tuples(st.just("alias"), st.integers(0, 4)),
    st.tuples(st.just("sync"),),
), max_size=25)


@settings(max_examples=300)
@given(ops)
def test_a_crash_brings_back_exactly_the_last_flush(steps):
    """Whatever a protocol does to a log on disk between flushes (appends, replacing or truncating entries,
    changing lists inside it, one object at two places, flushing again), a hard crash gives back the log as it
    was at the last flush."""
    disk = Disk(FsyncPolicy(policy="never"))
    log: list = disk.setdefault("log", [])
    flushed: list = []
    for step in steps:
        kind = step[0]
        if kind == "append":
            log.append(step[1])
        elif kind == "append_list":
            log.append([step[1]])
        elif kind == "set" and log:
            log[step[1] % len(log)] = (step[2], step[2])
        elif kind == "mutate_inner" and log and isinstance(log[step[1] % len(log)], list):
            log[step[1] % len(log)].append(step[2])
        elif kind == "truncate":
            del log[step[1]:]
        elif kind == "alias" and log:
            log.append(log[step[1] % len(log)])  # one object twice in the log
        elif kind == "sync":
            disk.sync()
            flushed = copy.deepcopy(log)
    disk.lose_unsynced()
    assert disk.get("log", []) == flushed


def test_a_snapshot_keeps_aliasing():
    """Two names for one list on disk stay one list in the durable image."""
    shared = [1]
    disk = Disk(FsyncPolicy(policy="never"))
    disk["a"] = shared
    disk["b"] = {"same": shared}
    disk.sync()
    assert disk.durable["a"] is disk.durable["b"]["same"] and disk.durable["a"] is not shared


class _Slotted:
    __slots__ = ("count", "seen", "unset")

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[int] = []


class _Record:
    def __init__(self) -> None:
        self.state = "new"
        self.slotted = _Slotted()


def test_plain_objects_on_disk_roll_back_with_it():
    """Objects a protocol keeps on disk (slotted or not) are copied at a flush, so changes made to them after it
    are lost at a hard crash, and the rolled-back copies are independent of the image."""
    disk = Disk(FsyncPolicy(policy="never"))
    record = disk["r"] = _Record()
    record.slotted.seen.append(1)
    disk.sync()
    record.state = "done"
    record.slotted.count = 5
    record.slotted.seen.append(2)
    disk.lose_unsynced()
    back = disk["r"]
    assert back is not record and back.state == "new" and back.slotted.count == 0 and back.slotted.seen == [1]
    assert not hasattr(back.slotted, "unset")
    back.slotted.seen.append(3)
    assert disk.durable["r"].slotted.seen == [1]


def test_a_disk_copies_and_pickles_with_its_policy_and_image():
    """Copying a node's disk (a deep copy, or a pickle to another process) keeps its contents, policy and
    durable image apart."""
    disk = Disk(FsyncPolicy(policy="never"))
    disk["a"] = [1]
    disk.sync()
    disk["b"] = 2
    for other in (copy.deepcopy(disk), pickle.loads(pickle.dumps(disk))):
        assert dict(other) == {"a": [1], "b": 2} and other.policy == disk.policy and other.durable == {"a": [1]}
        other.lose_unsynced()
        assert dict(other) == {"a": [1]} and dict(disk) == {"a": [1], "b": 2}


# -- the election-safety checker ------------------------------------------------------------------------


def test_election_safety_rejects_two_leaders_in_one_term():
    """Two nodes winning term 2 is a violation with its evidence; one node winning a term twice is not."""
    good = pd.DataFrame({"time": [10.0, 20.0, 30.0], "node": ["n1", "n1", "n2"], "term": [1, 1, 2]})
    assert check_election_safety(good).ok
    bad = pd.DataFrame({"time": [10.0, 40.0, 55.5], "node": ["n1", "n2", "n3"], "term": [1, 2, 2]})
    verdict = check_election_safety(bad)
    assert not verdict.ok
    assert verdict.explanation == "two leaders in term 2: n2 at 40.0 ms and n3 at 55.5 ms"
    assert verdict.violations.to_dict("records") == [{"term": 2, "leaders": "n2,n3", "first": 40.0,
                                                      "second": 55.5}]
    with pytest.raises(ValueError, match="lacks column"):
        check_election_safety(bad.drop(columns="term"))


def test_a_raft_node_that_forgets_its_vote_votes_twice_in_one_term():
    """By hand: a node votes for n2 in term 1 and is killed; with fsync never it comes back at term 0 and also
    votes for n3 in term 1, with always it refuses."""
    for policy, second in (("always", False), ("never", True)):
        h = Harness(raft(policy))
        h.deliver("n1", RequestVote(1, "n2", 0, 0), src="n2")
        assert h.take()[-1].msg == VoteReply(1, True, False, 1)
        h.crash("n1")
        h.recover("n1")
        h.deliver("n1", RequestVote(1, "n3", 0, 0), src="n3")
        assert h.take()[-1].msg.granted is second, policy


# -- finding what breaks, over seeds ----------------------------------------------------------------------

RAFT_CRASHES = {
    "cluster": {"count": 3},
    "network": {"latency": "1ms"},
    "faults": {"random": {"crash_mtbf": "500ms", "crash_duration": {"dist": "uniform", "low": "1ms",
                                                                    "high": "300ms"}}},
    "workload": {"clients": 0},
    "protocol": {"name": "raft"},
    "run": {"duration": "3s"},
}
SEEDS = range(12)


def election_safety(policy: object, seeds: range = SEEDS) -> list[bool]:
    s = Scenario.from_dict(RAFT_CRASHES).variant({"cluster.fsync": policy})
    return [sim.run(s, seed=seed).verdicts["election_safety"].ok for seed in seeds]


@pytest.mark.slow
def test_raft_without_fsync_elects_two_leaders_in_a_term_and_with_it_never():
    """Frequent power losses on three Raft nodes: with fsync never the election-safety verdict finds two
    leaders in one term in most runs; over the same seeds and faults with always, never."""
    never = election_safety("never")
    assert sum(not ok for ok in never) >= len(SEEDS) // 2, never
    assert all(election_safety("always"))


@pytest.mark.slow
def test_raft_with_a_lazy_flush_also_breaks_election_safety():
    """Flushing every 50 ms is not enough: the vote of the last 50 ms before a power loss is forgotten."""
    assert not all(election_safety(INTERVAL, range(40)))


TWO_PC = {
    "cluster": {"count": 4},
    "network": {"latency": {"dist": "exponential", "mean": "2ms"}},
    "faults": {"random": {"crash_mtbf": "300ms", "crash_nodes": ["n2"],
                          "crash_duration": {"dist": "uniform", "low": "1ms", "high": "50ms"}}},
    "workload": {"clients": 4, "rate": 25, "target": "fixed", "target_node": "n1", "keys": 100, "timeout": "1s"},
    "protocol": {"name": "two_phase_commit", "force_time": "5ms", "settle_limit": "2s"},
    "run": {"duration": "3s"},
}


def atomicity(protocol: str, policy: object, seeds: range) -> list[pd.DataFrame]:
    s = Scenario.from_dict({**TWO_PC, "cluster": {"count": 4, "node_fsync": {"n2": policy}},
                            "protocol": {**TWO_PC["protocol"], "name": protocol}})
    return [sim.run(s, seed=seed).verdicts["atomicity"].violations for seed in seeds]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["two_phase_commit", "three_phase_commit"])
def test_a_participant_that_forgets_its_prepare_breaks_atomicity(protocol):
    """Participant n2 of 2PC (and 3PC) crashes often; with fsync never it forgets prepared transactions it
    voted yes on, which the others commit: the atomicity verdict reports them, each naming n2 as the
    participant that never applied its part. With always, over the same seeds, atomicity holds."""
    found = atomicity(protocol, "never", range(5))
    assert all(len(v) for v in found)
    for violations in found:
        assert all("n2" in (row.pending + "," + row.aborted).split(",") for row in violations.itertuples())
    assert not any(len(v) for v in atomicity(protocol, "always", range(5)))


@pytest.mark.slow
def test_a_participant_that_loses_its_commit_record_flips_to_abort():
    """With a 50 ms flush a participant can keep its prepare and lose its commit: it comes back in doubt, the
    coordinator has forgotten the finished transaction and answers abort (presumed abort), and the
    participant aborts what it had committed: the checker reports a flip."""
    found = pd.concat(atomicity("two_phase_commit", INTERVAL, range(4)))
    flips = found[found["kind"] == "flip"]
    assert len(flips) and set(flips["aborted"]) == {"n2"}
    assert all(d.startswith("n2 both committed and aborted") for d in flips["detail"])


def test_raft_nodes_whose_disks_forget_stop_instead_of_breaking_the_run():
    """Raft with snapshots and fsync never, over power losses: a follower asked to overwrite an entry it
    applied, or a leader told of a match beyond its own log, records a "raft panic" and stops (as etcd's raft
    panics) instead of raising; the run ends normally and says why."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "raft-compaction.toml").variant({
        "cluster.fsync": "never", "run.duration": "4s", "faults.random.crash_mtbf": "700ms",
        "faults.random.crash_duration": {"dist": "uniform", "low": "1ms", "high": "300ms"}})
    events = pd.concat([sim.run(s, seed=seed).node_events for seed in range(3)])
    panics = events[events["event"].str.startswith("raft panic: ")]
    assert len(panics), "no run came to a panic: the test no longer reaches the broken invariant"
    assert panics["event"].str.contains("overwrites committed entry|beyond this leader's log").all()


def test_a_broker_without_fsync_loses_its_persistent_messages_at_a_power_loss():
    """The broker-restart example with the restart made a kill: with always the broker keeps its persistent
    messages and loses only the others; with never it loses those too, and still comes back and runs on."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "rabbitmq-broker-restart.toml").variant(
        {"faults.schedule[0].clean": False})
    always, never = (sim.run(s.variant({"cluster.fsync": p})).summary["messaging.lost"] for p in ("always", "never"))
    assert never > always


# -- the example scenarios ----------------------------------------------------------------------------------


def test_the_raft_example_finds_two_leaders_and_the_same_run_with_fsync_does_not():
    """experiments/scenarios/raft-no-fsync.toml, at its own seed: two leaders in one term, and nodes that applied
    different entries at one index (forgotten entries replaced); with fsync always the same faults leave one
    leader per term and one entry per index (and its report says so)."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "raft-no-fsync.toml")
    broken = sim.run(s)
    verdict = broken.verdicts["election_safety"]
    assert not verdict.ok and verdict.explanation.startswith("two leaders in term ")
    assert any("VIOLATED: two leaders in term" in line for line in s.protocol.report(broken))
    applied = broken.verdicts["state_machine_safety"]
    assert not applied.ok and applied.explanation.startswith("two entries applied at index ")
    assert any("state machine safety: VIOLATED: two entries applied" in line for line in s.protocol.report(broken))
    fixed = sim.run(s.variant({"cluster.fsync": "always"}))
    assert fixed.verdicts["election_safety"].ok and fixed.verdicts["state_machine_safety"].ok
    assert fixed.verdicts["state_machine_safety"].applies > 0


def test_the_two_phase_example_breaks_atomicity_only_without_fsync():
    """experiments/scenarios/two-phase-commit-no-fsync.toml: participant n2 does not fsync; atomicity breaks
    (the client was told committed, the participants aborted); with always it holds."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "two-phase-commit-no-fsync.toml")
    violations = sim.run(s).verdicts["atomicity"].violations
    assert "client" in set(violations["kind"])
    assert sim.run(s.variant({"cluster.node_fsync": {}})).verdicts["atomicity"].ok


# -- defaults unchanged -------------------------------------------------------------------------------------------


def test_without_a_hard_crash_every_policy_runs_alike():
    """The raft example with its crash made clean: nothing is lost under any policy, so never, a 7 ms flush
    and always give the same history and leaders (flushing adds events but changes no decision)."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "raft-leader-crash.toml").variant(
        {"faults.schedule[0].clean": True, "run.duration": "6s"})
    runs = [sim.run(s.variant({"cluster.fsync": p})) for p in ("always", "never", {"policy": "interval",
                                                                                   "interval": "7ms"})]
    for other in runs[1:]:
        pd.testing.assert_frame_equal(runs[0].history, other.history)
        pd.testing.assert_frame_equal(runs[0].tables["leaders"], other.tables["leaders"])


@pytest.mark.parametrize("name, updates", [
    ("rabbitmq-broker-restart", {}),  # a clean broker restart: it flushes first
    ("transactional-outbox", {"faults.schedule[0].clean": True}),  # and producer process crashes (restart_after)
])
def test_clean_restarts_and_process_crashes_lose_nothing_under_any_policy(name, updates):
    """A clean stop flushes and a process crash keeps the page cache: with no power loss, a broker and producers
    that never fsync give exactly the run they give with always."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / f"{name}.toml").variant(updates)
    always, never = (sim.run(s.variant({"cluster.fsync": p})) for p in ("always", "never"))
    assert always.summary.keys() == never.summary.keys()
    assert {k: v for k, v in always.summary.items() if k != "runtime"} == \
           {k: v for k, v in never.summary.items() if k != "runtime"}
    for table in always.tables:
        pd.testing.assert_frame_equal(always.tables[table], never.tables[table])

