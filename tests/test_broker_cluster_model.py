"""The broker-cluster model (sim.messaging.cluster_model): RabbitMQ 3.10 queue types under one partition, per mode.

Expectations come from RabbitMQ's documentation (partitions, quorum queues, classic
queue mirroring), Jepsen's 2014 analysis and what the real 3-node cluster showed
(tests/test_rabbitmq_cluster.py), never from a previous run's numbers; the few
counts asserted exactly are closed forms of the scenario (periodic publishing at a
known rate over a window the model's stated delays define).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sim.checkers.cluster_history import HISTORY_COLUMNS, check_confirmed_delivered, message_outcomes
from sim.errors import ScenarioError
from sim.messaging.cluster_model import model_report, partition_sides, run_cluster_model
from sim.messaging.cluster_scenario import load_cluster_scenario

NODES = ("n1", "n2", "n3")
CUT, HEAL = 3000.0, 8000.0
RATE = 50.0
# the model's stated defaults: detection 1.125 x 4 s, reconnect 1 s, boot 0.3 s
DETECT, RECONNECT, BOOT = 4500.0, 1000.0, 300.0


def scenario(qtype: str, mode: str, *, home: str = "n3", isolate: str = "n3", consumers=(("c1", "n1"),),
             publishers=(("p1", "n1"), ("p3", "n3")), **cluster) -> dict:
    return {"run": {"duration": "12s", "drain": "8s"},
            "broker": {"cluster": {"nodes": 3, "partition_handling": mode, **cluster},
                       "queue": {"type": qtype, "node": home},
                       "publishers": [{"name": n, "node": x, "rate": RATE} for n, x in publishers],
                       "consumers": [{"name": n, "node": x} for n, x in consumers]},
            "faults": {"schedule": [{"kind": "isolate", "node": isolate, "start": CUT, "end": HEAL}]}}


def lost_ids(run) -> list[str]:
    return check_confirmed_delivered(run.history).lost


def published_at(run) -> pd.Series:
    h = run.history
    return h[h["event"] == "published"].set_index("msg_id")["time"]


@pytest.mark.parametrize("mode", ["pause_minority", "autoheal", "ignore"])
@pytest.mark.parametrize("home", ["n1", "n3"])
def test_quorum_queue_never_loses_a_confirmed_message(mode, home):
    """Quorum queues (Raft): a message is confirmed only once a majority has it, in every mode, wherever the leader."""
    run = run_cluster_model(scenario("quorum", mode, home=home))
    verdict = check_confirmed_delivered(run.history)
    assert verdict.ok, verdict.lost[:5]
    assert verdict.counts["confirmed"] > 0


def test_quorum_minority_publishes_are_not_confirmed_during_the_partition():
    """The side without a majority cannot commit: nothing the isolated node's publisher sends during the cut is
    confirmed before its channel resends, which under ignore (no new leader announces itself) is the channel's
    timer: 10 s after its 32nd pending command (rabbit_fifo_client; as measured on the real cluster). The
    majority side, with the leader, is never interrupted."""
    run = run_cluster_model(scenario("quorum", "ignore", home="n1"))
    h = run.history
    t = published_at(run)
    cut_off = {m for m in t.index if m.startswith("p3-") and CUT <= t[m] < HEAL}
    confirms = h[(h["event"] == "confirmed") & h["msg_id"].isin(cut_off)]
    resend = CUT + 31 * 1000.0 / RATE + 10000.0  # the 32nd pending publish, plus the timer
    assert len(cut_off) > 0 and len(confirms) == len(cut_off)
    assert confirms["time"].min() == resend + 1.0  # the confirm travels 1 ms (latency)
    report = model_report(run, NODES)
    assert report.availability["minority"] == 0.0
    assert report.availability["majority"] == 1.0  # leader and a majority on the majority side
    assert report.counts["lost"] == 0


def test_classic_queue_on_the_paused_minority_confirms_then_loses_the_majority_side():
    """As on the real cluster (pause_minority): a classic queue on the isolated node confirms what the majority
    side publishes while its node is away (from the detection to its return: heal + reconnect + boot), and never
    delivers it; what was sent before the detection is nacked then; messages published on the queue's own node
    survive its pause."""
    run = run_cluster_model(scenario("classic", "pause_minority"))
    lost = lost_ids(run)
    t = published_at(run)
    assert lost and all(m.startswith("p1-") for m in lost)
    away, back = CUT + DETECT, HEAL + RECONNECT + BOOT
    assert all(away <= t[m] < back for m in lost)
    assert len(lost) == round((back - away) * RATE / 1000.0)  # every majority publish of the window
    m = message_outcomes(run.history).set_index("msg_id")
    nacked = m.index[m["publish"] == "nacked"]
    assert len(nacked) == round(DETECT * RATE / 1000.0) and all(CUT <= t[i] < away for i in nacked)
    states = run.node_states
    n3 = states[states["node"] == "n3"]
    assert n3["state"].tolist() == ["running", "stopped", "running"]
    assert n3["time"].tolist()[1:] == [CUT + DETECT, back]


def test_classic_queue_on_the_majority_loses_nothing_under_pause_minority():
    """The same partition with the classic queue on a majority node: minority publishes are not confirmed, none lost."""
    run = run_cluster_model(scenario("classic", "pause_minority", home="n1"))
    assert check_confirmed_delivered(run.history).ok


@pytest.mark.parametrize("mode", ["autoheal", "ignore"])
def test_classic_queue_on_the_cut_node_loses_the_other_sides_publishes_in_every_mode(mode):
    """Without pausing, the majority side's publishes to a classic queue on the isolated node are confirmed and
    dropped while the nodes are apart; the isolated node's own publishes are kept (durable, on its disk)."""
    run = run_cluster_model(scenario("classic", mode))
    lost = lost_ids(run)
    assert lost and all(m.startswith("p1-") for m in lost)
    t = published_at(run)
    # from the detection until the node is back (autoheal: restarted)
    assert all(CUT + DETECT <= t[m] < HEAL + RECONNECT + BOOT for m in lost)


@pytest.mark.parametrize("mode", ["autoheal", "ignore"])
def test_mirrored_queue_split_brain_loses_the_losing_sides_confirmed_messages(mode):
    """ha-mode all under autoheal / ignore (the operator restarts the losing side): the isolated side promotes its
    own leader and confirms its publishes; when it restarts on heal its copy is discarded: confirmed, lost."""
    run = run_cluster_model(scenario("mirrored", mode, home="n1", manual_restart="2s"))
    lost = lost_ids(run)
    assert lost and all(m.startswith("p3-") for m in lost)
    t = published_at(run)
    restart = HEAL + RECONNECT + (2000.0 if mode == "ignore" else 0.0)
    # from the cut (publishes of the detection window are confirmed once the mirrors are declared down) until
    # the isolated node restarts
    assert all(CUT <= t[m] <= restart for m in lost)
    states = run.node_states
    assert "stopped" in states.loc[states["node"] == "n3", "state"].tolist()  # the losing node restarted


def test_mirrored_queue_under_ignore_stays_split_without_an_operator():
    """ignore and no restart: both leaders live on after the heal; the isolated side's messages reach no consumer
    on the other side (the partition persists), so they are lost for this workload."""
    run = run_cluster_model(scenario("mirrored", "ignore", home="n1"))
    lost = lost_ids(run)
    assert lost and all(m.startswith("p3-") for m in lost)
    assert (run.node_states["state"] == "running").all()


def test_mirrored_queue_under_pause_minority_survives_one_isolation():
    """One isolation of the leader's node: the majority promotes its oldest (synchronised) mirror: nothing lost."""
    run = run_cluster_model(scenario("mirrored", "pause_minority", home="n3"))
    verdict = check_confirmed_delivered(run.history)
    assert verdict.ok and verdict.counts["confirmed"] > 0


def test_mirrored_queue_loses_confirmed_messages_under_pause_minority_when_partitions_rotate():
    """Jepsen 2014: nodes that return rejoin as empty, unsynchronised mirrors; once every synchronised copy has
    been isolated in turn, an unsynchronised mirror is promoted and the messages it never had are lost, even under
    pause_minority. Consumers read only at the end, as in Jepsen's test."""
    sc = {"run": {"duration": "30s", "drain": "10s"},
          "broker": {"cluster": {"nodes": 3, "partition_handling": "pause_minority"},
                     "queue": {"type": "mirrored", "node": "n1"},
                     "publishers": [{"name": "p1", "node": "n1", "failover": ["n2", "n3"]}],
                     "consumers": [{"name": "c1", "node": "n2", "start": "30s", "failover": ["n1", "n3"]}]},
          "faults": {"schedule": [{"kind": "isolate", "node": n, "start": f"{s}s", "end": f"{s + 5}s"}
                                  for n, s in (("n3", 3), ("n2", 12), ("n1", 21))]}}
    run = run_cluster_model(sc)
    lost = lost_ids(run)
    t = published_at(run)
    n3_back = 8000.0 + RECONNECT + BOOT  # n3, the oldest of the unsynchronised mirrors, joined then
    assert lost and all(t[m] < n3_back for m in lost)
    # the same rotation with a quorum queue loses nothing
    sc["broker"]["queue"]["type"] = "quorum"
    assert check_confirmed_delivered(run_cluster_model(sc).history).ok


def test_duplicates_when_a_promoted_mirror_missed_the_acks():
    """Acks sent to a mirror that is cut off, and declared down before the cut ends, never reach it: when it is
    promoted it delivers those messages again, marked redelivered. The consumers start after the cut, so a
    backlog every member holds is consumed on the leader's side while the isolated mirror misses the acks."""
    sc = {"run": {"duration": "12s", "drain": "8s"},
          "broker": {"cluster": {"nodes": 3, "partition_handling": "autoheal"},
                     "queue": {"type": "mirrored", "node": "n1"},
                     "publishers": [{"name": "p1", "node": "n1"}],
                     "consumers": [{"name": "c1", "node": "n1", "start": CUT + 500},
                                   {"name": "c3", "node": "n3", "start": CUT + 500}]},
          "faults": {"schedule": [{"kind": "isolate", "node": "n3", "start": CUT, "end": HEAL}]}}
    run = run_cluster_model(sc)
    m = message_outcomes(run.history)
    dup = m[m["deliveries"] > 1]
    assert len(dup) > 0 and (dup["redeliveries"] >= 1).all()
    report = model_report(run, NODES)
    assert report.counts["duplicates"] == len(dup)


def test_history_has_the_real_clusters_shape_and_runs_are_deterministic():
    """Same scenario -> the identical history; columns and event types as the real cluster's clients record."""
    a = run_cluster_model(scenario("mirrored", "autoheal", home="n1"))
    b = run_cluster_model(scenario("mirrored", "autoheal", home="n1"))
    assert list(a.history.columns) == HISTORY_COLUMNS
    pd.testing.assert_frame_equal(a.history, b.history)
    pd.testing.assert_frame_equal(a.node_states, b.node_states)
    assert a.history["time"].is_monotonic_increasing
    assert set(a.history["type"]) <= {"invoke", "ok", "fail", "info"}


def test_pause_closes_connections_and_clients_fail_over():
    """A paused node closes its clients' connections (their pending publishes end unknown); a publisher with a
    failover node reconnects there and publishes on while its home node is paused."""
    sc = scenario("quorum", "pause_minority", home="n1")
    sc["broker"]["publishers"][1]["failover"] = ["n1"]
    run = run_cluster_model(sc)
    h = run.history
    p3 = h[(h["client"] == "p3") & (h["event"] == "published")]
    assert (p3["node"] == "n1").any() and (p3["node"] == "n3").any()
    assert ((h["client"] == "p3") & (h["event"] == "unknown") & h["detail"].str.startswith("connection lost")).any()
    assert check_confirmed_delivered(h).ok


def test_recovery_after_the_heal_is_the_paused_nodes_return():
    """pause_minority: the isolated node's publisher is back (confirmed in time) after reconnect + boot, plus its
    next reconnect attempt (every 500 ms) and publishing tick."""
    run = run_cluster_model(scenario("quorum", "pause_minority", home="n1"))
    report = model_report(run, NODES)
    assert RECONNECT + BOOT <= report.recovery <= RECONNECT + BOOT + 500.0 + 1000.0 / RATE


def test_partition_sides():
    from sim.faultspec import Partition

    assert partition_sides(NODES, Partition(start=0, end=1, groups=(("n3",),))) == \
        {"n3": "minority", "n1": "majority", "n2": "majority"}
    assert set(partition_sides(("a", "b", "c", "d"), Partition(start=0, end=1, groups=(("a", "b"),))).values()) == \
        {"side1", "side2"}


@pytest.mark.parametrize("patch, field", [
    ({"cluster": {"partition_handling": "pause_majority"}}, "broker.cluster.partition_handling"),
    ({"cluster": {"nodes": 0}}, "broker.cluster.nodes"),
    ({"cluster": {"net_ticktime": "-1s"}}, "broker.cluster.net_ticktime"),
    ({"cluster": {"colour": 1}}, "broker.cluster.colour"),
    ({"queue": {"type": "stream"}}, "broker.queue.type"),
    ({"queue": {"node": "n9"}}, "broker.queue.node"),
    ({"publishers": [{"name": "p", "node": "n4"}]}, "broker.publishers[0].node"),
    ({"publishers": [{"name": "p", "node": "n1", "failover": ["x"]}]}, "broker.publishers[0].failover[0]"),
    ({"publishers": [{"name": "p", "node": "n1", "rate": 0}]}, "broker.publishers[0].rate"),
    ({"publishers": []}, "broker.publishers"),
    ({"consumers": [{"name": "p1", "node": "n1"}]}, "broker.consumers[0].name"),
])
def test_bad_input_names_the_field(patch, field):
    sc = scenario("quorum", "pause_minority")
    for key, value in patch.items():
        if isinstance(value, dict):
            sc["broker"][key].update(value)
        else:
            sc["broker"][key] = value
    with pytest.raises(ScenarioError) as err:
        load_cluster_scenario(sc)
    assert err.value.path == field


@pytest.mark.parametrize("fault, field", [
    ({"kind": "crash", "node": "n1", "start": 0, "end": 1}, "faults.schedule[0].kind"),
    ({"kind": "isolate", "node": "n7", "start": 0, "end": 1}, "faults.schedule[0].node"),
    ({"kind": "partition", "groups": [["n1", "x"]], "start": 0, "end": 1}, "faults.schedule[0].groups[0][1]"),
])
def test_bad_faults_name_the_field(fault, field):
    sc = scenario("quorum", "pause_minority")
    sc["faults"] = {"schedule": [fault]}
    with pytest.raises(ScenarioError) as err:
        load_cluster_scenario(sc)
    assert err.value.path == field


def test_a_report_needs_a_partition():
    sc = scenario("quorum", "ignore")
    sc["faults"] = {}
    run = run_cluster_model(sc)
    assert check_confirmed_delivered(run.history).ok
    with pytest.raises(ValueError, match="no partition"):
        model_report(run, NODES)
    assert math.isfinite(run.meta["net_ticktime"])


def test_the_matrix_experiment_shows_the_predicted_headline(tmp_path):
    """experiments/rabbitmq_cluster_matrix.py --quick: the predictions its docstring states."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "rabbitmq_cluster_matrix.py"
    spec = importlib.util.spec_from_file_location("_experiment_rabbitmq_cluster_matrix", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path), "--executor", "serial"]) == 0
    df = pd.read_csv(tmp_path / "cluster_matrix.csv")
    lost = df.groupby(["queue", "mode", "queue_node", "workload"])["lost"].max()
    assert (lost["quorum"] == 0).all()
    classic = lost["classic"]
    assert classic["pause_minority", "majority"].max() == 0
    assert (classic["pause_minority", "minority"] > 0).all()
    assert (classic[["autoheal", "ignore"]] > 0).all()
    mirrored = lost["mirrored"]
    assert (mirrored["pause_minority"] == 0).all()
    assert (mirrored.xs("drain", level="workload")[["autoheal", "ignore"]] > 0).all()


def test_a_message_delivered_before_its_disk_sync_can_end_unconfirmed():
    """A classic queue confirms after its disk sync (25 ms) and delivers at once: a publish on the node within the
    sync interval before it pauses is delivered to the local consumer, and its publisher's connection closes
    before the confirm (seen on the real cluster)."""
    run = run_cluster_model(scenario("classic", "pause_minority", consumers=(("c3", "n3"),)))
    report = model_report(run, NODES)
    pause = CUT + DETECT
    t = published_at(run)
    assert report.unconfirmed_delivered and all(pause - 25.0 < t[m] < pause for m in report.unconfirmed_delivered)
    assert all(m.startswith("p3-") for m in report.unconfirmed_delivered)
    at_once = run_cluster_model(scenario("classic", "pause_minority", consumers=(("c3", "n3"),), sync_interval=0))
    assert not model_report(at_once, NODES).unconfirmed_delivered


@pytest.mark.parametrize("mode, duplicated", [("autoheal", True), ("ignore", True), ("pause_minority", False)])
def test_quorum_deliveries_across_an_undetected_cut_come_back_as_duplicates(mode, duplicated):
    """As on the real cluster (autoheal): the leader, on the majority, delivers to a consumer on the isolated node
    until it declares the node down, then returns those messages, which the majority's consumer gets again
    (redelivered); the held deliveries still arrive when the cut ends if the consumer's node kept running. A paused
    node has closed the consumer's connection: no duplicates. Either way nothing confirmed is lost."""
    run = run_cluster_model(scenario("quorum", mode, home="n1", consumers=(("c1", "n1"), ("c3", "n3"))))
    h = run.history
    report = model_report(run, NODES)
    assert report.counts["lost"] == 0
    assert bool(report.duplicated) is duplicated
    deliveries = h[h["event"] == "delivered"]
    for msg in report.duplicated:
        mine = deliveries[deliveries["msg_id"] == msg]
        assert set(mine["client"]) == {"c1", "c3"}
        assert mine.loc[mine["client"] == "c1", "redelivered"].all()
        assert (mine.loc[mine["client"] == "c3", "time"] >= HEAL).all()
