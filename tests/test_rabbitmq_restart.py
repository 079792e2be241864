"""Validation case 5: a clean broker restart, on a RabbitMQ node the test starts itself (other ports, own data).

Persistent messages in durable queues are kept, transient messages on a classic queue are lost, a quorum
queue keeps everything, and only messages delivered before the restart come back redelivered; the simulation
predicts the same, message by message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.rabbitmq import run_rabbitmq
from sim.rabbitmq.compare import compare
from sim.rabbitmq.testing import with_events
from sim.scenario import Scenario

pytestmark = pytest.mark.rabbitmq

SCENARIO = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "rabbitmq-broker-restart.toml"


@pytest.fixture(scope="module")
def restart(local_broker_node):
    s = Scenario.from_toml(SCENARIO)
    real = run_rabbitmq(s, broker=local_broker_node)
    simulated = sim.run(s)
    return s, simulated, real, compare(simulated, real)


def status(result):
    m = result.tables["messages"]
    return dict(zip(m["msg_id"], m["status"]))


def test_the_broker_really_restarted(restart, local_broker_node):
    """The node went down at 250 ms (every client lost its connection while it was stopping: within 50 ms on
    an idle machine, allowed 250 ms on a loaded one), came back, and every client reconnected."""
    _, _, real, _ = restart
    ne = real.node_events
    assert local_broker_node.restarts == 1
    assert list(ne.loc[ne["node"] == "broker", "event"]) == ["broker_down", "broker_up"]
    lost = ne[ne["event"].str.startswith("connection_closed: 320")]
    assert set(lost["node"]) == {"pc", "tc", "pq", "tq", "c1", "c2", "observer"}
    up = ne.loc[ne["event"] == "broker_up", "time"].iloc[0]
    assert lost["time"].between(250, min(500, up)).all()
    back = ne[(ne["event"] == "ready") & (ne["time"] > up - 1000)]
    assert set(back["node"]) == {"pc", "tc", "pq", "tq", "c1", "c2", "observer"}


def test_kept_and_lost_messages_agree(restart):
    """Classic queue: persistent messages kept, the ten transient ones lost; quorum queue: everything kept.
    The simulation gives every message the broker's status."""
    _, simulated, real, c = restart
    real_status = status(real)
    assert {m for m, st in real_status.items() if st == "lost"} == {f"tc-{i}" for i in range(10)}
    assert all(real_status[f"{p}-{i}"] == "processed" for p in ("pc", "pq", "tq") for i in range(10))
    assert status(simulated) == real_status
    for q in ("published", "confirmed", "processed", "lost", "remaining", "duplicated",
              "messages with the same status", "messages with the same attempts"):
        assert (r := c.counts.set_index("quantity").loc[q])["agree"], r


def test_in_flight_message_is_redelivered_after_the_restart(restart):
    """The message being processed when the broker went down is processed again afterwards (its ack was lost):
    redelivered on both queues, with delivery count 1 on the quorum queue."""
    _, _, real, _ = restart
    ev = real.tables["message_events"]
    rec = ev[(ev["event"] == "receive") & ev["redelivered"]]
    by_queue = {q: list(zip(g["msg_id"], g["delivery_count"])) for q, g in rec.groupby("queue")}
    assert by_queue == {"classic": [("pc-2", 0)], "quorum": [("pq-2", 1)]}
    assert real.verdicts["delivery"]["duplicate_side_effects"] == 2


def test_redelivered_flags_agree(restart):
    """Both runs restart the broker cleanly (clean = true; stop_app/start_app on the broker): every delivery
    carries the same redelivered flag in the simulation as on the broker, so the semantic verdict agrees."""
    _, _, _, c = restart
    table = c.counts.set_index("quantity")
    assert table.loc["redelivered", "agree"] and table.loc["messages with the same deliveries", "agree"]
    assert c.semantics == "agree" and c.semantic_differences == []


def test_a_hard_kill_in_the_simulation_is_told_from_the_clean_restart(restart):
    """The same scenario with the broker killed instead (clean = false) marks the classic queue's messages that
    were never delivered before the restart (pc-3 to pc-9) redelivered, which the broker did not: the comparison
    reports exactly those messages and the redelivered rows."""
    s, _, real, _ = restart
    killed = sim.run(s.variant({"faults.schedule[0].clean": False}))
    c = compare(killed, real)
    assert c.semantics == "differ" and c.verdict == "differ"
    assert [d.split(":")[1].strip() for d in c.semantic_differences] == ["redelivered",
                                                                         "messages with the same deliveries"]
    assert list(c.messages.index[~c.messages["deliveries_agree"]]) == [f"pc-{i}" for i in range(3, 10)]


def test_one_more_redelivered_flag_is_caught(restart):
    """One more redelivered flag on the broker, on a quorum-queue message delivered before the restart: the
    semantic verdict differs and names both rows."""
    _, simulated, real, _ = restart
    ev = real.tables["message_events"].copy()
    first = ev.index[(ev["event"] == "receive") & (ev["msg_id"] == "pq-0")][0]
    ev.loc[first, "redelivered"] = True
    c = compare(simulated, with_events(real, ev))
    assert c.semantics == "differ" and c.verdict == "differ"
    assert any(d.startswith("counts: redelivered") for d in c.semantic_differences)
    assert any(d.startswith("counts: messages with the same deliveries") for d in c.semantic_differences)


def test_cli_validates_a_restart_on_a_node_of_its_own(tmp_path, capsys):
    """capsim validate --local-node starts its own node for a scenario that restarts the broker (once per broker
    run): kept and lost messages and every redelivered flag agree in every run, and the exit status follows the
    verdict."""
    from sim.cli import main

    code = main(["validate", "rabbitmq", str(SCENARIO), "--local-node", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["semantics"] == "agree" and "semantics: agree" in out and "differs: counts" not in out
    assert verdict["broker_runs"] == 3
    assert code == {"agree": 0, "timing differs": 4}[verdict["verdict"]]
    counts = pd.read_csv(tmp_path / "counts.csv").set_index("quantity")
    assert counts.loc["lost", "agree"] and counts.loc["lost", "broker"] == 10
    assert counts.loc["messages with the same status", "agree"] and counts.loc["redelivered", "agree"]
