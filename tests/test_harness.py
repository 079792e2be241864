"""The handler harness: a protocol's nodes on a recording outbox and a manual clock."""

from __future__ import annotations

import pytest

from sim.harness import Harness
from sim.kernel.messages import ClientReply, ClientRequest
from sim.kernel.node import UnhandledMessage
from sim.protocols.proxy import Forwarded
from sim.replication.raft import AppendEntries, AppendReply
from sim.runner import build_world
from sim.scenario import Scenario

SINGLE_COPY = {
    "cluster": {"count": 3},
    "workload": {"clients": 0},
    "protocol": {"name": "single_copy", "owner": "n1"},
}
RAFT = {**SINGLE_COPY, "protocol": {"name": "raft"}}


def test_a_handler_sends_are_recorded_not_delivered():
    """A client write to a non-owner is forwarded to the owner: recorded with time, source and destination,
    and the owner's store is untouched because nothing is delivered."""
    h = Harness(SINGLE_COPY)
    sent = h.deliver("n2", ClientRequest(1, "write", 7, 70), src="c0")
    assert sent == h.sent == [(0.0, "n2", "n1", Forwarded(ClientRequest(1, "write", 7, 70)))]
    assert h.nodes["n1"].data == {}
    h.deliver("n1", sent[0].msg, src="n2")
    assert h.nodes["n1"].data == {7: 70}
    assert h.sent_to("n2") == [h.sent[-1].msg] and h.sent[-1].msg.reply == ClientReply(1, True)


def test_take_returns_only_what_was_sent_since_the_last_take():
    """take() is 'what happened since': each message is returned once."""
    h = Harness(SINGLE_COPY)
    h.deliver("n1", ClientRequest(1, "write", 0, 1), src="c0")
    assert [s.msg for s in h.take()] == [ClientReply(1, True)]
    assert h.take() == []
    h.deliver("n1", ClientRequest(2, "read", 0), src="c0")
    assert [s.msg for s in h.take()] == [ClientReply(2, True, 1)]


def test_timers_wait_for_the_test_and_fire_in_time_order():
    """Raft's boot sets one election timer per node; advance() fires exactly those that fall due, in order."""
    h = Harness(RAFT)
    timers = h.timers
    assert [t.callback for t in timers] == ["_on_election_timer"] * 3
    assert [t.at for t in timers] == sorted(t.at for t in timers)
    first, second = timers[0], timers[1]
    h.advance((first.at + second.at) / 2 - h.now)
    assert h.nodes[first.node].role == "precandidate"
    assert h.nodes[second.node].role == "follower"
    assert h.now == pytest.approx((first.at + second.at) / 2)


def test_cancelled_and_crashed_timers_are_not_pending_and_never_fire():
    """A crash discards a node's timers (and recovery sets new ones); a crashed node receives nothing."""
    h = Harness(RAFT)
    h.crash("n2")
    assert h.timers_of("n2") == []
    assert h.deliver("n2", AppendEntries(1, "n1", 0, 0, (), 0, 1), src="n1") == []
    h.advance(1000)
    assert h.nodes["n2"].term == 0 and not [s for s in h.sent if s.src == "n2"]
    h.recover("n2")
    assert [t.callback for t in h.timers_of("n2")] == ["_on_election_timer"]


def test_wrong_use_is_refused():
    """Unknown message types, moving the clock back and unknown nodes are errors, not silent no-ops."""
    h = Harness(RAFT)
    with pytest.raises(UnhandledMessage, match="handle_int"):
        h.deliver("n1", 5, src="n2")
    with pytest.raises(ValueError, match="back"):
        h.advance(-1)
    with pytest.raises(KeyError):
        h.deliver("n9", AppendReply(1, True, 0, 0, 0, 1), src="n1")


def test_the_harness_builds_the_same_nodes_as_a_run():
    """Same scenario and seed: the harness's Raft nodes draw the same election timeouts as a run's nodes."""
    world = build_world(Scenario.from_dict(RAFT), seed=3)
    world.start()
    h = Harness(RAFT, seed=3)
    assert {n: node._deadline for n, node in h.nodes.items()} == {n: node._deadline for n, node in world.nodes.items()}
