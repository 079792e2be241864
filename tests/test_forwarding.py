"""Forwarding nodes forget the clients of requests whose replies never come back (ForwardTable, forward_ttl)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import sim
from sim.protocols.proxy import ForwardTable
from sim.runner import build_world
from sim.scenario import Scenario

TIMEOUT = 200.0


def test_an_entry_is_returned_before_its_ttl_and_forgotten_after():
    """pop() finds a client until ttl has passed since add(); after that the entry is gone and counted expired;
    adding the same request again starts its ttl afresh; an infinite ttl never expires."""
    table = ForwardTable(100.0)
    table.add(1, "c1", now=0.0)
    table.add(2, "c2", now=10.0)
    assert table.pop(1, now=99.0) == "c1" and table.pop(1, now=99.0) is None
    table.add(3, "c3", now=50.0)
    table.add(3, "c3", now=90.0)  # a duplicate forwarded later: its deadline moves to 190
    table.expire(150.0)
    assert 2 not in table and 3 in table and table.expired == 1
    assert table.pop(2, now=150.0) is None and table.pop(3, now=189.0) == "c3"
    forever = ForwardTable(math.inf)
    forever.add(1, "c1", now=0.0)
    forever.expire(1e12)
    assert forever.pop(1, now=1e12) == "c1" and forever.expired == 0


def lossy_single_copy(**protocol: Any) -> Scenario:
    """Clients of n2 and n3 go through them to the owner n1, whose replies to n2 are lost half the time."""
    return Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": "1ms", "links": [{"src": "n1", "dst": "n2", "loss": 0.5, "symmetric": False}]},
        "workload": {"clients": 6, "rate": 50, "keys": 5, "timeout": TIMEOUT},
        "protocol": {"name": "single_copy", **protocol},
        "run": {"duration": "30s"},
    })


def test_lost_replies_leave_a_bounded_table_over_a_long_run():
    """Over 30 s with half of n1's replies to n2 lost, n2 never remembers more clients than the requests it
    forwarded within forward_ttl (the client timeout by default) of its latest one, at any of a hundred samples;
    with a ttl of an hour it keeps one entry per lost reply and ends with thousands."""
    s = lossy_single_copy()
    world = build_world(s)
    n2 = world.nodes["n2"]
    sizes: list[tuple[float, int]] = []
    world.run(lambda now: sizes.append((now, len(n2.waiting))))
    history = world.history.to_frame()
    via_n2 = history.loc[history["node"] == "n2", "invoke"].to_numpy()
    for now, size in sizes:
        # expiry runs whenever the table is used: at the latest forward, entries older than ttl went
        last = via_n2[via_n2 <= now].max()
        recent = ((via_n2 > last - TIMEOUT - 1.0) & (via_n2 <= now)).sum()
        assert size <= recent, (now, size, recent)
    lost = (history["node"] == "n2") & (history["outcome"] == "info")
    # every lost reply left an entry: expired, or from the last ttl before n2's last use
    assert n2.waiting.expired + len(n2.waiting) == lost.sum() > 1000

    kept = build_world(s.variant({"protocol.forward_ttl": "1h"}))
    kept.run()
    assert len(kept.nodes["n2"].waiting) > 1000 and kept.nodes["n2"].waiting.expired == 0


def test_a_reply_within_the_ttl_still_reaches_its_client():
    """Expiry changes nothing for replies that come back in time: with no loss every operation through n2 is ok."""
    s = lossy_single_copy().variant({"network.links": [], "run.duration": "5s"})
    r = sim.run(s)
    assert (r.history.loc[r.history["node"] == "n2", "outcome"] == "ok").all()


@pytest.mark.parametrize("protocol", ["single_copy", "primary_backup", "raft"])
def test_forward_ttl_is_checked(protocol):
    """A forward_ttl that is not a positive duration is an error naming the field."""
    base = {"cluster": {"count": 3}, "protocol": {"name": protocol, "forward_ttl": "0ms"}}
    with pytest.raises(sim.ScenarioError, match="protocol.forward_ttl"):
        Scenario.from_dict(base)
    base["protocol"]["forward_ttl"] = "soon"
    with pytest.raises(sim.ScenarioError, match="protocol.forward_ttl"):
        Scenario.from_dict(base)


def test_a_raft_follower_forgets_forwards_whose_replies_are_lost():
    """Raft: n2's clients go through n2 to the leader, and half of everything sent to n2 is lost. Over 20 s n2
    never remembers more clients than the requests it forwarded within forward_ttl of its latest one, and the
    lost replies' entries expire."""
    links = [{"src": n, "dst": "n2", "loss": 0.5, "symmetric": False} for n in ("n1", "n3", "n4", "n5")]
    s = Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": "1ms", "links": links},
        "workload": {"clients": 2, "rate": 50, "keys": 5, "timeout": TIMEOUT, "target": "fixed",
                     "target_node": "n2"},
        "protocol": {"name": "raft"},
        "run": {"duration": "20s"},
    })
    world = build_world(s)
    n2 = world.nodes["n2"]
    sizes: list[tuple[float, int]] = []
    world.run(lambda now: sizes.append((now, len(n2.forwards))))
    invokes = world.history.to_frame()["invoke"].to_numpy()
    for now, size in sizes:
        last = invokes[invokes <= now].max()
        assert size <= ((invokes > last - TIMEOUT - 1.0) & (invokes <= now)).sum(), (now, size)
    assert n2.forwards.expired > 100


def test_the_example_scenario_expires_one_entry_per_lost_answer():
    """experiments/scenarios/single-copy-lost-replies.toml: every operation through n2 whose answer was lost
    timed out at its client, and n2's table forgot it (expired, or still within forward_ttl of n2's last use)."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "single-copy-lost-replies.toml"
    r = sim.run(Scenario.from_toml(path), keep_world=True)
    via_n2 = r.history[r.history["node"] == "n2"]
    lost = int((via_n2["outcome"] == "info").sum())
    n2 = r.world.nodes["n2"]
    assert lost > 100 and r.summary["protocol.forwards_expired"] + len(n2.waiting) == lost
    # what is left came within one ttl: Poisson with mean 30/s x 2 clients x 0.3 s = 18, so 54 is 8 sd above
    assert len(n2.waiting) <= 54
    assert (r.history.loc[r.history["node"] != "n2", "outcome"] == "ok").all()
