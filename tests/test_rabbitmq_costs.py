"""The cost probes on the local broker (``sim.rabbitmq.costs``), and a rule they found.

The figures themselves depend on the machine, so the tests check what holds on
any machine: every probe reports a sample for each queue type, confirms and
nacks are told apart (a probe whose broker confirmed a publish it should have
refused fails), and dead-lettering happens after the TTL, not before. The overflow
rule the probes found (a quorum queue takes one message beyond ``max_length``) is
checked against the model for several limits.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sim.config import build
from sim.messaging.broker import Broker, Message
from sim.messaging.costs import BrokerCosts
from sim.messaging.topology import Topology
from sim.rabbitmq import costs
from sim.rabbitmq.amqp import close_quietly, connect_blocking, pika_module
from sim.rabbitmq.lease import Lease
from sim.rabbitmq.topology import declared_topology

pytestmark = pytest.mark.rabbitmq


def test_every_probe_reports_each_queue_type(rabbitmq):
    samples = costs.measure_costs(rabbitmq, repeats=5, warmup=1)
    table = costs.cost_table(samples)
    assert set(zip(table["cost"], table["queue_type"])) == {(c, q) for c in costs.COSTS for q in costs.QUEUE_TYPES}
    assert (table["n"] == 5).all()
    assert (samples["ms"] > -costs.TTL_MS).all() and samples["ms"].notna().all()
    # expiry never comes early: the dead-lettered delivery is at least the TTL after the publish
    assert (samples.loc[samples["cost"] == "ttl_dead_letter", "ms"] >= 0).all()
    base = table.set_index(["cost", "queue_type"])
    assert base["extra"].isna().sum() == 1  # a classic queue's deliver is the baseline
    assert base.loc[("requeue", "quorum"), "extra"] == pytest.approx(
        base.loc[("requeue", "quorum"), "p50"] - base.loc[("deliver", "classic"), "p50"])
    assert not base.loc[("requeue", "quorum"), ["p50", "extra"]].isna().any()
    suggested = build(BrokerCosts, tomllib.loads(costs.toml_costs(table))["protocol"]["broker_costs"], "costs")
    assert suggested.quorum.requeue == max(0.0, round(float(base.loc[("requeue", "quorum"), "extra"]), 2))


def test_bad_probe_arguments_are_refused(rabbitmq):
    with pytest.raises(ValueError, match="repeats must be an integer in"):
        costs.measure_costs(rabbitmq, repeats=0)
    with pytest.raises(ValueError, match="cost must be one of"):
        costs.measure_costs(rabbitmq, repeats=1, costs=["fsync"])
    with pytest.raises(ValueError, match="queue type must be one of"):
        costs.measure_costs(rabbitmq, repeats=1, queue_types=["stream"])


def _model_taken(queue_type: str, limit: int) -> int:
    b = Broker(build(Topology, {"queues": [{"name": "q", "type": queue_type, "max_length": limit,
                                            "overflow": "reject-publish"}]}, "t"))
    b.open_channel("p")
    acks = [c.ack for i in range(8) for c in b.publish(0, "p", Message(f"m{i}"), exchange="", routing_key="q", seq=i)]
    return acks.index(False)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_full_queue_takes_as_many_messages_on_the_broker_as_in_the_model(rabbitmq, queue_type):
    pika = pika_module()
    for limit in (0, 1, 3):
        topo = build(Topology, {"queues": [{"name": "q", "type": queue_type, "max_length": limit,
                                            "overflow": "reject-publish"}]}, "t")
        with declared_topology(rabbitmq, topo, label="overflow", lease=Lease(lifetime_ms=60_000.0)) as names:
            conn = connect_blocking(rabbitmq)
            try:
                ch = conn.channel()
                ch.confirm_delivery()
                taken = costs.fill_until_nack(ch, "", names.real("q"), pika.BasicProperties(delivery_mode=2), pika)
            finally:
                close_quietly(conn)
        assert taken == _model_taken(queue_type, limit), (queue_type, limit)


def test_the_experiments_quick_mode_writes_its_tables_and_figure(rabbitmq, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / "broker_costs.py"
    spec = importlib.util.spec_from_file_location("_experiment_broker_costs_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    for name in ("broker_costs.csv", "broker_costs_table.csv", "broker_costs.toml", "broker_costs.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    suggested = tomllib.loads((tmp_path / "broker_costs.toml").read_text())["protocol"]["broker_costs"]
    assert set(suggested) == {"classic", "quorum"}
    build(BrokerCosts, suggested, "costs")  # a valid [protocol.broker_costs] table
    assert "suggested model costs" in capsys.readouterr().out
