"""Connections (sim.kernel.transport): per-pair FIFO, retransmission, breaking, resets, configuration."""

from __future__ import annotations

import pytest
from conftest import Note, recorder_world
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.errors import ScenarioError
from sim.scenario import Scenario

LOSSY = {"latency": {"dist": "exponential", "mean": "3ms"}, "loss": 0.2, "duplicate": 0.2, "reorder": 0.3,
         "reorder_delay": "20ms"}


def _conn(**transport):
    return {"mode": "connection", **transport}


def _send_every(world, src, dst, start, stop, gap, first=0):
    """``src`` sends Note(first), Note(first + 1), ... to ``dst`` every ``gap`` ms in [start, stop)."""
    node = world.nodes[src]
    i, t = first, start
    while t < stop:
        node.set_timer(t - world.env.now, node.send, dst, Note(i))
        i, t = i + 1, t + gap
    return i


def _breaks(world):
    """Record every on_connection_broken call as (time, node, peer, reason)."""
    seen = []
    for node in world.nodes.values():
        node.on_connection_broken = (lambda n: lambda peer, reason: seen.append((n.now, n.name, peer, reason)))(node)
    return seen


def _by_pair(world):
    out: dict[tuple[str, str], list[int]] = {}
    for _t, src, dst, seq in world.state:
        out.setdefault((src, dst), []).append(seq)
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fifo_exactly_once_per_pair_under_loss_duplication_and_reordering(seed):
    """On connections every pair's messages arrive once each, in the order sent, whatever the network does."""
    world = recorder_world(3, seed=seed, network={**LOSSY, "transport": _conn()})
    n = {pair: _send_every(world, *pair, 0, 300, 1.5) for pair in [("n1", "n2"), ("n2", "n1"), ("n1", "n3")]}
    world.env.run(until=60_000)
    assert _by_pair(world) == {pair: list(range(k)) for pair, k in n.items()}
    t = world.network.transport
    assert t.retransmitted > 0 and t.duplicates_dropped > 0  # the network did lose and copy segments
    assert sum(t.broken.values()) == 0


def test_the_same_network_as_datagrams_loses_duplicates_and_reorders(make_world):
    """The FIFO check above is not vacuous: the same traffic sent as datagrams breaks all three properties."""
    world = make_world(3, seed=5, network={**LOSSY, "transport": {"mode": "datagram"}})
    _send_every(world, "n1", "n2", 0, 300, 1.5)
    world.env.run(until=60_000)
    got = _by_pair(world)[("n1", "n2")]
    assert len(set(got)) < 200  # some lost
    assert len(got) != len(set(got))  # some twice
    assert got != sorted(got)  # some overtaken


def test_partition_shorter_than_the_timeout_delays_but_loses_nothing(make_world):
    """Messages sent during a 400 ms partition arrive after the heal, in order; the connection survives."""
    partition = {"kind": "partition", "groups": [["n1"], ["n2"]], "start": 100, "end": 500}
    world = make_world(2, network={"latency": "1ms", "transport": _conn(timeout="1s", rto="50ms")},
                       faults={"schedule": [partition]})
    breaks = _breaks(world)
    n = _send_every(world, "n1", "n2", 0, 700, 2.0)
    world.env.run(until=5000)
    assert [row[3] for row in world.state] == list(range(n))
    during = [t for t, _s, _d, seq in world.state if 100 <= seq * 2.0 < 500]
    assert during and min(during) >= 500  # held back by the partition, delivered after it
    assert breaks == [] and world.network.dropped["partition"] > 0


def test_partition_longer_than_the_timeout_breaks_the_connection_and_both_ends_learn(make_world):
    """The sender gives up ``timeout`` after its last progress (then again on the connection its next message
    opened); the receiver learns by a reset when a new connection reaches it after the heal; what the broken
    connections held is lost, everything later arrives in order."""
    partition = {"kind": "partition", "groups": [["n1"], ["n2"]], "start": 100, "end": 3000}
    world = make_world(2, network={"latency": "1ms", "transport": _conn(timeout="1s", rto="50ms")},
                       faults={"schedule": [partition]})
    breaks = _breaks(world)
    n = _send_every(world, "n1", "n2", 0, 4000, 10.0)
    world.env.run(until=8000)
    sender = [(t, reason) for t, node, _peer, reason in breaks if node == "n1"]
    receiver = [(t, reason) for t, node, _peer, reason in breaks if node == "n2"]
    # the first message sent into the partition (t = 100) starts the clock; the next one (t = 1110) a new one
    assert sender == [(1100.0, "timeout"), (2110.0, "timeout")]
    assert len(receiver) == 1 and receiver[0][1] == "reset" and 3000 <= receiver[0][0] <= 3000 + 400 + 2
    got = [row[3] for row in world.state]
    assert got == sorted(got) and len(got) == len(set(got))
    lost = sorted(set(range(n)) - set(got))
    # sent at 100 ... 2110 (the send at 2110 runs just before the timeout of the same instant): on the two
    # connections that broke
    assert lost == list(range(10, 212))
    assert world.network.transport.lost == len(lost)


def test_restarted_receiver_resets_the_connection_at_once(make_world):
    """While the peer is down nothing answers (only the timeout could tell); once it is back, the first
    retransmitted segment is reset and the sender learns immediately, long before its timeout."""
    crash = {"kind": "crash", "node": "n2", "start": 100, "end": 300}
    world = make_world(2, network={"latency": "1ms", "transport": _conn(timeout="1min", rto="50ms")},
                       faults={"schedule": [crash]})
    breaks = _breaks(world)
    _send_every(world, "n1", "n2", 0, 200, 10.0)
    world.env.run(until=5000)
    assert len(breaks) == 1
    t, node, peer, reason = breaks[0]
    assert (node, peer, reason) == ("n1", "n2", "reset") and 300 <= t <= 300 + 2 * 400 + 2


def test_disconnect_drops_the_connection_and_the_peer_is_reset(make_world):
    """A node that closes its connection is not told; the peer learns by a reset when it next sends."""
    world = make_world(2, network={"latency": "1ms", "transport": _conn()})
    breaks = _breaks(world)
    world.nodes["n1"].send("n2", Note(0))
    world.env.run(until=10)
    world.nodes["n1"].disconnect("n2")
    world.nodes["n2"].send("n1", Note(1))
    world.env.run(until=20)
    assert breaks == [(pytest.approx(12.0), "n2", "n1", "reset")]  # sent at 10, reset back at 12
    assert [row[3] for row in world.state] == [0]  # Note(1) went on a connection n1 no longer had
    world.nodes["n2"].send("n1", Note(2))  # a new connection
    world.env.run(until=30)
    assert [row[3] for row in world.state] == [0, 2]


def test_datagram_mode_is_the_default_for_protocols_that_declare_nothing(make_world):
    """Messages whose class declares no transport stay datagrams: a partition drops them for good."""
    partition = {"kind": "partition", "groups": [["n1"], ["n2"]], "start": 0, "end": 50}
    world = make_world(2, faults={"schedule": [partition]})
    world.env.run(until=1)
    world.nodes["n1"].send("n2", Note(0))
    world.env.run(until=1000)
    assert world.state == [] and world.network.transport.retransmitted == 0


def _messaging(transport):
    return {
        "cluster": {"nodes": ["broker", "pub", "c1"]},
        "workload": {"clients": 0},
        "network": {"transport": transport},
        "protocol": {"name": "messaging", "topology": {"queues": [{"name": "q"}]},
                     "publishers": [{"node": "pub", "routing_keys": ["q"], "count": 10}],
                     "consumers": [{"node": "c1", "queue": "q"}]},
    }


@pytest.mark.parametrize(("transport", "path", "message"), [
    ({"mode": "tcp"}, "network.transport.mode", "'protocol', 'datagram', 'connection'"),
    ({"rto": "2s", "rto_max": "1s"}, "network.transport.rto_max", "must be >= rto"),
    ({"timeout": 0}, "network.transport.timeout", "> 0"),
    ({"rto": "-1ms"}, "network.transport.rto", ""),
    ({"heartbeat": 0}, "network.transport.heartbeat", "> 0"),
    ({"connection": ["Heartbeat"], "datagram": ["Heartbeat"]}, "network.transport.datagram", "also listed"),
    ({"datagram": ["Heartbeat", "Heartbeat"]}, "network.transport.datagram[1]", "listed twice"),
    ({"datagram": ["Nope"]}, "network.transport.datagram[0]", "unknown message kind or class 'Nope'"),
    ({"linger": 1}, "network.transport.linger", "unknown"),
])
def test_bad_transport_settings_are_rejected_with_the_field(transport, path, message):
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(_messaging(transport))
    assert err.value.path == path and message in str(err.value)


def test_transport_settings_round_trip_and_name_accepted_frames():
    """A valid transport table parses, round-trips through a dict, and accepts the AMQP frame names."""
    s = Scenario.from_dict(_messaging({"mode": "protocol", "datagram": ["Heartbeat"], "timeout": "20s"}))
    assert s.network.transport.timeout == 20_000.0
    assert Scenario.from_dict(s.to_dict()) == s
    from sim.messaging.frames import BasicDeliver, Call, Heartbeat
    t = s.network.transport
    assert t.on_connection(BasicDeliver) and not t.on_connection(Heartbeat) and not t.on_connection(Call)


def test_python_variants_are_validated_like_toml():
    """From Python, ``Scenario.variant`` (or a dict) goes through the same checks, naming the same fields."""
    s = Scenario.from_dict(_messaging({}))
    assert s.variant({"network.transport.mode": "datagram"}).network.transport.mode == "datagram"
    with pytest.raises(ScenarioError, match=r"^network\.transport\.connection\[0\]: unknown message kind"):
        s.variant({"network.transport.connection": ["Put"]})
    with pytest.raises(ScenarioError, match=r"^network\.transport\.rto_max: must be >= rto"):
        s.variant(network__transport__rto="3min")


def test_the_readme_transport_block_is_a_valid_network_section():
    """README.md's [network.transport] example parses as written into a messaging scenario."""
    import re
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "[network.transport]" in b)
    data = _messaging({})
    data["network"] = tomllib.loads(block)["network"]
    t = Scenario.from_dict(data).network.transport
    assert (t.mode, t.datagram, t.timeout) == ("protocol", ("Heartbeat",), 900_000.0)
    assert (t.rto, t.rto_max) == (200.0, 120_000.0)


def test_heartbeats_break_an_idle_connection_across_a_partition(make_world):
    """An idle connection never times out (no data is outstanding); with heartbeats both ends give up after
    ``heartbeat`` of silence, checked every ``heartbeat / 2``."""
    partition = {"kind": "partition", "groups": [["n1"], ["n2"]], "start": 100, "end": 5000}
    quiet = make_world(2, network={"latency": "1ms", "transport": _conn(timeout="1s")},
                       faults={"schedule": [partition]})
    quiet_breaks = _breaks(quiet)
    quiet.nodes["n1"].send("n2", Note(0))
    quiet.env.run(until=6000)
    assert quiet_breaks == []
    beating = make_world(2, network={"latency": "1ms", "transport": _conn(timeout="1min", heartbeat="400ms")},
                         faults={"schedule": [partition]})
    breaks = _breaks(beating)
    beating.nodes["n1"].send("n2", Note(0))
    beating.env.run(until=6000)
    assert sorted((node, reason) for _t, node, _peer, reason in breaks) == [("n1", "heartbeat"), ("n2", "heartbeat")]
    # last heard just before the cut at 100 ms; silence longer than 400 ms is seen at the next check
    assert all(100 + 400 < t <= 100 + 400 + 200 + 2 for t, *_ in breaks)
    assert beating.network.transport.broken["heartbeat"] == 2
