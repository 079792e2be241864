"""Delivery guarantees measured by the delivery checker: at-least-once, idempotency, at-most-once (auto-ack)."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

import sim
from sim.checkers.delivery import backlog_timeline, check_delivery, drain_time, load_timeline
from sim.messaging.history import EVENT_COLUMNS
from sim.scenario import Scenario

FAULTS = [  # two broker restarts, a consumer machine crash (noticed by heartbeats), a partition
    {"kind": "crash", "node": "broker", "start": "2s", "end": "2.5s"},
    {"kind": "crash", "node": "broker", "start": "4.5s", "end": "5s"},
    {"kind": "crash", "node": "c2", "start": "3s", "end": "3.5s"},
    {"kind": "partition", "groups": [["c3"]], "start": "1s", "end": "1.8s"},
]


def crash_scenario(queue_type="classic", idempotency=None, auto_ack=False, persistent=True, faults=FAULTS,
                   crash_probability=0.02):
    consumers = []
    for node in ("c1", "c2", "c3"):
        c = {"node": node, "queue": "work", "prefetch": 5, "auto_ack": auto_ack,
             "processing_time": {"dist": "exponential", "mean": 5},
             "crash_probability": crash_probability, "crash_point": "after_effect", "restart_after": 300}
        if idempotency is not None:
            c["idempotency"] = {"store": idempotency}
        consumers.append(c)
    return Scenario.from_dict({
        "cluster": {"nodes": ["broker", "pub", "c1", "c2", "c3"]},
        "workload": {"clients": 0},
        "faults": {"schedule": list(faults)},
        "protocol": {
            "name": "messaging",
            "topology": {"exchanges": [{"name": "orders"}],
                         "queues": [{"name": "work", "type": queue_type}],
                         "bindings": [{"exchange": "orders", "queue": "work", "routing_key": "new"}]},
            "publishers": [{"node": "pub", "exchange": "orders", "routing_keys": ["new"], "rate": 100, "stop": "6s",
                            "persistent": persistent}],
            "consumers": consumers,
        },
        "run": {"duration": "10s"},
    })


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_at_least_once_under_consumer_crashes_and_broker_restarts(queue_type):
    """Confirms + manual acks + persistent messages in a durable queue: nothing confirmed is lost, duplicates appear."""
    duplicates = 0
    for seed in range(3):
        r = sim.run(crash_scenario(queue_type), seed=seed)
        c = r.verdicts["delivery"].counts
        assert r.verdicts["delivery"].ok and c["lost"] == 0, r.verdicts["delivery"].lost_ids
        assert c["confirmed"] == c["published"] == c["processed"] > 500
        assert c["remaining"] == c["unconfirmed"] == 0
        assert (r.tables["message_events"]["event"] == "lost").sum() == 0  # the broker discarded nothing
        assert c["publish_attempts"] > c["published"]  # unconfirmed publishes were retried after the restarts
        assert r.node_events["event"].tolist().count("crash") > 3  # broker twice, c2, and consumer processes
        duplicates += c["duplicate_side_effects"]
        assert c["duplicate_deliveries"] >= c["duplicate_side_effects"] > 0
    assert duplicates > 0


def frame_loss_scenario(transport: str) -> Scenario:
    faults = [{"kind": "loss", "probability": 0.03, "start": "1s", "end": "5s"},
              {"kind": "duplicate", "probability": 0.05, "start": "1s", "end": "5s"}]
    data = crash_scenario(faults=faults, crash_probability=0.0).to_dict()
    data["protocol"]["publishers"][0]["confirm_timeout"] = 500
    data["protocol"]["consumer_timeout"] = 2000
    data["network"]["transport"] = {"mode": transport}
    return Scenario.from_dict(data)


def test_at_least_once_under_frame_loss_and_duplication():
    """Frames as datagrams, lost and duplicated: confirm timeouts republish, the ack timeout requeues; still
    nothing lost."""
    r = sim.run(frame_loss_scenario("datagram"), seed=0)
    c = r.verdicts["delivery"].counts
    assert c["lost"] == 0 and c["processed"] == c["published"] == c["confirmed"]
    ev = r.tables["message_events"]
    assert ((ev["event"] == "publish_nack") & (ev["reason"] == "timeout")).sum() > 0
    assert ((ev["event"] == "requeue") & (ev["reason"] == "channel_error")).sum() > 0
    assert c["duplicate_side_effects"] > 0


def test_frames_on_connections_ride_out_the_same_loss():
    """The same loss with the frames on connections (the default): segments are retransmitted, so no confirm
    times out, nothing is requeued, and every message is processed once."""
    r = sim.run(frame_loss_scenario("protocol"), seed=0)
    c = r.verdicts["delivery"].counts
    assert c["lost"] == 0 and c["processed"] == c["published"] == c["confirmed"]
    ev = r.tables["message_events"]
    assert ((ev["event"] == "publish_nack") & (ev["reason"] == "timeout")).sum() == 0
    assert (ev["event"] == "requeue").sum() == 0
    assert c["duplicate_side_effects"] == 0 and c["publish_attempts"] == c["published"]
    assert r.summary["messages.retransmitted"] > 0


def test_idempotent_consumer_with_shared_store_has_no_duplicate_side_effects():
    """Same faults with a shared dedup store: duplicates are still delivered but never processed twice."""
    for seed in range(3):
        plain = sim.run(crash_scenario(), seed=seed).verdicts["delivery"].counts
        idem = sim.run(crash_scenario(idempotency="shared"), seed=seed).verdicts["delivery"].counts
        assert idem["lost"] == 0 and idem["processed"] == idem["published"]
        assert plain["duplicate_side_effects"] > 0
        assert idem["duplicate_side_effects"] == 0
        assert idem["dedup_skips"] == idem["duplicate_deliveries"] > 0


def test_per_consumer_dedup_store_misses_duplicates_redelivered_to_another_consumer():
    """A dedup store private to each consumer (even on its disk) does not stop a duplicate that a peer receives."""
    counts = [sim.run(crash_scenario(idempotency="local_durable"), seed=s).verdicts["delivery"].counts
              for s in range(3)]
    assert sum(c["duplicate_side_effects"] for c in counts) > 0
    assert all(c["lost"] == 0 for c in counts)


def test_auto_ack_under_consumer_crashes_loses_messages_and_the_checker_counts_them_exactly():
    """At-most-once: every auto-acked message held by a crashing consumer, or in flight to it, is lost."""
    faults = [{"kind": "crash", "node": "c2", "start": "3s", "end": "3.5s"}]
    for seed in range(3):
        s = crash_scenario(auto_ack=True, faults=faults, crash_probability=0.03).variant({"run.trace": True})
        r = sim.run(s, seed=seed, keep_world=True)
        ev = r.tables["message_events"]
        held_at_crash = ev[ev["event"] == "abandon"]
        # a delivery on a connection is retransmitted until the connection breaks: count each once
        dropped_deliveries = {row[7] for row in r.world.network.trace_rows()
                              if row[3] == "BasicDeliver" and row[6] == "receiver_crashed"}
        report = r.verdicts["delivery"]
        assert report["lost"] == len(held_at_crash) + len(dropped_deliveries)
        assert set(held_at_crash["msg_id"]) <= set(report.lost_ids)
        assert report["processed"] + report["lost"] == report["published"]
        assert report["redeliveries"] == 0 and report["duplicate_side_effects"] == 0
        assert report["lost"] > 0  # every seed's crashes cost messages: the exact count above is not vacuous


def test_transient_messages_confirmed_then_lost_in_a_broker_restart_are_counted_lost():
    """Non-persistent messages in a durable classic queue: the broker's crash losses are exactly the checker's lost."""
    faults = [{"kind": "crash", "node": "broker", "start": "2s", "end": "2.5s"}]
    s = crash_scenario(persistent=False, faults=faults, crash_probability=0.0)
    # slow consumers so that messages are queued when the broker crashes
    s = s.variant({"protocol.consumers": [dict(c, processing_time=40) for c in s.to_dict()["protocol"]["consumers"]]})
    r = sim.run(s, seed=1)
    ev = r.tables["message_events"]
    broker_lost = set(ev.loc[ev["event"] == "lost", "msg_id"])
    processed_anyway = set(ev.loc[ev["event"] == "side_effect", "msg_id"])  # unacked, already with a consumer
    assert len(broker_lost - processed_anyway) > 10
    assert set(r.verdicts["delivery"].lost_ids) == broker_lost - processed_anyway
    assert not r.verdicts["delivery"].ok


def test_partitioned_consumer_times_out_and_its_messages_are_requeued():
    """A consumer cut off from the broker: after the heartbeat timeout its unacked messages go to the other one."""
    s = Scenario.from_dict({
        "cluster": {"nodes": ["broker", "pub", "c1", "c2"]},
        "workload": {"clients": 0},
        "faults": {"schedule": [{"kind": "partition", "groups": [["c1"]], "start": "1s", "end": "4s"}]},
        "protocol": {"name": "messaging", "heartbeat": "1s",
                     "topology": {"queues": [{"name": "work"}]},
                     "publishers": [{"node": "pub", "routing_keys": ["work"], "rate": 50, "stop": "5s"}],
                     "consumers": [{"node": n, "queue": "work", "prefetch": 10,
                                    "processing_time": {"dist": "exponential", "mean": 30}} for n in ("c1", "c2")]},
        "run": {"duration": "8s"},
    })
    r = sim.run(s, seed=3)
    ev = r.tables["message_events"]
    requeued = ev[ev["event"] == "requeue"]
    assert len(requeued) > 0 and set(requeued["reason"]) == {"heartbeat_timeout"}
    assert requeued["time"].between(2000, 2500).all()  # 1 s of silence, checked every 500 ms
    again = ev[(ev["event"] == "receive") & ev["msg_id"].isin(requeued["msg_id"]) & (ev["time"] > 2000)]
    assert set(again["node"]) == {"c2"} and again["redelivered"].all()
    report = r.verdicts["delivery"]
    assert report["lost"] == 0 and report["processed"] == report["published"]


def test_same_seed_gives_identical_event_tables_and_summaries():
    """Same scenario and seed: identical event and depth tables; sim.run reports the same messaging numbers."""
    s = crash_scenario()
    a, b = sim.run(s, seed=4), sim.run(s, seed=4)
    pdt.assert_frame_equal(a.tables["message_events"], b.tables["message_events"])
    pdt.assert_frame_equal(a.tables["queue_depth"], b.tables["queue_depth"])
    pdt.assert_frame_equal(a.tables["messages"], b.tables["messages"])
    via_run = sim.run(s, seed=4).summary
    for key, value in a.summary.items():
        assert via_run[key] == value or (math.isnan(value) and math.isnan(via_run[key])), key
    assert not a.tables["message_events"].equals(sim.run(s, seed=5).tables["message_events"])


_DIGEST = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from test_delivery import crash_scenario
import sim
r = sim.run(crash_scenario(idempotency="shared"), seed=3)
tables = r.tables["message_events"].to_csv(index=False) + r.tables["queue_depth"].to_csv(index=False)
print(hashlib.sha256(tables.encode()).hexdigest())
"""


def test_event_table_identical_across_processes():
    """Fresh interpreters with different string-hash seeds produce byte-identical event and depth tables."""
    here = str(Path(__file__).resolve().parent)
    digests = set()
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", _DIGEST, here], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"})
        digests.add(out.stdout.strip())
    r = sim.run(crash_scenario(idempotency="shared"), seed=3)
    tables = r.tables["message_events"].to_csv(index=False) + r.tables["queue_depth"].to_csv(index=False)
    digests.add(hashlib.sha256(tables.encode()).hexdigest())
    assert len(digests) == 1


def _table(rows):
    base = dict.fromkeys(EVENT_COLUMNS, "")
    base.update(tag=-1, redelivered=False, delivery_count=0, attempt=0)
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(EVENT_COLUMNS))


def test_checker_classifies_a_hand_built_history():
    """Statuses, duplicates, out-of-order receptions, attempts and latency from a small hand-made table."""
    ev = _table([
        {"time": 0, "event": "publish", "msg_id": "a", "node": "p"},
        {"time": 1, "event": "publish", "msg_id": "b", "node": "p"},
        {"time": 2, "event": "publish", "msg_id": "c", "node": "p"},
        {"time": 3, "event": "publish", "msg_id": "d", "node": "p"},
        {"time": 4, "event": "publish", "msg_id": "e", "node": "p"},
        {"time": 5, "event": "publish", "msg_id": "f", "node": "p"},
        *[{"time": 6, "event": "confirm", "msg_id": m, "node": "p"} for m in "abcdf"],
        {"time": 7, "event": "receive", "msg_id": "b", "node": "c", "queue": "q"},
        {"time": 8, "event": "receive", "msg_id": "a", "node": "c", "queue": "q"},  # out of order
        {"time": 9, "event": "process", "msg_id": "a", "node": "c", "queue": "q"},
        {"time": 10, "event": "side_effect", "msg_id": "a", "node": "c", "queue": "q"},
        {"time": 11, "event": "receive", "msg_id": "a", "node": "c", "queue": "q", "redelivered": True},
        {"time": 12, "event": "process", "msg_id": "a", "node": "c", "queue": "q"},
        {"time": 13, "event": "side_effect", "msg_id": "a", "node": "c", "queue": "q"},
        {"time": 14, "event": "process", "msg_id": "b", "node": "c", "queue": "q"},
        {"time": 15, "event": "fail", "msg_id": "b", "node": "c", "queue": "q"},
        {"time": 16, "event": "enqueue", "msg_id": "b", "node": "broker", "queue": "dlq"},
        {"time": 17, "event": "remain", "msg_id": "c", "node": "broker", "queue": "q"},
        {"time": 18, "event": "drop", "msg_id": "d", "node": "broker", "queue": "q", "reason": "expired"},
    ])
    report = check_delivery(ev, dead_letter_queues=["dlq"])
    status = dict(zip(report.messages["msg_id"], report.messages["status"]))
    assert status == {"a": "processed", "b": "dead_lettered", "c": "remaining", "d": "dropped",
                      "e": "unconfirmed", "f": "lost"}
    assert report.lost_ids == ["f"] and not report.ok
    c = report.counts
    assert [c[k] for k in ("duplicate_deliveries", "duplicate_side_effects", "out_of_order", "redeliveries")] == [1] * 4
    assert report.attempts == {"mean": 1.5, "max": 2.0}
    assert report.latency["p50"] == 10.0 and report.latency["count"] == 1


def test_timelines_load_backlog_and_drain_time():
    """Load counts every processing attempt; the backlog rises while the broker is down and drains after."""
    s = crash_scenario(faults=FAULTS[:1], crash_probability=0.0)
    r = sim.run(s, seed=2)
    ev = r.tables["message_events"]
    load = load_timeline(ev, 500.0, 10_000.0)
    assert load["calls"].sum() == (ev["event"] == "process").sum()
    assert load["served"].sum() == (ev["event"] == "side_effect").sum()
    backlog = backlog_timeline(ev, 250.0, end=10_000.0)
    assert backlog["backlog"].iloc[-1] == 0
    assert backlog[backlog["time"].between(2250, 2500)]["backlog"].max() > 10  # publishes pile up while it is down
    assert 0 < drain_time(ev, 2500.0, 2.0) < 2000
    depth = r.tables["queue_depth"][r.tables["queue_depth"]["queue"] == "work"]
    assert depth["time"].is_monotonic_increasing and (depth["ready"] >= 0).all()
