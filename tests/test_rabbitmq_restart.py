"""Validation case 5: a broker restart, on a RabbitMQ node the test starts itself (other ports, own data).

Persistent messages in durable queues are kept, transient messages on a classic queue are lost, a quorum
queue keeps everything; the simulation predicts the same, message by message.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.rabbitmq import run_rabbitmq
from sim.rabbitmq.compare import compare
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
    """The node went down at 250 ms (every client lost its connection within 50 ms), came back, and every
    client reconnected."""
    _, _, real, _ = restart
    ne = real.node_events
    assert local_broker_node.restarts == 1
    assert list(ne.loc[ne["node"] == "broker", "event"]) == ["broker_down", "broker_up"]
    lost = ne[ne["event"].str.startswith("connection_closed: 320")]
    assert set(lost["node"]) == {"pc", "tc", "pq", "tq", "c1", "c2", "observer"}
    assert lost["time"].between(250, 300).all()
    up = ne.loc[ne["event"] == "broker_up", "time"].iloc[0]
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


@pytest.mark.xfail(strict=True, reason="sim.messaging.broker.Broker.crash marks every message a classic queue "
                   "recovers as redelivered (what RabbitMQ does after a killed node); after a clean restart "
                   "(stop_app/start_app) RabbitMQ 3.10.8 marks only the messages that had been delivered")
def test_redelivered_flags_agree(restart):
    """Every delivery after the restart carries the same redelivered flag in the simulation as on the broker."""
    _, _, _, c = restart
    assert c.counts.set_index("quantity").loc["redelivered", "agree"]


def test_cli_validates_a_restart_on_a_node_of_its_own(tmp_path, capsys):
    """capsim validate --local-node starts its own node for a scenario that restarts the broker: the kept and
    lost messages agree; the verdict names the redelivered flags (the model's difference) and exits 1."""
    from sim.cli import main

    code = main(["validate", "rabbitmq", str(SCENARIO), "--local-node", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "verdict: differ" in out and "differs: counts: redelivered" in out
    counts = pd.read_csv(tmp_path / "counts.csv").set_index("quantity")
    assert counts.loc["lost", "agree"] and counts.loc["lost", "broker"] == 10
    assert counts.loc["messages with the same status", "agree"]
