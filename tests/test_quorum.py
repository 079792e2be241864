"""Quorum replication (sim/replication/quorum.py): placement, modes, availability, staleness, handoff."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import sim
from sim.analysis import wars_t_visibility
from sim.checkers import check_linearizable
from sim.kernel.messages import ClientReply, ClientRequest
from sim.kernel.node import Endpoint
from sim.kernel.world import World
from sim.replication.quorum import QuorumConfig, newer, preference_ring
from sim.runner import build_world
from sim.scenario import Scenario, ScenarioError


def scenario(**sections: Any) -> Scenario:
    """A quorum scenario on five nodes; ``sections`` replace whole scenario sections."""
    data: dict[str, Any] = {
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "exponential", "mean": 1}},
        "protocol": {"name": "quorum"},
        "run": {"duration": "1s"},
    }
    data.update(sections)
    return Scenario.from_dict(data)


def started_world(s: Scenario) -> World:
    """A world whose nodes, clients and faults are started but not yet run."""
    world = build_world(s)
    for node in world.nodes.values():
        node.start()
    for client in world.clients:
        client.start()
    world.injector.start()
    return world


def stale_replicas(world: World) -> int:
    """How many (key, preference-list replica) pairs hold an older version than another replica of the key."""
    cfg, nodes = world.scenario.protocol, world.scenario.nodes
    count = 0
    for key in range(world.scenario.workload.keys):
        versions = [(world.nodes[n].stored(key) or (None, None))[0] for n in cfg.replicas_for(key, nodes)]
        best = None
        for v in versions:
            if newer(v, best):
                best = v
        count += sum(newer(best, v) for v in versions)
    return count


def new_old_inversions(history: pd.DataFrame) -> list[tuple[int, int]]:
    """Pairs of ok reads (r1, r2), r1 before r2, where r2 returns a value overwritten before r1 began.

    r2's value b was written (or is the initial None) and that write completed before r1
    started, yet r1 returned something else: the register moved past b before r1, so b
    coming back in the later r2 is a violation no checker is needed to see.
    """
    ok = history[history["outcome"] == "ok"]
    found = []
    for _, ops in ok.groupby("key"):
        written = {w.value: w.complete for w in ops[ops["op"] == "write"].itertuples()}
        written[None] = -np.inf
        reads = list(ops[ops["op"] == "read"].itertuples())
        for r1 in reads:
            for r2 in reads:
                if (r2.invoke > r1.complete and r2.value != r1.value and r2.value in written
                        and written[r2.value] < r1.invoke):
                    found.append((r1.op_id, r2.op_id))
    return found


def read_after_write_pairs(history: pd.DataFrame, client: str = "c0") -> pd.DataFrame:
    """A closed-loop client's ok reads that directly follow its ok write, with that write's value."""
    ops = history[history["client"] == client].sort_values("invoke").reset_index(drop=True)
    prev, nxt = ops.iloc[:-1].reset_index(drop=True), ops.iloc[1:].reset_index(drop=True)
    keep = ((prev["op"] == "write") & (prev["outcome"] == "ok") & (nxt["op"] == "read")
            & (nxt["outcome"] == "ok") & (nxt["key"] == prev["key"]))
    return pd.DataFrame({
        "gap": (nxt["invoke"] - prev["complete"])[keep].to_numpy(),
        "written": prev["value"][keep].to_numpy(),
        "read": nxt["value"][keep].to_numpy(),
    })


class Probe(Endpoint):
    """A hand-driven client: sends requests and records the replies."""

    def __init__(self, world: World, home: str) -> None:
        super().__init__(world, "probe", home)
        self.replies: dict[int, ClientReply] = {}
        world.network.attach(self)

    def handle_ClientReply(self, msg: ClientReply, src: str) -> None:
        self.replies[msg.op_id] = msg


# -- configuration -------------------------------------------------------------------------


def test_preference_list_is_a_ring_over_the_node_order():
    """replicas_for walks the ring from key mod len(nodes), in the scenario's node order."""
    cfg = scenario(protocol={"name": "quorum", "replicas": 3}).protocol
    nodes = ("a", "b", "c", "d", "e")
    assert cfg.replicas_for(0, nodes) == ("a", "b", "c")
    assert cfg.replicas_for(3, nodes) == ("d", "e", "a")
    assert cfg.replicas_for(9, nodes) == ("e", "a", "b")
    # Other keys hash with CRC-32, the same in every process (Python's hash() of a str is not).
    start = zlib.crc32(repr("k").encode()) % 5
    assert cfg.replicas_for("k", nodes) == (nodes + nodes)[start : start + 3]


@given(key=st.integers(min_value=0, max_value=10**9), count=st.integers(min_value=1, max_value=9), data=st.data())
def test_preference_list_is_distinct_nodes_and_a_prefix_of_the_ring(key, count, data):
    """Any key: the ring is all nodes rotated to key mod n, and the preference list its first N entries."""
    nodes = tuple(f"n{i}" for i in range(count))
    replicas = data.draw(st.integers(min_value=1, max_value=count))
    ring = preference_ring(key, nodes)
    assert ring == nodes[key % count :] + nodes[: key % count]
    preference = QuorumConfig(replicas=replicas, r=1, w=1).replicas_for(key, nodes)
    assert preference == ring[:replicas] and len(set(preference)) == replicas


@pytest.mark.parametrize(
    ("protocol", "path"),
    [
        ({"r": 4}, "protocol.r"),
        ({"w": 0}, "protocol.w"),
        ({"replicas": 6, "r": 1, "w": 1}, "protocol.replicas"),
        ({"mode": "abd", "read_repair": True}, "protocol.read_repair"),
        ({"replicas": 5, "sloppy_quorum": True}, "protocol.sloppy_quorum"),
        ({"sloppy_quorum": True, "handoff_timeout": 600}, "protocol.handoff_timeout"),
        ({"mode": "paxos"}, "protocol.mode"),
    ],
)
def test_bad_configs_name_the_field(protocol, path):
    """Impossible quorums and options that would do nothing raise ScenarioError naming the field."""
    with pytest.raises(ScenarioError) as err:
        scenario(protocol={"name": "quorum", **protocol})
    assert err.value.path == path


# -- abd: linearizable -------------------------------------------------------------------


@pytest.mark.slow
def test_abd_is_linearizable_under_random_partitions_and_crashes():
    """abd with N=3, R=W=2 on 5 nodes gives linearizable histories in 100 seeds of random faults."""
    s = scenario(
        network={"latency": {"dist": "exponential", "mean": 1}, "duplicate": 0.02, "reorder": 0.05,
                 "reorder_delay": {"dist": "exponential", "mean": 5}},
        faults={"random": {"partition_mtbf": 300, "partition_duration": {"dist": "exponential", "mean": 150},
                           "crash_mtbf": 2000, "crash_duration": {"dist": "exponential", "mean": 150}}},
        workload={"clients": 5, "mode": "closed", "keys": 2, "target": "random", "timeout": 60},
        protocol={"name": "quorum", "mode": "abd", "replicas": 3, "r": 2, "w": 2, "request_timeout": 30},
        run={"duration": "500ms", "sample_interval": "50ms"},
    )
    faults = write_backs = unknown = checked = 0
    for seed in range(100):
        # The world itself, not sim.run: the run's metrics are not needed here and cost as much again.
        world = build_world(s, seed=seed)
        world.run()
        history = world.history.to_frame()
        verdict = check_linearizable(history)
        assert verdict.linearizable, f"seed {seed}: {verdict.explanation}\n{verdict.counterexample}"
        checked += verdict.ops_checked
        faults += len(world.faults)
        write_backs += s.protocol.summary(world, world.state)["protocol.write_backs"]
        unknown += int((history["outcome"] != "ok").sum())
    # The histories were not trivial: faults happened, reads wrote back, some operations failed or timed out.
    assert faults > 200 and write_backs > 500 and unknown > 500 and checked > 20_000


def test_clock_skew_orders_dynamo_writes_wrongly_but_not_abd():
    """A write coordinated by a node whose clock is 1 s behind is lost in dynamo mode, kept in abd."""
    returned = {}
    for mode in ("dynamo", "abd"):
        s = scenario(
            cluster={"count": 3},
            faults={"schedule": [{"kind": "clock_skew", "node": "n2", "offset": "-1s"}]},
            workload={"clients": 0},
            protocol={"name": "quorum", "mode": mode},
        )
        world = started_world(s)
        probe = Probe(world, "n1")
        steps = [("n1", ClientRequest(1, "write", 0, 101)), ("n2", ClientRequest(2, "write", 0, 102)),
                 ("n3", ClientRequest(3, "read", 0))]
        for i, (node, request) in enumerate(steps):
            probe.send(node, request)
            world.env.run(until=100.0 * (i + 1))
            assert probe.replies[request.op_id].ok
        returned[mode] = probe.replies[3].value
    assert returned == {"dynamo": 101, "abd": 102}


# -- dynamo: new-old inversions -----------------------------------------------------------


def test_dynamo_without_write_back_shows_new_old_inversions():
    """A seed search finds a dynamo history (R+W>N) that is not linearizable; abd on it is."""
    s = scenario(
        network={"latency": {"dist": "mixture", "components": [
            {"weight": 0.8, "dist": "exponential", "mean": 1},
            {"weight": 0.2, "dist": "constant", "value": 15}]}},
        workload={"clients": 6, "mode": "closed", "keys": 1, "read_fraction": 0.8, "target": "random"},
        protocol={"name": "quorum", "mode": "dynamo", "replicas": 3, "r": 2, "w": 2},
        run={"duration": "300ms"},
    )
    found = None
    for seed in range(40):
        history = sim.run(s, seed).history
        verdict = check_linearizable(history)
        if not verdict.linearizable and new_old_inversions(history):
            found = seed
            break
    assert found is not None, "no new-old inversion in 40 seeds"
    assert not verdict.linearizable and verdict.counterexample is not None
    abd = s.variant({"protocol.mode": "abd"})
    assert check_linearizable(sim.run(abd, found).history).linearizable


# -- CAP: majority quorum during a partition -------------------------------------------------


@pytest.mark.parametrize("mode", ["dynamo", "abd"])
def test_majority_quorum_serves_only_the_majority_side(mode):
    """N=5, R=W=3 with n4, n5 cut off: the minority side's availability is 0, the majority's 1."""
    s = scenario(
        faults={"schedule": [{"kind": "split", "minority": 2, "pick": "last", "start": "500ms"}]},
        workload={"clients": 10, "mode": "closed", "think_time": 5, "timeout": 200},
        protocol={"name": "quorum", "mode": mode, "replicas": 5, "r": 3, "w": 3, "request_timeout": 100},
        run={"duration": "2s"},
    )
    result = sim.run(s, 7)
    assert result.summary["ops.minority"] > 20 and result.summary["ops.majority"] > 500
    assert result.summary["availability.minority"] == 0.0
    assert result.summary["availability.majority"] == 1.0
    # Minority coordinators refuse reads (fail). A dynamo write was sent to the replicas, so it
    # is never refused (the client times out: info); an abd write fails in its version query,
    # before anything is written.
    minority = result.history[result.history["side"] == "minority"]
    assert set(minority.loc[minority["op"] == "read", "outcome"]) == {"fail"}
    assert set(minority.loc[minority["op"] == "write", "outcome"]) == {"info" if mode == "dynamo" else "fail"}


# -- PBS: partial quorums -------------------------------------------------------------------


def wars_layouts(t: float) -> list[tuple[str, dict[str, Any], tuple[Any, Any]]]:
    """Two ways to measure WARS exactly: the coordinator as a replica, or outside the replica set.

    In both, the client sits next to its coordinator (zero latency) and runs a closed loop
    with think time ``t``, so a read that follows a write starts ``t`` ms after the commit.
    Returns (name, scenario sections, (W/R distribution, A/S distribution)).
    """
    exp3 = {"dist": "exponential", "mean": 3}
    # n1 coordinates and holds key 0 with n2, n3; every link, n1 -> n1 included, has one latency.
    inside = {
        "cluster": {"count": 3},
        "network": {"latency": exp3, "client_latency": 0},
    }
    # n4 coordinates key 0 held by n1..n3; requests and replies have different latencies.
    request = {"dist": "pareto", "shape": 1.5, "scale": 1}
    reply = {"dist": "exponential", "mean": 0.5}
    links = []
    for n in ("n1", "n2", "n3"):
        links.append({"src": "n4", "dst": n, "symmetric": False, "latency": request})
        links.append({"src": n, "dst": "n4", "symmetric": False, "latency": reply})
    outside = {"cluster": {"count": 4}, "network": {"latency": 0, "links": links}}
    workload = {"clients": 1, "mode": "closed", "keys": 1, "read_fraction": 0.5, "think_time": t}
    return [
        ("inside", {**inside, "workload": {**workload, "homes": ["n1"]}}, (exp3, exp3)),
        ("outside", {**outside, "workload": {**workload, "homes": ["n4"]}}, (request, reply)),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "t"), [("inside", 0.0), ("outside", 1.0)])
def test_partial_quorum_staleness_matches_wars(layout, t):
    """N=3, R=W=1: the stale fraction of reads t ms after a commit matches the WARS Monte-Carlo."""
    _, sections, (wr, as_) = next(x for x in wars_layouts(t) if x[0] == layout)
    s = scenario(**sections, protocol={"name": "quorum", "replicas": 3, "r": 1, "w": 1}, run={"duration": "15s"})
    pairs = read_after_write_pairs(sim.run(s, 11).history)
    assert len(pairs) > 800 and np.allclose(pairs["gap"], t)
    stale = int((pairs["read"] != pairs["written"]).sum())
    wars = wars_t_visibility(3, 1, 1, [t], wr, as_, wr, as_, trials=200_000, rng=np.random.default_rng(5))
    p_stale = 1.0 - float(wars["p_consistent"].iloc[0])
    assert 0.05 < p_stale < 0.6  # a regime where the comparison means something
    assert stats.binomtest(stale, len(pairs), p_stale).pvalue > 0.001, (stale, len(pairs), p_stale)


def test_strict_quorum_abd_never_reads_stale():
    """The WARS set-up with N=3, R=W=2 in abd mode: no read right after a write misses it."""
    for _, sections, _ in wars_layouts(0.0):
        s = scenario(**sections, protocol={"name": "quorum", "mode": "abd", "replicas": 3, "r": 2, "w": 2},
                     run={"duration": "5s"})
        pairs = read_after_write_pairs(sim.run(s, 3).history)
        assert len(pairs) > 100
        assert (pairs["read"] == pairs["written"]).all()


# -- sloppy quorum and hinted handoff ---------------------------------------------------------


def test_sloppy_quorum_accepts_writes_on_both_sides_and_converges_after_heal():
    """With hinted handoff both partition sides accept writes; after the heal hints replay and replicas agree."""
    sections = dict(
        faults={"schedule": [{"kind": "partition", "start": 300, "end": 2100,
                              "groups": [["n1", "n4"], ["n2", "n3", "n5"]]}]},
        workload={"clients": 2, "homes": ["n4", "n5"], "mode": "closed", "keys": 2, "think_time": 5, "timeout": 300},
        run={"duration": "2s"},
    )
    protocol = {"name": "quorum", "replicas": 3, "r": 2, "w": 2, "request_timeout": 200,
                "handoff_timeout": 20, "hint_interval": 50}
    s = scenario(**sections, protocol={**protocol, "sloppy_quorum": True})
    world = started_world(s)
    world.env.run(until=2050)  # clients stopped at 2 s; the partition is still on
    nodes = s.nodes
    divergent = [k for k in range(2)
                 if len({world.nodes[n].replica_state().get(k) for n in s.protocol.replicas_for(k, nodes)}) > 1]
    held = sum(world.nodes[n].pending_hints() for n in nodes)
    world.env.run(until=2600)

    history = world.history.to_frame()
    during = history[(history["invoke"] >= 300) & (history["complete"] < 2000) & (history["op"] == "write")]
    for side in ("minority", "majority"):
        assert (during.loc[during["side"] == side, "outcome"] == "ok").sum() > 20, side
    assert divergent and held > 0  # the sides really disagreed, and hints waited for the heal
    for key in range(2):
        replicas = s.protocol.replicas_for(key, nodes)
        states = [world.nodes[n].replica_state().get(key) for n in replicas]
        assert states[0] is not None and states.count(states[0]) == len(states), (key, states)
    summary = s.protocol.summary(world, world.state)
    assert summary["protocol.hints_pending"] == 0 and summary["protocol.hints_delivered"] > 0
    assert all(not world.nodes[n].hints for n in nodes)

    strict = sim.run(scenario(**sections, protocol=protocol), 1)
    assert strict.summary["availability.minority"] == 0.0  # without handoff the minority refuses


# -- read repair ---------------------------------------------------------------------------------


def test_read_repair_reduces_divergence():
    """After a replica missed writes while down, reads with read repair bring it up to date."""
    counts = {}
    for read_repair in (False, True):
        s = scenario(
            faults={"schedule": [{"kind": "crash", "node": "n3", "start": 100, "end": 1000}]},
            workload={"clients": 2, "homes": ["n1", "n2"], "mode": "closed", "keys": 60, "read_fraction": 0.85,
                      "think_time": 2, "timeout": 200},
            protocol={"name": "quorum", "replicas": 3, "r": 2, "w": 2, "read_repair": read_repair},
            run={"duration": "2s", "settle": 100},
        )
        total = repairs = 0
        for seed in range(3):
            world = build_world(s, seed=seed)
            world.run()
            total += stale_replicas(world)
            repairs += s.protocol.summary(world, world.state)["protocol.read_repairs"]
        counts[read_repair] = (total, repairs)
    (without, no_repairs), (with_repair, repairs) = counts[False], counts[True]
    assert no_repairs == 0 and repairs > 10
    assert without >= 10 and with_repair * 5 <= without, counts


def test_same_seed_same_history():
    """Two runs of a sloppy, read-repairing scenario with the same seed give identical histories."""
    s = scenario(
        faults={"random": {"partition_mtbf": 200, "crash_mtbf": 1000}},
        workload={"clients": 4, "target": "random", "rate": 200},
        protocol={"name": "quorum", "sloppy_quorum": True, "read_repair": True, "handoff_timeout": 10},
        run={"duration": "500ms"},
    )
    a, b = sim.run(s, 5), sim.run(s, 5)
    pd.testing.assert_frame_equal(a.history, b.history)
    assert a.summary["protocol.handoffs"] == b.summary["protocol.handoffs"]


def test_requests_overtaken_in_the_network_are_still_served():
    """An open-loop client's request that arrives after its next one is served, not dropped as a duplicate."""
    s = sim.Scenario.from_dict({
        "cluster": {"count": 5}, "network": {"latency": {"dist": "exponential", "mean": 1}},
        "protocol": {"name": "quorum", "replicas": 5, "r": 3, "w": 3, "mode": "abd"},
        "workload": {"clients": 10, "rate": 100, "keys": 5}, "run": {"duration": "5s", "seed": 3},
    })
    r = sim.run(s, seed=3)
    assert r.summary["ops"] > 4000 and r.summary["info"] == 0 and r.summary["fail"] == 0
