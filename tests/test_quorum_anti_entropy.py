"""Dynamo-mode anti-entropy: Merkle-tree exchanges converge replicas with no reads, costing what differs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

import sim
from sim.replication.quorum import LeafEntries, QuorumNode, TreeLevel, ring_position
from sim.runner import build_world
from sim.scenario import Scenario

LEAVES = 16


def writes_only(**protocol: Any) -> Scenario:
    """Dynamo N=3 of 5, W=1, 5% of all messages lost, writes only: replicas miss writes and nothing reads."""
    return Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "uniform", "low": 0.5, "high": 2.0}, "loss": 0.05},
        "workload": {"clients": 5, "rate": 40, "keys": 30, "read_fraction": 0.0, "timeout": "300ms"},
        "protocol": {"name": "quorum", "replicas": 3, "r": 1, "w": 1, "merkle_leaves": LEAVES, **protocol},
        "run": {"duration": "3s", "settle": "3s", "sample_interval": "20ms"},
    })


def test_replicas_converge_with_writes_only():
    """Over 8 seeds: without anti-entropy the replicas still disagree at the end of every run; with a Merkle
    exchange every 50 ms or every 200 ms they come to agree after the last write and stay so, sooner with the
    shorter interval (one-sided Mann-Whitney test, p < 0.01)."""
    times: dict[str, list[float]] = {}
    for interval in ("50ms", "200ms"):
        for seed in range(8):
            on = sim.run(writes_only(anti_entropy_interval=interval), seed).summary
            assert on["convergence.converged"] and on["convergence.divergent_keys_at_end"] == 0
            assert on["protocol.anti_entropy_repaired"] > 0
            times.setdefault(interval, []).append(on["convergence.after_quiesce"])
    assert stats.mannwhitneyu(times["50ms"], times["200ms"], alternative="less").pvalue < 0.01, times
    for seed in range(8):
        off = sim.run(writes_only(), seed).summary
        assert off["convergence.divergent_keys_at_end"] > 0 and not off["convergence.converged"]
        assert off["protocol.anti_entropy_messages"] == 0


def synced_world(keys: int, seed: int = 1) -> tuple[Any, dict[str, QuorumNode]]:
    """A started world, no clients, anti-entropy every 10 s, every replica already holding every one of ``keys``."""
    s = Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": "1ms"},
        "workload": {"clients": 0},
        "protocol": {"name": "quorum", "replicas": 3, "anti_entropy_interval": "10s", "merkle_leaves": LEAVES},
        "run": {"duration": "60s"},
    })
    world = build_world(s, seed)
    nodes = {name: world.nodes[name] for name in s.nodes}
    for key in range(keys):
        for name in s.protocol.replicas_for(key, s.nodes):
            nodes[name].disk.setdefault("data", {})[key] = ((1.0, "n1", key + 1), f"v{key}")
    world.start()
    return world, nodes


def one_exchange(world: Any, node: QuorumNode) -> dict[str, int]:
    """Run one exchange started by ``node`` to quiescence; the messages, hashes and entries it cost."""
    before = {k: sum(getattr(n, k) for n in world.nodes.values() if isinstance(n, QuorumNode))
              for k in ("ae_messages", "ae_hashes", "ae_entries", "ae_repaired")}
    node._anti_entropy()
    world.env.run(until=world.env.now + 100.0)  # a round trip per level is a few ms; the next timer is seconds off
    return {k: sum(getattr(n, k) for n in world.nodes.values() if isinstance(n, QuorumNode)) - v
            for k, v in before.items()}


@pytest.mark.parametrize("keys", [500, 5000])
def test_replicas_in_sync_exchange_one_hash(keys):
    """Two replicas that agree settle it with the root hash: one message, one hash, no entries, at any key count."""
    world, nodes = synced_world(keys)
    assert one_exchange(world, nodes["n1"]) == {"ae_messages": 1, "ae_hashes": 1, "ae_entries": 0, "ae_repaired": 0}


def test_cost_follows_the_differences_not_the_key_count():
    """d stale keys in one range cost at most 2d hashes per tree level below the root plus the root, and the
    entries of their leaves, the same at 500 and 5000 keys in hashes, while a full digest would be the key count;
    every stale key is repaired."""
    depth = int(math.log2(LEAVES))
    for keys in (500, 5000):
        for d in (1, 3):
            world, nodes = synced_world(keys)
            n1 = nodes["n1"]
            span, peer = n1._pairs[n1._next_pair]
            stale = [k for k in range(keys) if ring_position(k, 5) == span][:d]
            for key in stale:  # the peer missed the latest write of d keys
                nodes[peer].data[key] = ((0.5, "n1", 0), "old")
                nodes[peer]._build_trees()
            cost = one_exchange(world, n1)
            assert cost["ae_repaired"] == d and all(nodes[peer].data[k][1] == f"v{k}" for k in stale)
            assert cost["ae_messages"] <= depth + 3
            assert cost["ae_hashes"] <= 1 + 2 * d * depth
            per_leaf = keys / 5 / LEAVES
            assert cost["ae_entries"] <= 2 * d * 3 * per_leaf  # both sides' entries of d leaves, 3x the mean leaf
            assert cost["ae_hashes"] + cost["ae_entries"] < keys / 5  # a digest would list every key of the range


def test_an_exchange_repairs_both_ways():
    """Each side ends with the newer version of every key: entries flow to whichever replica is behind."""
    world, nodes = synced_world(200)
    n1 = nodes["n1"]
    span, peer = n1._pairs[n1._next_pair]
    keys = [k for k in range(200) if ring_position(k, 5) == span][:2]
    n1.data[keys[0]] = ((9.0, "n2", 1), "n1-newer")
    nodes[peer].data[keys[1]] = ((9.0, "n2", 2), "peer-newer")
    n1._build_trees()
    nodes[peer]._build_trees()
    one_exchange(world, n1)
    for node in (n1, nodes[peer]):
        assert node.data[keys[0]][1] == "n1-newer" and node.data[keys[1]][1] == "peer-newer"


def test_trees_follow_writes_incrementally():
    """The leaf hashes kept up to date write by write equal the ones rebuilt from the data afterwards."""
    world, nodes = synced_world(300)
    rng = np.random.default_rng(3)
    n = nodes["n1"]
    for i in range(200):
        key = int(rng.integers(0, 300))
        n._store(key, (2.0 + i, "n2", i), i)
    incremental = {span: list(leaves) for span, leaves in n._trees.items()}
    n._build_trees()
    assert incremental == n._trees


def test_message_kinds_and_settings_are_checked():
    """The messages are of kind anti_entropy; a non-power-of-two leaf count or anti-entropy in abd mode is an
    error naming the field."""
    assert TreeLevel.kind == LeafEntries.kind == "anti_entropy"
    with pytest.raises(sim.ScenarioError, match="protocol.merkle_leaves"):
        writes_only(merkle_leaves=48)
    with pytest.raises(sim.ScenarioError, match="protocol.anti_entropy_interval"):
        writes_only(mode="abd", r=2, w=2, anti_entropy_interval="1s")
    with pytest.raises(sim.ScenarioError, match="protocol.anti_entropy_interval"):
        writes_only(anti_entropy_interval="-1s")


def test_the_example_scenario_converges_only_with_anti_entropy():
    """experiments/scenarios/dynamo-anti-entropy.toml: after the heal the replicas come to agree through Merkle
    exchanges alone (writes only, no read repair, no hints); with anti_entropy_interval = "inf" they never do."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "dynamo-anti-entropy.toml"
    s = Scenario.from_toml(path)
    on = sim.run(s).summary
    assert on["convergence.healed"] and on["convergence.converged"] and on["convergence.divergent_keys_at_end"] == 0
    assert on["protocol.anti_entropy_repaired"] > 0 and on["protocol.read_repairs"] == on["protocol.handoffs"] == 0
    off = sim.run(s.variant({"protocol.anti_entropy_interval": "inf"})).summary
    assert not off["convergence.converged"] and off["convergence.divergent_keys_at_end"] > 0
