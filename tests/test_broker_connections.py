"""The broker's AMQP connections ride network connections: partitions delay, breaks requeue as RabbitMQ does."""

from __future__ import annotations

from pathlib import Path

import sim
from sim.scenario import Scenario

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "broker-partition-connections.toml"


def scenario(start, end, *, transport=None, heartbeat="1s", count=200, queue_type="classic"):
    """One publisher at 100/s, one consumer (prefetch 10) cut off from the broker from ``start`` to ``end``."""
    data = {
        "cluster": {"nodes": ["broker", "pub", "c1"]},
        "workload": {"clients": 0},
        "run": {"duration": "8s", "seed": 3},
        "protocol": {
            "name": "messaging",
            "heartbeat": heartbeat,
            "topology": {"queues": [{"name": "q", "type": queue_type}]},
            "publishers": [{"node": "pub", "routing_keys": ["q"], "count": count, "rate": 100}],
            "consumers": [{"node": "c1", "queue": "q", "prefetch": 10, "processing_time": "5ms"}],
        },
        "faults": {"schedule": [{"kind": "partition", "groups": [["c1"]], "start": start, "end": end}]},
    }
    if transport is not None:
        data["network"] = {"transport": transport}
    return Scenario.from_dict(data)


def events(result, kind):
    ev = result.tables["message_events"]
    return ev[ev["event"] == kind]


def test_partition_shorter_than_the_heartbeat_delays_deliveries_but_loses_none():
    """A 500 ms cut (heartbeat 1 s): deliveries sent into it arrive after the heal, nothing is requeued."""
    r = sim.run(scenario("1s", "1.5s"), seed=3)
    c = r.verdicts["delivery"].counts
    assert c["processed"] == c["published"] == 200 and c["remaining"] == 0 and c["lost"] == 0
    assert c["redeliveries"] == 0 and len(events(r, "requeue")) == 0
    sent = events(r, "deliver").set_index("msg_id")["time"]
    got = events(r, "receive").set_index("msg_id")["time"]
    held = [m for m, t in sent.items() if 1000 <= t < 1500]
    assert held and all(got[m] >= 1500 for m in held)  # delayed by the partition, not lost


def test_the_same_partition_with_frames_as_datagrams_strands_deliveries():
    """Sent as datagrams (capsim's model before connections), the frames cut off are gone: the prefetch window
    stays full of deliveries nobody holds until the 30-minute consumer_timeout, as no TCP connection behaves."""
    r = sim.run(scenario("1s", "1.5s", transport={"mode": "datagram"}), seed=3)
    c = r.verdicts["delivery"].counts
    assert c["remaining"] > 0 and c["processed"] < 200


def test_partition_longer_than_the_heartbeat_breaks_and_the_broker_requeues_as_redelivered():
    """A 3 s cut: two missed heartbeats close the connection; the broker requeues the unacked deliveries and
    redelivers them with redelivered = true (RabbitMQ's behaviour on connection loss); nothing is lost."""
    r = sim.run(scenario("1s", "4s"), seed=3)
    c = r.verdicts["delivery"].counts
    assert c["processed"] == c["published"] == 200 and c["lost"] == 0 and c["remaining"] == 0
    requeued = events(r, "requeue")
    assert len(requeued) > 0 and set(requeued["reason"]) == {"heartbeat_timeout"}
    # silence started at the cut (1 s): declared dead on the first heartbeat check after 1 s of it
    assert requeued["time"].between(2000, 2500).all()
    deliveries = events(r, "deliver")
    for msg_id in requeued["msg_id"]:
        again = deliveries[(deliveries["msg_id"] == msg_id) & (deliveries["time"] > requeued["time"].max())]
        assert len(again) == 1 and bool(again["redelivered"].iloc[0])
    assert int(deliveries["redelivered"].astype(bool).sum()) == len(requeued)


def test_quorum_queue_counts_the_return_of_a_broken_connection():
    """On a quorum queue the requeue after the broken connection raises each message's delivery count to 1
    (RabbitMQ 3.10 counts every return, nack or connection loss), and the redelivery says so."""
    r = sim.run(scenario("1s", "4s", queue_type="quorum"), seed=3)
    requeued = events(r, "requeue")
    assert len(requeued) > 0 and set(requeued["reason"]) == {"heartbeat_timeout"}
    deliveries = events(r, "deliver")
    again = deliveries[deliveries["msg_id"].isin(requeued["msg_id"]) & (deliveries["time"] > 2000)]
    assert len(again) == len(requeued) and (again["delivery_count"] == 1).all()
    assert again["redelivered"].astype(bool).all()
    assert r.verdicts["delivery"].counts["lost"] == 0


def test_transport_timeout_shorter_than_the_heartbeat_breaks_the_connection_first():
    """With a 10 s heartbeat and a 500 ms connection timeout the network gives up first and the broker requeues
    on its report (reason connection_timeout), well before any heartbeat could."""
    r = sim.run(scenario("1s", "3s", heartbeat="10s", transport={"timeout": "500ms", "rto": "50ms"}), seed=3)
    requeued = events(r, "requeue")
    assert len(requeued) > 0 and set(requeued["reason"]) == {"connection_timeout"}
    assert requeued["time"].between(1500, 1600).all()  # 500 ms after the broker's first unacknowledged delivery
    c = r.verdicts["delivery"].counts
    assert c["processed"] == 200 and c["lost"] == 0


def test_example_scenario_short_cut_delays_long_cut_requeues():
    """experiments/scenarios/broker-partition-connections.toml: c1's 400 ms cut requeues nothing of c1's,
    c2's 3 s cut requeues c2's unacked messages as redelivered, and nothing is lost."""
    s = Scenario.from_toml(EXAMPLE)
    r = sim.run(s)
    c = r.verdicts["delivery"].counts
    assert c["processed"] == c["published"] and c["lost"] == 0 and c["remaining"] == 0
    requeued = events(r, "requeue")
    assert len(requeued) > 0 and set(requeued["reason"]) == {"heartbeat_timeout"}
    # only c2's cut (from 2 s) outlasts the heartbeat: it is declared dead after more than 1 s of silence, at
    # the broker's next check (every heartbeat / 2); c1's 400 ms cut (1 s to 1.4 s) requeues nothing
    assert requeued["time"].between(3000, 3500).all()
    received = events(r, "receive")
    again = received[received["msg_id"].isin(requeued["msg_id"]) & (received["time"] > 3000)]
    assert sorted(again["msg_id"]) == sorted(requeued["msg_id"]) and set(again["node"]) == {"c1"}
    deliveries = events(r, "deliver")
    assert int(deliveries["redelivered"].astype(bool).sum()) == len(requeued)


def test_connection_runs_are_deterministic():
    """The example scenario run twice with one seed gives identical message events and summaries."""
    s = Scenario.from_toml(EXAMPLE)
    a, b = sim.run(s, seed=11), sim.run(s, seed=11)
    assert a.tables["message_events"].equals(b.tables["message_events"])
    same = {k for k in a.summary if a.summary[k] == b.summary[k] or (a.summary[k] != a.summary[k]
                                                                    and b.summary[k] != b.summary[k])}  # NaN
    assert same == set(a.summary) == set(b.summary) and a.summary["messages.retransmitted"] > 0
