"""The broker's costs (``[protocol.broker_costs]``): each delays exactly the frames it is about.

With a constant network latency every run is deterministic, so a cost of X ms
must move the affected client-side event by exactly X and leave the others
where the run without costs has them; a run with all costs zero is the run
without costs, event for event.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest

import sim
from sim.errors import ScenarioError
from sim.scenario import Scenario

CONST0 = {"dist": "constant", "value": "0ms"}


def scenario(queue: dict, consumer: dict | None = None, publisher: dict | None = None, extra_queues=(),
             bindings=(), exchanges=(), costs: dict | None = None, consume: str = "work") -> dict:
    protocol = {
        "name": "messaging", "broker": "broker",
        "topology": {"exchanges": list(exchanges), "queues": [{"name": "work", **queue}, *extra_queues],
                     "bindings": list(bindings)},
        "publishers": [{"node": "pub", "routing_keys": ["work"], "count": 3, "rate": 1000, "arrivals": "periodic",
                        **(publisher or {})}],
        "consumers": [{"node": "c1", "queue": consume, "prefetch": 1, "processing_time": CONST0,
                       "failure_probability": 0.0, **(consumer or {})}],
    }
    if costs is not None:
        protocol["broker_costs"] = costs
    return {"name": "costs", "cluster": {"nodes": ["broker", "pub", "c1"]}, "workload": {"clients": 0},
            "run": {"duration": "2s", "seed": 3}, "network": {"latency": {"dist": "constant", "value": "1ms"}},
            "protocol": protocol}


def events(data: dict) -> pd.DataFrame:
    return sim.run(Scenario.from_dict(data)).tables["message_events"]


def times(ev: pd.DataFrame, event: str) -> list[float]:
    return ev.loc[ev["event"] == event, "time"].tolist()


def with_costs(data: dict, costs: dict) -> dict:
    out = copy.deepcopy(data)
    out["protocol"]["broker_costs"] = costs
    return out


def test_zero_costs_are_the_model_without_costs():
    base = scenario({"type": "quorum"})
    zero = with_costs(base, {"classic": {"confirm": 0, "requeue": 0, "settle": 0, "dead_letter": 0},
                             "quorum": {"confirm": 0}})
    pd.testing.assert_frame_equal(events(base), events(zero))


def test_settle_cost_delays_the_delivery_an_ack_makes_room_for():
    base = scenario({"type": "quorum"})
    plain, costly = events(base), events(with_costs(base, {"quorum": {"settle": "3ms"}}))
    r0, r1 = times(plain, "receive"), times(costly, "receive")
    assert r1[0] == r0[0]  # the first delivery follows a publish, not an ack
    assert [b - a for a, b in zip(r0, r0[1:])] == [x - 3.0 for x in (b - a for a, b in zip(r1, r1[1:]))]
    # a classic queue's cost does not touch a quorum queue
    pd.testing.assert_frame_equal(plain, events(with_costs(base, {"classic": {"settle": "3ms"}})))


def test_requeue_cost_delays_each_redelivery():
    base = scenario({"type": "quorum"}, consumer={"failure_probability": 1.0,
                                                  "retry": {"mode": "requeue", "max_attempts": 3}},
                    publisher={"count": 1})
    plain, costly = events(base), events(with_costs(base, {"quorum": {"requeue": "1.5ms"}}))
    r0, r1 = times(plain, "receive"), times(costly, "receive")
    assert len(r0) == len(r1) >= 3
    gaps0 = [b - a for a, b in zip(r0, r0[1:])]
    gaps1 = [b - a for a, b in zip(r1, r1[1:])]
    assert gaps1 == pytest.approx([g + 1.5 for g in gaps0])


def test_confirm_cost_delays_acks_but_not_a_full_queues_nack():
    base = scenario({"type": "quorum"})
    plain, costly = events(base), events(with_costs(base, {"quorum": {"confirm": "2ms"}}))
    assert times(costly, "confirm") == pytest.approx([t + 2.0 for t in times(plain, "confirm")])
    assert times(costly, "receive") == times(plain, "receive")
    full = scenario({"type": "classic", "max_length": 0, "overflow": "reject-publish"}, publisher={"republish": False},
                    extra_queues=[{"name": "other"}], consume="other")
    plain, costly = events(full), events(with_costs(full, {"classic": {"confirm": "2ms"}}))
    nacks = plain[plain["event"] == "publish_nack"]
    assert len(nacks) == 3
    pd.testing.assert_frame_equal(plain, costly)


def test_a_publish_routed_to_both_types_waits_for_the_slower():
    data = scenario({"type": "classic"}, exchanges=[{"name": "fan", "type": "fanout"}],
                    extra_queues=[{"name": "q2", "type": "quorum"}],
                    bindings=[{"exchange": "fan", "queue": "work"}, {"exchange": "fan", "queue": "q2"}],
                    publisher={"exchange": "fan", "routing_keys": [""]})
    plain = events(data)
    costly = events(with_costs(data, {"classic": {"confirm": "1ms"}, "quorum": {"confirm": "4ms"}}))
    assert times(costly, "confirm") == pytest.approx([t + 4.0 for t in times(plain, "confirm")])


def test_dead_letter_cost_delays_the_dead_lettered_delivery():
    base = scenario({"type": "classic", "message_ttl": "20ms", "dead_letter_exchange": "dlx"},
                    exchanges=[{"name": "dlx", "type": "fanout"}], extra_queues=[{"name": "dead"}],
                    bindings=[{"exchange": "dlx", "queue": "dead"}], consume="dead")
    plain, costly = events(base), events(with_costs(base, {"classic": {"dead_letter": "1.6ms"}}))
    assert len(times(plain, "receive")) == 3
    assert times(costly, "receive") == pytest.approx([t + 1.6 for t in times(plain, "receive")])


@pytest.mark.parametrize(("costs", "field", "message"), [
    ({"quorum": {"settle": "-1ms"}}, "protocol.broker_costs.quorum.settle", ""),
    ({"quorum": {"settle": "soon"}}, "protocol.broker_costs.quorum.settle", "duration"),
    ({"quorum": {"fsync": "1ms"}}, "protocol.broker_costs.quorum.fsync", "unknown"),
    ({"stream": {}}, "protocol.broker_costs.stream", "unknown"),
])
def test_bad_costs_name_the_field(costs, field, message):
    with pytest.raises(ScenarioError) as exc:
        Scenario.from_dict(scenario({"type": "quorum"}, costs=costs))
    assert str(exc.value).startswith(field)
    assert message in str(exc.value)
