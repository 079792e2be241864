"""Differential testing of the broker model against RabbitMQ (sim/rabbitmq/generate.py, differential.py).

Without a broker: generated scenarios are valid, supported by the adapter and drain in the model; the runner's
classes (agree, differ, broker not reproducible) against stand-in brokers, one of them a deliberately wrong
model; hypothesis shrinks a disagreement; the comparison judges a message routed to several queues per queue;
the model's credit leak past a delivery limit. With the local broker (marked ``rabbitmq``): the broker has that
leak; a fixed sample of generated scenarios agrees; the named cases of experiments/scenarios/ that differential
testing found agree; the experiment's quick mode.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

import sim
from sim.config import build
from sim.messaging.broker import Broker, Delivery, Message
from sim.messaging.history import MessageLog
from sim.messaging.topology import Topology
from sim.rabbitmq.compare import compare
from sim.rabbitmq.differential import differential, judged_rows, shrink, timing_kind
from sim.rabbitmq.generate import DRAIN, compact_toml, sample, scenarios
from sim.rabbitmq.runner import check_supported
from sim.rabbitmq.testing import with_events
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "experiments" / "scenarios"


# -- the generator ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("racy", [False, True])
def test_generated_scenarios_are_valid_supported_and_drain_in_the_model(racy):
    """20 numbered samples per profile: valid (they were built by Scenario.from_dict), the adapter runs them, their
    compact TOML reads back as the same scenario, they use the idle drain, and the model drains every one."""
    for number in range(20):
        s = sample(number, racy=racy)
        assert s == sample(number, racy=racy)  # the same on every call
        check_supported(s)
        assert Scenario.from_toml_string(compact_toml(s)) == s
        assert s.run.drain is not None and s.to_dict()["run"]["drain"]["until"] == DRAIN["until"]
        r = sim.run(s)
        assert r.summary["messaging.drained"] is True, compact_toml(s)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenarios())
def test_hypothesis_scenarios_are_valid_and_supported(s):
    check_supported(s)
    assert Scenario.from_toml_string(compact_toml(s)) == s


def test_the_generator_covers_what_it_promises():
    """Over 60 samples: every exchange type, both queue types, every retry mode, each overflow mode, crashes,
    poison messages, priorities, mandatory and republishing publishers all occur."""
    seen: set[str] = set()
    for number in range(60):
        d = sample(number).to_dict()["protocol"]
        topo = d["topology"]
        seen |= {f"exchange:{e['type']}" for e in topo["exchanges"]}
        seen |= {f"queue:{q['type']}" for q in topo["queues"]}
        seen |= {f"overflow:{q['overflow']}" for q in topo["queues"] if q.get("max_length") is not None}
        seen |= {"priority" for q in topo["queues"] if q.get("max_priority")}
        seen |= {"delivery_limit" for q in topo["queues"] if q.get("delivery_limit") is not None}
        for c in d["consumers"]:
            seen.add(f"retry:{c['retry']['mode']}")
            seen |= {"via_exchange" for _ in [0] if c["retry"].get("via_exchange")}
            seen |= {"crash" for _ in [0] if c["crash_probability"] > 0}
            seen |= {"poison" for _ in [0] if c["poison_probability"] > 0}
            seen |= {"auto_ack" for _ in [0] if c["auto_ack"]}
            seen |= {f"idempotency:{c['idempotency']['store']}" for _ in [0] if c.get("idempotency")}
        for p in d["publishers"]:
            seen |= {k for k in ("mandatory", "republish") if p[k]}
            seen |= {"no confirms" for _ in [0] if not p["confirms"]}
    expected = {"exchange:direct", "exchange:topic", "exchange:fanout", "queue:classic", "queue:quorum",
                "overflow:drop-head", "overflow:reject-publish", "overflow:reject-publish-dlx", "priority",
                "delivery_limit", "via_exchange", "crash", "poison", "auto_ack", "mandatory", "republish",
                "no confirms", "idempotency:shared", "idempotency:local", "idempotency:local_durable"}
    expected |= {f"retry:{m}" for m in ("none", "requeue", "delivery_limit", "republish", "dlx_wait")}
    assert expected <= seen, expected - seen


# -- the runner, against stand-in brokers -----------------------------------------------------------------------
def delivery_limit_plus_one(s: Scenario) -> Scenario:
    """A wrong broker model: every delivery limit one higher than declared."""
    d = s.to_dict()
    for q in d["protocol"]["topology"]["queues"]:
        if q.get("delivery_limit") is not None:
            q["delivery_limit"] += 1
    return Scenario.from_dict(d)


def wrong_broker(s: Scenario):
    return dataclasses.replace(sim.run(delivery_limit_plus_one(s)), scenario=s)


def test_the_model_agrees_with_itself_and_a_wrong_broker_is_caught():
    """The model as its own broker agrees; a broker whose delivery limits are one higher differs (on a scenario
    whose messages reach a delivery limit), and one that is wrong only on its first run is called not
    reproducible."""
    s = Scenario.from_toml(SCENARIOS / "rabbitmq-delivery-limit.toml")
    assert differential(s, sim.run).kind == "agree"
    wrong = differential(s, wrong_broker)
    assert wrong.kind.startswith("differ: ") and "dead_lettered" in wrong.kind, wrong.kind
    assert "# differ" in wrong.report() and Scenario.from_toml_string(wrong.report()) == s
    calls = []

    def flaky(x: Scenario):
        calls.append(x)
        return wrong_broker(x) if len(calls) == 1 else sim.run(x)

    assert differential(s, flaky).kind.startswith("broker not reproducible: ") and len(calls) == 2


def loses_a_message_behind_a_topic_exchange(s: Scenario):
    """A wrong broker: with a topic exchange in the topology, message p0-3 is never seen again."""
    r = sim.run(s)
    ev = r.tables["message_events"]
    if any(e.type == "topic" for e in s.protocol.topology.exchanges):
        ev = ev[ev["msg_id"] != "p0-3"]
    return with_events(r, ev)


def test_hypothesis_shrinks_a_disagreement_to_a_minimal_scenario():
    """Against that broker, hypothesis finds a generated scenario that differs and shrinks it to what the fault
    needs: one topic exchange, one publisher of the fewest messages (5), one classic queue, one consumer that
    does not retry, no dead-letter queue and no sink."""
    found = shrink(loses_a_message_behind_a_topic_exchange, lambda k: k.startswith("differ"), budget=40,
                   max_examples=20, seed=0)
    assert found is not None and "status" in found.kind
    d = found.scenario.to_dict()["protocol"]
    assert [e["type"] for e in d["topology"]["exchanges"]] == ["topic"]
    assert [(q["name"], q["type"]) for q in d["topology"]["queues"]] == [("w0", "classic")]
    assert [p["count"] for p in d["publishers"]] == [5]
    assert [c["retry"]["mode"] for c in d["consumers"]] == ["none"]
    assert Scenario.from_toml_string(found.report()) == found.scenario


# -- the comparison of a message routed to several queues ------------------------------------------------------
def test_deliveries_and_dead_letter_reasons_are_compared_per_queue():
    """A message in two queues: the order in which the queues' deliveries interleave does not count; a changed
    redelivered flag does."""
    s = Scenario.from_toml_string("""
        [cluster]
        nodes = ["broker", "p", "c0", "c1"]
        [workload]
        clients = 0
        [run]
        duration = "200ms"
        drain = { until = "idle", limit = "2s" }
        [protocol]
        name = "messaging"
        [[protocol.topology.exchanges]]
        name = "fan"
        type = "fanout"
        [[protocol.topology.queues]]
        name = "a"
        [[protocol.topology.queues]]
        name = "b"
        [[protocol.topology.bindings]]
        exchange = "fan"
        queue = "a"
        [[protocol.topology.bindings]]
        exchange = "fan"
        queue = "b"
        [[protocol.publishers]]
        node = "p"
        exchange = "fan"
        routing_keys = ["x"]
        count = 5
        [[protocol.consumers]]
        node = "c0"
        queue = "a"
        [[protocol.consumers]]
        node = "c1"
        queue = "b"
    """)
    r = sim.run(s)
    ev = r.tables["message_events"]
    assert compare(r, r).semantics == "agree"
    receives = ev[ev["event"] == "receive"]
    # every b delivery first: the interleaving of a and b changes, nothing else
    reordered = pd.concat([ev[ev["event"] != "receive"], receives[receives["queue"] == "b"],
                           receives[receives["queue"] == "a"]], ignore_index=True)
    assert compare(r, with_events(r, reordered)).semantics == "agree"
    flipped = ev.copy()
    flipped.loc[receives.index[0], "redelivered"] = True
    c = compare(r, with_events(r, flipped))
    assert c.semantics == "differ" and any("deliveries" in d for d in c.semantic_differences)
    assert set(c.messages["deliveries_sim"]) == {"a: 0; b: 0"}


# -- the credit leak past a delivery limit ---------------------------------------------------------------------
def test_model_a_nack_past_the_delivery_limit_leaks_one_credit():
    """Prefetch 1 on a quorum queue with x-delivery-limit = 0: nacking a delivery with requeue drops it and the
    consumer then holds two deliveries; after a second such nack, three (RabbitMQ 3.10.8, measured below)."""
    topo = build(Topology, {"queues": [{"name": "q", "type": "quorum", "delivery_limit": 0}]}, "topology")
    b = Broker(topo, log=MessageLog())
    b.open_channel("pub")
    for i in range(6):
        b.publish(0, "pub", Message(f"m{i}"), exchange="", routing_key="q")
    b.open_channel("c")
    held = [e for e in b.consume(1, "c", "q", consumer_tag="t", prefetch=1) if isinstance(e, Delivery)]
    assert [d.message.msg_id for d in held] == ["m0"]
    held += [e for e in b.nack(2, "c", held[0].delivery_tag, requeue=True) if isinstance(e, Delivery)]
    assert [d.message.msg_id for d in held] == ["m0", "m1", "m2"]
    held += [e for e in b.nack(3, "c", held[-1].delivery_tag, requeue=True) if isinstance(e, Delivery)]
    assert [d.message.msg_id for d in held] == ["m0", "m1", "m2", "m3", "m4"]
    # an ack gives back one credit only
    held += [e for e in b.ack(4, "c", held[-1].delivery_tag) if isinstance(e, Delivery)]
    assert [d.message.msg_id for d in held][-1] == "m5"


# -- against the local broker -------------------------------------------------------------------------------------
@pytest.mark.rabbitmq
def test_broker_a_nack_past_the_delivery_limit_leaks_one_credit(rabbitmq):
    """The measurement behind the model's credit leak, on the local broker."""
    import uuid

    import pika

    from sim.rabbitmq.amqp import connect_blocking

    conn = connect_blocking(rabbitmq)
    try:
        ch = conn.channel()
        q = f"capsim-test-leak-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 0,
                                                     "x-expires": 60_000})
        for i in range(6):
            ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        ch.basic_qos(prefetch_count=1)
        got: list[tuple[str, int]] = []
        ch.basic_consume(q, lambda _c, m, _p, body: got.append((body.decode(), m.delivery_tag)))

        def settle(n: int) -> None:
            for _ in range(40):
                conn.process_data_events(0.05)
                if len(got) >= n:
                    break
            conn.process_data_events(0.2)  # and nothing more arrives

        settle(1)
        assert [m for m, _ in got] == ["m0"]
        ch.basic_nack(got[0][1], requeue=True)
        settle(3)
        assert [m for m, _ in got] == ["m0", "m1", "m2"]
        ch.basic_nack(got[-1][1], requeue=True)
        settle(5)
        assert [m for m, _ in got] == ["m0", "m1", "m2", "m3", "m4"]
        ch.queue_delete(q)
    finally:
        conn.close()


FIXED_SAMPLE = range(8)  # the first generated scenarios of the default profile


@pytest.mark.rabbitmq
@pytest.mark.parametrize("number", FIXED_SAMPLE)
def test_generated_scenario_agrees_with_the_broker(rabbitmq, number):
    """Generated scenario ``number``: the model and the broker agree on every semantic row."""
    outcome = differential(sample(number), rabbitmq)
    assert outcome.kind == "agree", outcome.report()


def most_held_at_a_crash(r) -> int:
    ev = r.tables["message_events"]
    abandoned = ev[(ev["event"] == "abandon") & (ev["reason"] == "crash")]
    return int(abandoned.groupby("time").size().max()) if len(abandoned) else 0


@pytest.mark.rabbitmq
def test_named_case_unroutable_drop(rabbitmq):
    """Half the messages route nowhere, without mandatory: both sides drop those 4 and lose none."""
    outcome = differential(Scenario.from_toml(SCENARIOS / "rabbitmq-unroutable-drop.toml"), rabbitmq, recheck=False)
    assert outcome.kind == "agree", outcome.report()
    for r in (outcome.simulation, outcome.broker):
        report = r.verdicts["delivery"]
        assert (report["dropped"], report["processed"], report["lost"]) == (4, 4, 0)


@pytest.mark.rabbitmq
def test_named_case_discard_without_dlx(rabbitmq):
    """Rejected and past-the-limit messages on queues without a DLX: dropped for the same reasons on both sides."""
    outcome = differential(Scenario.from_toml(SCENARIOS / "rabbitmq-discard-without-dlx.toml"), rabbitmq,
                           recheck=False)
    assert outcome.kind == "agree", outcome.report()

    def drops(r):
        ev = r.tables["message_events"]
        return ev[ev["event"] == "drop"].groupby("reason")["msg_id"].apply(sorted).to_dict()

    assert drops(outcome.simulation) == drops(outcome.broker)
    assert set(drops(outcome.broker)) == {"rejected", "delivery_limit"}
    assert outcome.broker.verdicts["delivery"]["lost"] == 0


@pytest.mark.rabbitmq
def test_named_case_credit_leak(rabbitmq):
    """Prefetch 1, yet after nacks past the delivery limit a crash returns several held messages, on both sides."""
    outcome = differential(Scenario.from_toml(SCENARIOS / "rabbitmq-credit-leak.toml"), rabbitmq, recheck=False)
    assert outcome.kind == "agree", outcome.report()
    assert most_held_at_a_crash(outcome.simulation) == most_held_at_a_crash(outcome.broker) > 1


@pytest.mark.rabbitmq
def test_experiment_quick(rabbitmq, tmp_path):
    """The experiment's quick mode on 3 scenarios writes its table and its report with the agreement rate."""
    spec = importlib.util.spec_from_file_location("_experiment_differential", ROOT / "experiments" / "differential.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--scenarios", "3", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "differential.csv")
    assert list(table["scenario"]) == [0, 1, 2] and set(table["profile"]) == {"default"}
    assert (tmp_path / "differential.png").stat().st_size > 0
    text = (tmp_path / "differential.txt").read_text()
    assert text.startswith("profile default: ") and "of 3 scenarios agree" in text
    lo, hi = module.wilson(3, 3)
    assert 0.4 < lo < 0.5 and hi == 1.0  # the Wilson interval of 3/3: [0.438, 1]


# -- timing over generated scenarios --------------------------------------------------------------------------
def test_timing_classes_name_the_quantity_and_the_faster_side():
    """Against three runs of a broker whose every hop takes 20 ms instead of 1 ms, the timing class names the judged
    rows outside their allowance and says the simulation is faster; every judged row (latency and retry-delay p50 and
    p95) comes with its ratio to the allowance. Against three runs of the model itself: agree."""
    s = Scenario.from_toml(SCENARIOS / "rabbitmq-delivery-limit.toml")
    base = sim.run(s)
    slow = sim.run(s.variant({"network.latency": {"dist": "constant", "value": 20.0}}))
    c = compare(base, [slow, slow, slow])
    kind = timing_kind(c)
    assert kind.startswith("differ: ") and "latency p50: simulation faster" in kind, kind
    rows = judged_rows(c)
    assert {(r["table"], r["quantity"]) for r in rows} == {(t, q) for t in ("latency", "retry_delays")
                                                           for q in ("p50", "p95")}
    for r in rows:
        assert r["agree"] == (r["ratio"] <= 1.0)
    assert timing_kind(compare(base, [base, base, base])) == "agree"


@pytest.mark.rabbitmq
def test_experiment_timing_quick(rabbitmq, tmp_path):
    """``--timing`` on one scenario with two broker runs: both rates, the allowances' tightness, the judged rows."""
    spec = importlib.util.spec_from_file_location("_experiment_differential_t",
                                                  ROOT / "experiments" / "differential.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--timing", "--quick", "--scenarios", "1", "--repeats", "2", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "differential_timing.csv")
    assert list(table["scenario"]) == [0] and table["kind"].iloc[0] == "agree"
    assert table["timing"].iloc[0] == "agree" or table["timing"].iloc[0].startswith("differ: ")
    rows = pd.read_csv(tmp_path / "timing_rows.csv")
    assert set(rows["quantity"]) == {"p50", "p95"} and (rows["allowance"] > 0).all()
    text = (tmp_path / "differential_timing.txt").read_text()
    assert text.startswith("profile default, 2 broker runs per scenario: semantics agree on 1 of 1 scenarios")
    assert "timing agrees on " in text and "allowance / broker value: median" in text
    assert (tmp_path / "differential_timing.png").stat().st_size > 0
