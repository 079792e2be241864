"""The drain policy ([run] drain): parsing, the messaging model's idle detection, and the span it reports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import sim
from sim.errors import ScenarioError
from sim.kernel.world import World
from sim.messaging.consumer import ConsumerNode
from sim.messaging.protocol import messaging_config
from sim.runner import build_world
from sim.scenario import Scenario

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "rabbitmq-slow-consumers-drain.toml"


def drained_example() -> Scenario:
    return Scenario.from_toml(EXAMPLE)


def undrained_example() -> Scenario:
    data = drained_example().to_dict()
    del data["run"]["drain"]
    return Scenario.from_dict(data)


BASE = {"protocol": {"name": "single_copy"}, "cluster": {"count": 1}}


def test_plain_duration_keeps_its_meaning_and_its_plain_form():
    """drain = "2s" is the classic drain (operations in flight, at most 2 s) and is written back as a duration."""
    s = Scenario.from_dict({**BASE, "run": {"duration": "10s", "drain": "2s"}})
    assert not s.drain_policy.idle and s.drain_limit == 2000.0 and s.end_time == 12000.0
    assert s.to_dict()["run"]["drain"] == 2000.0
    assert Scenario.from_dict(s.to_dict()) == s


def test_idle_policy_round_trips():
    s = Scenario.from_dict({**BASE, "run": {"duration": "10s", "drain": {"until": "idle", "limit": "5s"}}})
    assert s.drain_policy.idle and s.drain_limit == 5000.0 and s.end_time == 15000.0
    assert Scenario.from_toml_string(s.to_toml()) == s


@pytest.mark.parametrize("drain, field, words", [
    ({"until": "never"}, "run.drain.until", "'operations', 'idle'"),
    ({"until": "idle", "limit": "-1s"}, "run.drain.limit", "negative"),
    ({"until": "idle", "after": "1s"}, "run.drain.after", "unknown key"),
    (True, "run.drain", "a duration"),
    ("soon", "run.drain", "a duration"),
])
def test_bad_drain_is_refused_naming_the_field(drain, field, words):
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({**BASE, "run": {"drain": drain}})
    assert err.value.path == field and words in str(err.value)


def test_slow_consumers_without_a_drain_stop_at_the_duration_undrained():
    """Without the policy the run stops at run.duration with a backlog: it reports that it did not drain."""
    r = sim.run(undrained_example())
    s = r.summary
    assert s["messaging.span"] == 1200.0 and s["messaging.drained"] is False and math.isnan(s["messaging.drained_at"])
    assert s["messaging.remaining"] > 0


def test_slow_consumers_with_the_idle_drain_finish_everything():
    """With drain = { until = "idle" } publishing still stops at 1.2 s (the same messages are published), and the
    run goes on until every message is settled: nothing remains or is unconfirmed, and it stopped at its last
    message event, well before the limit."""
    a, b = sim.run(drained_example()), sim.run(undrained_example())
    s = a.summary
    assert s["messaging.published"] == b.summary["messaging.published"]
    assert s["messaging.drained"] is True
    assert s["messaging.remaining"] == 0 and s["messaging.unconfirmed"] == 0
    assert s["messaging.processed"] + s["messaging.dead_lettered"] == s["messaging.published"]
    assert 1200.0 < s["messaging.span"] < 1200.0 + 5000.0
    assert s["messaging.drained_at"] == s["messaging.span"]
    ev = a.tables["message_events"]
    assert ev.loc[ev["event"] == "publish", "time"].max() < 1200.0


def test_a_run_with_a_message_still_unacked_is_not_idle():
    """Known-wrong input for the idle check: stepped by hand to the moment a consumer holds a delivery it has not
    acked yet, the run is not idle (the message is unacked at the broker); once the drain ends it is."""
    scenario = drained_example()
    world: World = build_world(scenario)
    cfg = messaging_config(scenario)
    world.start()
    world.env.run(until=scenario.run.duration)
    consumers = [n for n in world.nodes.values() if isinstance(n, ConsumerNode)]
    while not any(c.held for c in consumers):
        world.env.step()
    broker = world.nodes[cfg.broker].broker
    assert sum(broker.depth("work")) > 0
    assert not cfg.idle(world, world.state) and not world.idle()
    world._drain_until_idle(scenario.run.duration + scenario.drain_limit)
    assert world.idle() and not any(c.held for c in consumers) and broker.depth("work") == (0, 0)


def test_a_publisher_waiting_to_republish_is_not_idle():
    """A nacked publish waiting its republish_delay keeps the run busy, although every queue is empty."""
    scenario = drained_example()
    world = build_world(scenario)
    cfg = messaging_config(scenario)
    world.start()
    world.env.run(until=scenario.run.duration)
    world._drain_until_idle(scenario.end_time)
    assert cfg.idle(world, world.state)
    pub = world.nodes["pub"]
    pub.pending_republish += 1  # as handle_PublishConfirm does for a nack
    assert not cfg.idle(world, world.state)


def test_the_idle_drain_changes_nothing_for_a_run_already_idle():
    """A shipped scenario that is idle before its duration gives the same counts with either policy."""
    s = Scenario.from_toml(EXAMPLE.parent / "rabbitmq-delivery-limit.toml")
    a, b = sim.run(s), sim.run(s.variant({"run.drain": {"until": "idle", "limit": "5s"}}))
    keys = [k for k in a.summary if k.startswith("messaging.") and not k.startswith("messaging.span")]
    assert {k: a.summary[k] for k in keys} == {k: b.summary[k] for k in keys}
    assert a.summary["messaging.drained"] and b.summary["messaging.drained"]


def test_capsim_run_prints_the_span(tmp_path, capsys):
    """capsim run of a messaging scenario shows where the run stopped and whether it drained."""
    from sim.cli import main

    assert main(["run", str(EXAMPLE)]) == 0
    spans = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("span")]
    assert len(spans) == 1 and "drained (idle since" in spans[0] and "NOT" not in spans[0]
    undrained = tmp_path / "undrained.toml"
    undrained.write_text(undrained_example().to_toml())
    assert main(["run", str(undrained)]) == 0
    spans = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("span")]
    assert len(spans) == 1 and "ran to 1200 ms, NOT drained" in spans[0]


def tiny(drain):
    """Three messages at 100, 200, 300 ms, one consumer at 500 ms each with prefetch 1, every hop 1 ms."""
    run = {"duration": "400ms", **({"drain": drain} if drain is not None else {})}
    return Scenario.from_dict({
        "cluster": {"nodes": ["broker", "pub", "c1"]}, "workload": {"clients": 0}, "network": {"latency": "1ms"},
        "run": run,
        "protocol": {"name": "messaging", "topology": {"queues": [{"name": "work"}]},
                     "publishers": [{"node": "pub", "routing_keys": ["work"], "rate": 10, "arrivals": "periodic",
                                     "count": 3}],
                     "consumers": [{"node": "c1", "queue": "work", "prefetch": 1, "processing_time": "500ms"}]}})


def test_the_idle_drain_stops_at_the_hand_computed_moment():
    """Worked by hand: pub-0 reaches the broker at 101 and c1 at 102, is acked at 602 and settled at the broker at
    603; pub-1 then goes 603 -> 604 -> 1104 -> settled 1105; pub-2 1105 -> 1106 -> 1606 -> settled 1607. The run is
    idle from 1607 ms on, so it stops there, drained; a 1 s limit stops it at 1400 ms, not drained, one message
    still unacked; without a drain policy it stops at 400 ms."""
    full = sim.run(tiny({"until": "idle", "limit": "5s"})).summary
    assert (full["messaging.span"], full["messaging.drained"], full["messaging.drained_at"]) == (1607.0, True, 1607.0)
    assert full["messaging.processed"] == 3
    cut = sim.run(tiny({"until": "idle", "limit": "1s"}))
    assert (cut.summary["messaging.span"], cut.summary["messaging.drained"]) == (1400.0, False)
    remain = cut.tables["message_events"].query("event == 'remain'")
    assert list(zip(remain["msg_id"], remain["reason"])) == [("pub-2", "unacked")]
    plain = sim.run(tiny(None)).summary
    assert (plain["messaging.span"], plain["messaging.drained"]) == (400.0, False)
