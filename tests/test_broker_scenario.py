"""Messaging scenarios: the TOML format, validation with field paths, x-arguments, broker restarts in a world."""

from __future__ import annotations

import textwrap

import pytest

import sim
import sim.messaging.protocol as protocol_module
from sim.config import build
from sim.errors import ScenarioError
from sim.messaging.topology import QueueSpec, Topology
from sim.scenario import Scenario


def docstring_toml() -> str:
    doc = protocol_module.__doc__
    block = doc.split("::\n", 1)[1].split("\nFaults come from", 1)[0]
    return textwrap.dedent(block)


def test_documented_toml_example_runs():
    """The scenario in sim.messaging.protocol's docstring parses, round-trips and runs with nothing lost."""
    s = Scenario.from_toml_string(docstring_toml())
    assert Scenario.from_dict(s.to_dict()) == s
    r = sim.run(s, seed=1)
    c = r.verdicts["delivery"].counts
    assert c["published"] == 1000 and c["lost"] == 0 and c["remaining"] == 0
    assert c["processed"] + c["dead_lettered"] == 1000 and c["dead_lettered"] > 0
    assert c["duplicate_side_effects"] == 0  # shared dedup store
    assert r.scenario.protocol.dlq_names() == ["orders.dlq"]
    assert r.verdicts["delivery"].attempts["max"] <= 4  # delivery_limit 3 allows four deliveries


def base(**protocol):
    data = {
        "cluster": {"nodes": ["broker", "pub", "c1"]},
        "workload": {"clients": 0},
        "protocol": {
            "name": "messaging",
            "topology": {"exchanges": [{"name": "ex", "type": "topic"}],
                         "queues": [{"name": "q"}],
                         "bindings": [{"exchange": "ex", "queue": "q", "routing_key": "a.*"}]},
            "publishers": [{"node": "pub", "exchange": "ex", "routing_keys": ["a.b"], "count": 10}],
            "consumers": [{"node": "c1", "queue": "q"}],
        },
    }
    data["protocol"].update(protocol)
    return data


def test_base_scenario_is_valid():
    """The base scenario used by the validation cases below is valid."""
    assert Scenario.from_dict(base()).protocol.tag == "messaging"


@pytest.mark.parametrize(("patch", "path", "message"), [
    (lambda d: d["workload"].update(clients=2), "workload.clients", "must be 0"),
    (lambda d: d["cluster"]["nodes"].append("idle"), "cluster.nodes[3]", "no messaging role"),
    (lambda d: d["protocol"].update(broker="nope"), "protocol.broker", "unknown node"),
    (lambda d: d["protocol"]["consumers"].append({"node": "pub", "queue": "q"}), "protocol.consumers[1].node",
     "already plays the role"),
    (lambda d: d["protocol"]["consumers"][0].update(queue="missing"), "protocol.consumers[0].queue", "unknown queue"),
    (lambda d: d["protocol"]["publishers"][0].update(exchange="missing"), "protocol.publishers[0].exchange",
     "unknown exchange"),
    (lambda d: d["protocol"]["publishers"][0].update(routing_keys=[]), "protocol.publishers[0].routing_keys",
     "at least one"),
    (lambda d: d["protocol"]["publishers"][0].update(rate=-1), "protocol.publishers[0].rate", "must be > 0"),
    (lambda d: d["protocol"]["publishers"][0].update(confirms=False), "protocol.publishers[0].republish",
     "needs confirms"),
    (lambda d: d["protocol"]["topology"]["queues"].append({"name": "q"}), "protocol.topology.queues[1].name",
     "duplicate queue"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(type="quorum", durable=False),
     "protocol.topology.queues[0].durable", "always durable"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(type="quorum", max_priority=5),
     "protocol.topology.queues[0].max_priority", "do not support priorities"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(delivery_limit=3),
     "protocol.topology.queues[0].delivery_limit", "quorum-queue argument"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(type="quorum", overflow="reject-publish-dlx"),
     "protocol.topology.queues[0].overflow", "drop-head' or 'reject-publish"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(dead_letter_exchange="ghost"),
     "protocol.topology.queues[0].dead_letter_exchange", "unknown exchange"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(dead_letter_routing_key="k"),
     "protocol.topology.queues[0].dead_letter_routing_key", "needs dead_letter_exchange"),
    (lambda d: d["protocol"]["topology"]["queues"][0].update(overflow="drop-tail"),
     "protocol.topology.queues[0].overflow", "must be one of"),
    (lambda d: d["protocol"]["topology"]["bindings"][0].update(queue="ghost"), "protocol.topology.bindings[0].queue",
     "unknown queue"),
    (lambda d: d["protocol"]["topology"]["exchanges"][0].update(name="amq.topic"),
     "protocol.topology.exchanges[0].name", "reserved"),
    (lambda d: d["protocol"]["topology"]["exchanges"][0].update(type="headers"),
     "protocol.topology.exchanges[0].type", "must be one of"),
    (lambda d: d["protocol"]["consumers"][0].update(auto_ack=True, retry={"mode": "requeue"}),
     "protocol.consumers[0].retry.mode", "auto-ack consumer cannot retry"),
    (lambda d: d["protocol"]["consumers"][0].update(retry={"mode": "delivery_limit"}),
     "protocol.consumers[0].retry.mode", "quorum queue with a delivery_limit"),
    (lambda d: d["protocol"]["consumers"][0].update(retry={"mode": "dlx_wait"}),
     "protocol.consumers[0].retry.mode", "needs queue 'q' to have a dead_letter_exchange"),
    (lambda d: d["protocol"]["consumers"][0].update(downstream="c1"), "protocol.consumers[0].downstream",
     "must name a downstream"),
    (lambda d: d["protocol"]["consumers"][0].update(failure_probability=1.5),
     "protocol.consumers[0].failure_probability", "must be in [0, 1]"),
    (lambda d: d["protocol"]["consumers"][0].update(prefetch_count=3), "protocol.consumers[0].prefetch_count",
     "unknown key"),
    (lambda d: d["protocol"].update(dead_letter_queues=["ghost"]), "protocol.dead_letter_queues[0]", "unknown queue"),
])
def test_invalid_messaging_scenarios_name_the_field(patch, path, message):
    """Bad messaging configs raise ScenarioError naming the field path and what is accepted."""
    data = base()
    patch(data)
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(data)
    assert err.value.path == path, str(err.value)
    assert message in err.value.reason, str(err.value)


def test_queue_arguments_are_the_amqp_x_arguments():
    """QueueSpec.arguments() is the x-arguments table a real queue.declare would send."""
    q = build(QueueSpec, {"name": "w", "type": "quorum", "message_ttl": "1.5s", "max_length": 10,
                          "overflow": "reject-publish", "dead_letter_exchange": "dlx",
                          "dead_letter_routing_key": "dead", "delivery_limit": 4}, "q")
    assert q.arguments() == {"x-queue-type": "quorum", "x-message-ttl": 1500, "x-max-length": 10,
                             "x-overflow": "reject-publish", "x-dead-letter-exchange": "dlx",
                             "x-dead-letter-routing-key": "dead", "x-delivery-limit": 4}
    assert build(QueueSpec, {"name": "c", "max_priority": 9}, "q").arguments() == {"x-queue-type": "classic",
                                                                                    "x-max-priority": 9}


def test_derived_dead_letter_queues_skip_wait_queues_and_consumed_queues():
    """DLQs default to unconsumed queues behind a dead-letter exchange that have no DLX themselves."""
    topo = {"exchanges": [{"name": "wait.ex", "type": "fanout"}, {"name": "work.ex", "type": "fanout"},
                          {"name": "dlx", "type": "fanout"}],
            "queues": [{"name": "work", "dead_letter_exchange": "wait.ex"},
                       {"name": "wait", "message_ttl": 50, "dead_letter_exchange": "work.ex"},
                       {"name": "dlq"}, {"name": "audit"}],
            "bindings": [{"exchange": "wait.ex", "queue": "wait"}, {"exchange": "work.ex", "queue": "work"},
                         {"exchange": "dlx", "queue": "dlq"}, {"exchange": "work.ex", "queue": "audit"}]}
    data = base(topology=topo, publishers=[{"node": "pub", "exchange": "work.ex", "routing_keys": ["x"]}],
                consumers=[{"node": "c1", "queue": "work", "retry": {"mode": "dlx_wait", "max_attempts": 2,
                                                                      "dead_letter_exchange": "dlx"}}])
    cfg = Scenario.from_dict(data).protocol
    assert cfg.dlq_names() == ["dlq"]


def restart_in_a_world(qtype, clean):
    """A broker restart at 100 ms with messages queued; the receives after it and the messages received before."""
    data = base()
    data["cluster"]["nodes"] = ["broker", "pub", "c1"]
    data["protocol"]["topology"]["queues"][0]["type"] = qtype
    data["protocol"]["publishers"] = [{"node": "pub", "exchange": "ex", "routing_keys": ["a.b"], "count": 20,
                                       "rate": 1000}]
    data["protocol"]["consumers"] = [{"node": "c1", "queue": "q", "prefetch": 2, "processing_time": 200}]
    data["faults"] = {"schedule": [{"kind": "crash", "node": "broker", "start": 100, "end": 300, "clean": clean}]}
    data["run"] = {"duration": "10s"}
    r = sim.run(Scenario.from_dict(data), seed=1)
    ev = r.tables["message_events"]
    assert r.verdicts["delivery"]["lost"] == 0 and r.verdicts["delivery"]["processed"] == 20
    after = ev[(ev["event"] == "receive") & (ev["time"] > 300)]
    return after, ev[(ev["event"] == "receive") & (ev["time"] < 100)]["msg_id"].tolist()


def test_a_clean_broker_restart_in_a_world_marks_only_the_delivered_messages_redelivered():
    """A clean broker restart (clean = true) with messages queued: classic and quorum consumers alike then see
    redelivered = true only on the two messages that were unacked; the others come fresh."""
    for qtype in ("classic", "quorum"):
        after, held = restart_in_a_world(qtype, clean=True)
        assert len(after) > 10 and len(held) == 2
        assert set(after.loc[after["redelivered"], "msg_id"]) == set(held)


def test_broker_restart_in_a_world_marks_recovered_classic_messages_redelivered():
    """A broker crash (a hard kill) with messages queued: classic consumers then see them with
    redelivered = true, quorum consumers only the ones that were unacked."""
    classic_after, _ = restart_in_a_world("classic", clean=False)
    assert len(classic_after) > 10 and classic_after["redelivered"].all()
    quorum_after, held = restart_in_a_world("quorum", clean=False)
    redelivered = set(quorum_after.loc[quorum_after["redelivered"], "msg_id"])
    assert redelivered == set(held) and len(held) == 2
    assert (quorum_after.loc[quorum_after["redelivered"], "delivery_count"] == 1).all()


def test_empty_topology_rejects_unknown_default_exchange_queue_targets():
    """A publisher on the default exchange is valid; its routing key names the queue."""
    data = base(publishers=[{"node": "pub", "exchange": "", "routing_keys": ["q"], "count": 5}])
    r = sim.run(Scenario.from_dict(data), seed=0)
    assert r.verdicts["delivery"]["processed"] == 5
    topo = build(Topology, {"queues": [{"name": "q"}]}, "t")
    assert topo.has_exchange("") and not topo.has_exchange("x")


@pytest.mark.parametrize("clean", [True, False])
def test_a_clean_stop_closes_every_client_connection_at_once_a_kill_does_not(clean, monkeypatch):
    """RabbitMQ stopping cleanly sends every client connection.close 320 CONNECTION_FORCED: the clients know one hop
    later. A killed broker sends nothing; its clients find out from the transport or heartbeats, later."""
    from sim.messaging import clients
    from sim.messaging.broker_node import SHUTDOWN

    lost: list[tuple[float, str, str]] = []
    original = clients.AmqpClient._lost

    def spy(self, reason):
        lost.append((self.now, self.name, reason))
        return original(self, reason)

    monkeypatch.setattr(clients.AmqpClient, "_lost", spy)
    restart_in_a_world("classic", clean=clean)
    first = {}
    for t, node, reason in lost:
        first.setdefault(node, (t, reason))
    assert set(first) == {"pub", "c1"}
    for t, reason in first.values():
        if clean:
            assert reason == SHUTDOWN and 100 < t <= 100 + 5  # one hop of the scenario's network
        else:
            assert reason != SHUTDOWN and t > 105
