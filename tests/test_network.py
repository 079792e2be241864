"""The network: loss, duplication and reordering rates, partitions, crashed endpoints."""

from __future__ import annotations

import pytest
from conftest import Note
from scipy.stats import binomtest


def _blast(world, src, dst, n, gap=0.01):
    """Send n notes from src to dst, one every ``gap`` ms, then run to the end."""
    node = world.nodes[src]
    for i in range(n):
        node.set_timer(i * gap, node.send, dst, Note(i))
    world.env.run()


def _received(world, dst=None):
    return [row for row in world.state if dst is None or row[2] == dst]


@pytest.mark.parametrize("loss", [0.05, 0.3])
def test_measured_loss_matches_probability(make_world, loss):
    """Configured loss p: delivered count is consistent with Binomial(n, 1-p) (99.9% CI)."""
    n = 20_000
    world = make_world(2, network={"loss": loss})
    _blast(world, "n1", "n2", n)
    delivered = len(_received(world))
    ci = binomtest(n - delivered, n).proportion_ci(0.999)
    assert ci.low <= loss <= ci.high
    assert world.network.dropped["loss"] == n - delivered


def test_measured_duplication_matches_probability(make_world):
    """Configured duplication p: extra copies are consistent with Binomial(n, p) (99.9% CI)."""
    n, p = 20_000, 0.1
    world = make_world(2, network={"duplicate": p})
    _blast(world, "n1", "n2", n)
    extra = len(_received(world)) - n
    ci = binomtest(extra, n).proportion_ci(0.999)
    assert ci.low <= p <= ci.high
    seqs = [row[3] for row in _received(world)]
    assert set(seqs) == set(range(n))


def test_reordering_only_when_configured(make_world):
    """Constant latency keeps FIFO order; a reorder probability lets later messages overtake."""
    fifo = make_world(2, network={"latency": "1ms"})
    _blast(fifo, "n1", "n2", 2000, gap=0.1)
    seqs = [row[3] for row in fifo.state]
    assert seqs == sorted(seqs)
    shuffled = make_world(2, network={"latency": "1ms", "reorder": 0.2, "reorder_delay": "5ms"})
    _blast(shuffled, "n1", "n2", 2000, gap=0.1)
    seqs = [row[3] for row in shuffled.state]
    inversions = sum(1 for a, b in zip(seqs, seqs[1:]) if b < a)
    assert inversions > 100 and sorted(seqs) == list(range(2000))


def test_latency_distribution_and_link_override(make_world):
    """Default latency applies everywhere except a per-link override (both directions when symmetric)."""
    world = make_world(3, network={"latency": "2ms", "links": [{"src": "n1", "dst": "n3", "latency": "7ms"}]})
    for src, dst in [("n1", "n2"), ("n1", "n3"), ("n3", "n1"), ("n2", "n3")]:
        world.nodes[src].send(dst, Note(0))
    world.env.run()
    arrival = {(row[1], row[2]): row[0] for row in world.state}
    assert arrival == {("n1", "n2"): 2.0, ("n1", "n3"): 7.0, ("n3", "n1"): 7.0, ("n2", "n3"): 2.0}


def _all_pairs(world):
    names = list(world.nodes)
    return [(a, b) for a in names for b in names if a != b]


def test_partition_blocks_exactly_the_named_pairs(make_world):
    """Groups [[n1, n2], [n3]] (n4 unnamed: its own group) block exactly the cross-group pairs."""
    partition = {"kind": "partition", "start": 0, "end": 100, "groups": [["n1", "n2"], ["n3"]]}
    world = make_world(4, faults={"schedule": [partition]})
    world.env.run(until=1)
    for src, dst in _all_pairs(world):
        world.nodes[src].send(dst, Note(0))
    world.env.run(until=50)
    delivered = {(row[1], row[2]) for row in world.state}
    group = {"n1": 0, "n2": 0, "n3": 1, "n4": 2}
    assert delivered == {(a, b) for a, b in _all_pairs(world) if group[a] == group[b]}
    assert world.network.dropped["partition"] == len(_all_pairs(world)) - len(delivered)


def test_one_way_partition_blocks_one_direction(make_world):
    """A one-way partition drops messages from the first group only."""
    partition = {"kind": "partition", "start": 0, "end": 100, "groups": [["n1"]], "one_way": True}
    world = make_world(3, faults={"schedule": [partition]})
    world.env.run(until=1)
    for src, dst in _all_pairs(world):
        world.nodes[src].send(dst, Note(0))
    world.env.run(until=50)
    delivered = {(row[1], row[2]) for row in world.state}
    assert delivered == {(a, b) for a, b in _all_pairs(world) if a != "n1"}


def test_partition_heals(make_world):
    """After a partition ends, traffic flows again."""
    world = make_world(2, faults={"schedule": [{"kind": "partition", "start": 0, "end": 10, "groups": [["n1"]]}]})
    n1 = world.nodes["n1"]
    n1.set_timer(5, n1.send, "n2", Note(1))
    n1.set_timer(15, n1.send, "n2", Note(2))
    world.env.run()
    assert [row[3] for row in world.state] == [2]


def test_crashed_nodes_drop_traffic(make_world):
    """A crashed node neither sends nor receives; messages in flight to it are lost."""
    crash = {"kind": "crash", "node": "n2", "start": 10, "end": 20}
    world = make_world(2, network={"latency": "4ms"}, faults={"schedule": [crash]})
    n1, n2 = world.nodes["n1"], world.nodes["n2"]
    n1.set_timer(8, n1.send, "n2", Note(1))     # in flight when n2 crashes at 10
    n1.set_timer(12, n1.send, "n2", Note(2))    # arrives while n2 is down
    n2.set_timer(12, n2.send, "n1", Note(3))    # timer of a crashed node never fires
    n1.set_timer(21, n1.send, "n2", Note(4))    # after recovery
    world.env.run(until=15)
    n2.send("n1", Note(5))                      # direct send from a crashed node
    world.env.run()
    assert [(row[2], row[3]) for row in world.state] == [("n2", 4)]
    assert world.network.dropped["receiver_crashed"] == 2
    assert world.network.sent == 3


def test_loss_and_latency_windows(make_world):
    """Fault windows add loss and latency on the matching links only while active."""
    world = make_world(3, network={"latency": "1ms"}, faults={"schedule": [
        {"kind": "loss", "start": 0, "end": 100, "probability": 1.0, "src": "n1", "dst": "n2"},
        {"kind": "latency_spike", "start": 0, "end": 100, "extra": "30ms", "dst": "n3"},
    ]})
    n1 = world.nodes["n1"]
    for t in (1, 200):
        n1.set_timer(t, n1.send, "n2", Note(t))
        n1.set_timer(t, n1.send, "n3", Note(t))
    world.env.run()
    got = sorted((row[2], row[3], row[0]) for row in world.state)
    assert got == [("n2", 200, 201.0), ("n3", 1, 32.0), ("n3", 200, 201.0)]


def test_trace_records_sends_deliveries_and_drops(make_world):
    """The optional trace has one row per message with its delivery time or drop reason."""
    world = make_world(2, run={"duration": 1e9, "trace": True},
                       faults={"schedule": [{"kind": "partition", "start": 5, "end": 10, "groups": [["n1"]]}]})
    n1 = world.nodes["n1"]
    n1.set_timer(1, n1.send, "n2", Note(1))
    n1.set_timer(6, n1.send, "n2", Note(2))
    world.env.run()
    rows = world.network.trace_rows()
    assert [(r[4], r[5], r[6]) for r in rows][0] == (1.0, 2.0, None)
    assert rows[1][4] == 6.0 and rows[1][6] == "partition"


def test_client_latency_applies_between_client_and_home():
    """network.client_latency sets the client <-> home-node delay; other hops keep the default."""
    import sim
    from sim.scenario import Scenario

    s = Scenario.from_dict({"cluster": {"count": 2}, "network": {"latency": "5ms", "client_latency": 0},
                            "workload": {"clients": 2, "rate": 20}, "protocol": {"name": "single_copy", "owner": "n1"},
                            "run": {"duration": "2s"}})
    h = sim.run(s).history
    lat = (h["complete"] - h["invoke"]).groupby(h["client"]).unique()
    assert list(lat["c0"]) == [0.0]      # next to the owner
    assert list(lat["c1"]) == [10.0]     # via n2: 0 + 5 + 5 + 0
