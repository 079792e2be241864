"""Divergent keys sorted into lagging (one history, some replicas behind) and conflicting (diverged)."""

from __future__ import annotations

from typing import Any

import pytest

import sim
from sim.checkers.convergence import divergence_kinds, log_versions, version_leq

ALL = ("a", "b", "c")


def kinds(states: dict[str, dict[Any, Any]], versions: dict[str, Any], keys=(1,), holders=ALL) -> dict[str, list]:
    return divergence_kinds(states, versions, lambda key: holders, keys)


def test_version_order_is_componentwise():
    """a <= b when b has every origin of a with a counter at least as high; {} is below everything."""
    assert version_leq({}, {"n1": 1})
    assert version_leq({"n1": 1}, {"n1": 2, "n2": 1})
    assert not version_leq({"n1": 1, "n3": 1}, {"n1": 2, "n2": 1})
    assert not version_leq({"n1": 3}, {"n1": 2})
    assert version_leq({"abd": (2, "n1", 7)}, {"abd": (3, "n2", 1)})


def test_replicas_behind_on_one_history_lag():
    """Three values of one history (each version <= the next) are lagging, not conflicting."""
    states = {"a": {1: "x"}, "b": {1: "y"}, "c": {1: "z"}}
    versions = {"a": {1: ({"n1": 1},)}, "b": {1: ({"n1": 2},)}, "c": {1: ({"n1": 2, "n2": 1},)}}
    assert kinds(states, versions) == {"lagging": [1], "conflicting": [], "unclassified": []}


def test_a_replica_without_the_key_lags():
    """A replica that never received the key holds the empty version: it is behind, not in conflict."""
    states = {"a": {1: "x"}, "b": {}, "c": {1: "x"}}
    versions = {"a": {1: ({"n1": 1},)}, "b": {}, "c": {1: ({"n1": 1},)}}
    assert kinds(states, versions)["lagging"] == [1]


def test_concurrent_versions_conflict():
    """Each side wrote without seeing the other's write: neither version is <= the other."""
    states = {"a": {1: "x"}, "b": {1: "y"}, "c": {1: "y"}}
    versions = {"a": {1: ({"n1": 1},)}, "b": {1: ({"n2": 1},)}, "c": {1: ({"n2": 1},)}}
    assert kinds(states, versions)["conflicting"] == [1]
    # one replica behind on top of the conflict: still conflicting
    states["c"] = {}
    versions["c"] = {}
    assert kinds(states, versions)["conflicting"] == [1]


def test_siblings_are_a_conflict():
    """A replica keeping two concurrent siblings conflicts even if the other replica's single value is newer
    than one of them."""
    states = {"a": {1: frozenset({"x", "y"})}, "b": {1: "x"}}
    versions = {"a": {1: ({"n1": 1}, {"n2": 1})}, "b": {1: ({"n1": 1},)}}
    assert kinds(states, versions, holders=("a", "b"))["conflicting"] == [1]


def test_without_versions_a_key_is_unclassified_and_dead_or_foreign_nodes_do_not_count():
    """A holder that gives no version leaves the key unclassified; nodes that are down or do not hold
    the key's replica are ignored."""
    states = {"a": {1: "x", 2: "p"}, "b": {1: "y", 2: "q"}}
    versions = {"a": {1: ({"n1": 1},), 2: ({"n1": 1},)}, "b": None}
    out = kinds(states, versions, keys=(1, 2), holders=("a", "b", "dead"))
    assert out == {"lagging": [], "conflicting": [], "unclassified": [1, 2]}
    versions["b"] = {1: ({"n1": 2},)}  # b gives a version for key 1 only
    out = kinds(states, versions, keys=(1, 2), holders=("a", "b", "dead"))
    assert out == {"lagging": [1], "conflicting": [], "unclassified": [2]}


def test_log_versions_tell_a_prefix_from_a_diverged_log():
    """Log prefixes counted per epoch: a shorter prefix is <=, a log that diverged after a split brain is not."""
    common = [(0, 1), (0, None), (0, 2)]
    behind = log_versions(common[:1])
    ahead = log_versions([*common, (1, 1)])
    split = log_versions([*common, (0, 1)])  # the old primary went on in epoch 0
    assert behind[1] == {0: 1} and ahead[1] == {0: 3, 1: 1} and ahead[2] == {0: 3}
    assert version_leq(behind[1], ahead[1])
    assert not version_leq(split[1], ahead[1]) and not version_leq(ahead[1], split[1])
    assert version_leq(split[2], ahead[2]) and version_leq(ahead[2], split[2])  # key 2: same entry


def scenario(protocol: dict[str, Any]) -> sim.Scenario:
    """Five nodes, {n4, n5} cut off from 1 s to 2.5 s, 3 s in all."""
    return sim.Scenario.from_dict({
        "cluster": {"count": 5},
        "faults": {"schedule": [{"kind": "partition", "start": "1s", "end": "2.5s", "groups": [["n4", "n5"]]}]},
        "workload": {"clients": 10, "rate": 20, "keys": 6, "timeout": "300ms"},
        "protocol": protocol,
        "run": {"duration": "3s", "seed": 3},
    })


@pytest.mark.parametrize("protocol, conflicts", [
    ({"name": "raft"}, False),
    ({"name": "quorum", "replicas": 5, "r": 3, "w": 3, "mode": "abd"}, False),
    ({"name": "eventual", "conflict": "lww"}, True),
    ({"name": "eventual", "conflict": "vv"}, True),
    ({"name": "primary_backup", "replication": "async", "primary": "elected"}, True),
])
def test_consistent_protocols_only_lag_and_the_others_conflict(protocol, conflicts):
    """Under the same partition the minority of Raft and of the ABD quorum only lags; eventual
    consistency and a split-brain primary-backup hold conflicting versions; every divergent
    key is classified."""
    d = sim.run(scenario(protocol)).divergence
    assert (d["lagging"] + d["conflicting"] == d["divergent"]).all()
    assert d["lagging"].max() > 0
    assert bool(d["conflicting"].max() > 0) is conflicts


def test_raft_versions_are_its_applied_log_prefixes():
    """Raft's incremental versions equal log_versions over the applied log (writes that took effect)."""
    result = sim.run(scenario({"name": "raft"}), keep_world=True)
    for node in result.world.nodes.values():
        if not node.alive:
            continue
        seen: set[int] = set()
        entries = []
        for e in node.log[1:node.last_applied + 1]:
            sets = e.op == "write" and e.op_id not in seen
            seen.add(e.op_id)
            entries.append((e.term, e.key if sets else None))
        want = log_versions(entries)
        assert node.replica_versions(list(want)) == {k: (v,) for k, v in want.items()}
        assert want  # something was written
