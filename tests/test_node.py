"""Nodes: handler dispatch, timers, crash and recovery with durable and volatile state."""

from __future__ import annotations

import pytest
from conftest import Note

from sim.kernel.node import UnhandledMessage


def test_dispatch_by_message_type(make_world):
    """A message goes to handle_<ClassName>; an unknown type is a loud protocol error."""
    world = make_world(2)
    world.nodes["n1"].send("n2", Note(7))
    world.env.run()
    assert world.state == [(1.0, "n1", "n2", 7)]
    with pytest.raises(UnhandledMessage, match="handle_str"):
        world.nodes["n2"].receive("n1", "hello")


def test_timers_fire_in_order_and_cancel(make_world):
    """Timers fire at their times, same-time timers in the order set; cancelled ones never fire."""
    world = make_world(1)
    node = world.nodes["n1"]
    fired = []
    node.set_timer(5, fired.append, "b")
    node.set_timer(2, fired.append, "a")
    node.set_timer(5, fired.append, "c")
    t = node.set_timer(3, fired.append, "cancelled")
    t.cancel()
    world.env.run()
    assert fired == ["a", "b", "c"]


def test_crash_discards_volatile_state_and_timers(make_world):
    """After crash and recovery, durable state survives, volatile state and old timers do not."""
    world = make_world(2, faults={"schedule": [{"kind": "crash", "node": "n2", "start": 10, "end": 20}]})
    n1, n2 = world.nodes["n1"], world.nodes["n2"]
    fired = []
    for i in range(3):
        n1.send("n2", Note(i))
    n2.set_timer(15, fired.append, "lost")
    world.env.run(until=5)
    assert n2.volatile_seen == 3 and n2.disk["durable_seen"] == 3
    world.env.run(until=25)
    assert not fired
    assert n2.alive and n2.boots == 2 and n2.crashes == 1
    assert n2.volatile_seen == 0 and n2.disk["durable_seen"] == 3
    assert [e[1:] for e in world.node_events] == [("n2", "crash"), ("n2", "recover")]


def test_overlapping_crashes_recover_once_all_end(make_world):
    """Two overlapping crash faults keep the node down until the later one ends."""
    world = make_world(1, faults={"schedule": [
        {"kind": "crash", "node": "n1", "start": 10, "end": 30},
        {"kind": "crash", "node": "n1", "start": 20, "end": 40},
    ]})
    node = world.nodes["n1"]
    states = []
    for t in (15, 35, 45):
        world.env.run(until=t)
        states.append(node.alive)
    assert states == [False, False, True]


def test_clock_skew_and_drift(make_world):
    """A clock_skew fault makes the node's clock read t + offset + drift * (t - start) while it lasts."""
    skew = {"kind": "clock_skew", "node": "n2", "start": 100, "end": 300, "offset": "-50ms", "drift": 0.5}
    world = make_world(2, faults={"schedule": [skew]})
    n1, n2 = world.nodes["n1"], world.nodes["n2"]
    world.env.run(until=200)
    assert n1.clock() == 200.0
    assert n2.clock() == pytest.approx(200 - 50 + 0.5 * (200 - 100))
    world.env.run(until=400)
    assert n2.clock() == 400.0
