"""Where latency comes from: by message kind or class, a node's own replica, zones, and their precedence."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import sim
from sim.config import fld
from sim.errors import ScenarioError
from sim.kernel.node import Host, Node
from sim.protocol import ProtocolConfig, register_protocol
from sim.runner import build_world
from sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Req:
    kind: ClassVar[str] = "request"
    seq: int


@dataclass(frozen=True, slots=True)
class Resp:
    kind: ClassVar[str] = "response"
    seq: int


@dataclass(frozen=True, slots=True)
class Plain:
    seq: int


class Sink(Node):
    """Records (time, src, dst, message class name) of every message it gets."""

    def __init__(self, world: Host, name: str, log: list[tuple[float, str, str, str]]) -> None:
        super().__init__(world, name)
        self.log = log

    def _record(self, msg: Any, src: str) -> None:
        self.log.append((self.now, src, self.name, type(msg).__name__))

    handle_Req = handle_Resp = handle_Plain = _record


@register_protocol
@dataclass(frozen=True, kw_only=True)
class KindsConfig(ProtocolConfig[list]):
    """Nodes that record every Req, Resp and Plain they get."""

    tag: ClassVar[str] = "test_kinds"
    unused: int = fld(0)

    @classmethod
    def message_types(cls) -> tuple[type, ...]:
        return (Req, Resp, Plain)

    def new_state(self, world: Host) -> list:
        return []

    def build_nodes(self, world: Host, state: list) -> dict[str, Node]:
        return {n: Sink(world, n, state) for n in world.scenario.nodes}


def _world(cluster: dict[str, Any], network: dict[str, Any]):
    world = build_world(Scenario.from_dict({"cluster": cluster, "network": network, "workload": {"clients": 0},
                                            "protocol": {"name": "test_kinds"}, "run": {"duration": 1e9}}))
    world.start()
    return world


def _trace(scenario: Scenario):
    """The run's message trace with each delivered message's delay (rounded: send + delay loses a few ulps)."""
    trace = sim.run(scenario).trace
    trace = trace[trace["deliver"].notna()].copy()
    trace["delay"] = (trace["deliver"] - trace["send"]).round(6)
    return trace


def _arrivals(world, sends):
    """Send each (src, dst, message) at time 0 and return {(src, dst, class name): arrival time}."""
    for src, dst, msg in sends:
        world.nodes[src].send(dst, msg)
    world.env.run()
    return {(src, dst, cls): t for t, src, dst, cls in world.state}


# -- latency by message kind -------------------------------------------------------------------

WARS = {"write": 1.0, "write_ack": 2.0, "read": 4.0, "read_reply": 8.0}


def test_quorum_messages_take_the_latency_of_their_kind():
    """W, A, R and S each get their own exponential mean: every kind's measured mean delay lies in a 99.9% CI
    of the configured mean (thousands of messages each), and client messages keep the default latency."""
    scenario = Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": "0.5ms",
                    "message_latency": {k: {"dist": "exponential", "mean": m} for k, m in WARS.items()}},
        "workload": {"clients": 3, "rate": 200, "read_fraction": 0.5, "timeout": "1s"},
        "protocol": {"name": "quorum", "replicas": 3, "r": 2, "w": 2},
        "run": {"duration": "10s", "trace": True, "seed": 3},
    })
    msgs = _trace(scenario)
    delay = msgs["delay"].groupby(msgs["type"])
    by_class = {"Put": "write", "PutAck": "write_ack", "Get": "read", "GetReply": "read_reply"}
    for cls, kind in by_class.items():
        d = delay.get_group(cls).to_numpy()
        mean = WARS[kind]
        half = 3.29 * mean / math.sqrt(len(d))  # exponential: sd = mean
        assert len(d) > 2000, cls
        assert abs(d.mean() - mean) < half, (cls, d.mean(), mean, half)
    assert set(delay.get_group("ClientRequest").unique()) == {0.5}
    assert set(delay.get_group("ClientReply").unique()) == {0.5}


def test_class_name_beats_kind_and_kind_beats_the_default():
    """A message's class name is more specific than its kind; messages without a kind take the default."""
    world = _world({"count": 2}, {"latency": "1ms", "message_latency": {"request": "2ms", "Resp": "3ms",
                                                                         "response": "4ms"}})
    got = _arrivals(world, [("n1", "n2", Req(0)), ("n1", "n2", Resp(0)), ("n1", "n2", Plain(0))])
    assert got == {("n1", "n2", "Req"): 2.0, ("n1", "n2", "Resp"): 3.0, ("n1", "n2", "Plain"): 1.0}


# -- a node's message to itself ----------------------------------------------------------------

def test_self_latency_applies_to_a_nodes_own_messages_and_a_self_link_beats_it():
    """network.self_latency sets n2's delay to itself; the link n1 -> n1 overrides it for n1; other pairs keep
    the default, and without self_latency a node's message to itself takes the default latency as before."""
    world = _world({"count": 2}, {"latency": "1ms", "self_latency": "0.1ms",
                                  "links": [{"src": "n1", "dst": "n1", "latency": "0.25ms"}]})
    got = _arrivals(world, [("n1", "n1", Plain(0)), ("n2", "n2", Plain(0)), ("n1", "n2", Plain(0))])
    assert got == {("n1", "n1", "Plain"): 0.25, ("n2", "n2", "Plain"): 0.1, ("n1", "n2", "Plain"): 1.0}
    world = _world({"count": 2}, {"latency": "1ms"})
    assert _arrivals(world, [("n1", "n1", Plain(0))]) == {("n1", "n1", "Plain"): 1.0}


def test_a_quorum_coordinators_own_replica_takes_self_latency():
    """With self_latency, the coordinator's Put and Get to itself (and the replies) take it, the rest do not."""
    scenario = Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": "3ms", "self_latency": "0.1ms"},
        "workload": {"clients": 3, "rate": 20},
        "protocol": {"name": "quorum"},
        "run": {"duration": "2s", "trace": True},
    })
    msgs = _trace(scenario)
    msgs = msgs[msgs["type"].isin(["Put", "PutAck", "Get", "GetReply"])]
    own = msgs["src"] == msgs["dst"]
    assert own.sum() > 50 and (~own).sum() > 50
    assert set(msgs["delay"][own]) == {0.1}
    assert set(msgs["delay"][~own]) == {3.0}


# -- zones ---------------------------------------------------------------------------------------

TWO_DC = {"nodes": ["a1", "a2", "b1"], "zones": {"a": ["a1", "a2"], "b": ["b1"]}}
ZONE_NET = {"latency": "1ms",
            "zone_links": [{"src": "a", "dst": "a", "latency": "0.5ms"},
                           {"src": "a", "dst": "b", "latency": "40ms"},
                           {"src": "b", "dst": "b", "latency": "0.7ms"}],
            "links": [{"src": "a1", "dst": "b1", "latency": "90ms"}]}


def test_a_client_pays_its_zones_latency_to_every_node():
    """A client homed at a1 (zone a) reaches a1 and a2 at zone a's latency and b1 at the WAN latency, whichever
    node it targets; node links (a1 <-> b1) are not the client's links."""
    scenario = Scenario.from_dict({
        "cluster": TWO_DC, "network": ZONE_NET,
        "workload": {"clients": 2, "homes": ["a1", "b1"], "target": "random", "rate": 50},
        "protocol": {"name": "single_copy", "owner": "a1", "forward": False},
        "run": {"duration": "3s", "trace": True},
    })
    msgs = _trace(scenario)
    requests = msgs[msgs["type"] == "ClientRequest"]
    delay = requests["delay"].groupby([requests["src"], requests["dst"]]).unique()
    assert {k: list(v) for k, v in delay.items()} == {
        ("c0", "a1"): [0.5], ("c0", "a2"): [0.5], ("c0", "b1"): [40.0],
        ("c1", "a1"): [40.0], ("c1", "a2"): [40.0], ("c1", "b1"): [0.7]}


def test_zones_between_nodes_and_client_latency_next_to_the_home_node():
    """Nodes pay their zone pair's latency except where a node link is set; client_latency still applies
    between a client and its home node."""
    world = _world(TWO_DC, ZONE_NET)
    got = _arrivals(world, [("a1", "a2", Plain(0)), ("a2", "b1", Plain(0)), ("b1", "a2", Plain(0)),
                            ("a1", "b1", Plain(0)), ("b1", "b1", Plain(0))])
    assert got == {("a1", "a2", "Plain"): 0.5, ("a2", "b1", "Plain"): 40.0, ("b1", "a2", "Plain"): 40.0,
                   ("a1", "b1", "Plain"): 90.0, ("b1", "b1", "Plain"): 0.7}
    scenario = Scenario.from_dict({
        "cluster": TWO_DC, "network": {**ZONE_NET, "client_latency": "0.05ms"},
        "workload": {"clients": 1, "homes": ["a1"], "target": "round_robin", "rate": 50},
        "protocol": {"name": "single_copy", "owner": "a1", "forward": False},
        "run": {"duration": "1s", "trace": True},
    })
    msgs = _trace(scenario)
    requests = msgs[msgs["type"] == "ClientRequest"]
    delay = requests["delay"].groupby(requests["dst"]).unique()
    assert {k: list(v) for k, v in delay.items()} == {"a1": [0.05], "a2": [0.5], "b1": [40.0]}


def test_partitions_and_sides_work_with_zones():
    """Cutting zone b off blocks b1 and its client; the client on the b side is on the minority side."""
    scenario = Scenario.from_dict({
        "cluster": TWO_DC, "network": ZONE_NET,
        "faults": {"schedule": [{"kind": "partition", "start": "1s", "end": "2s", "groups": [["b1"]]}]},
        "workload": {"clients": 2, "homes": ["a1", "b1"], "rate": 50},
        "protocol": {"name": "single_copy", "owner": "a1"},
        "run": {"duration": "3s"},
    })
    s = sim.run(scenario).summary
    assert s["availability.majority"] == 1.0 and s["availability.minority"] == 0.0


def test_precedence_link_then_self_then_zone_pair_then_network():
    """Each scope's class/kind table beats its own latency; a more specific scope beats a less specific one."""
    cluster = {"nodes": ["a1", "a2", "b1", "b2"], "zones": {"a": ["a1", "a2"], "b": ["b1", "b2"]}}
    network = {
        "latency": "1ms", "self_latency": "0.5ms",
        "message_latency": {"request": "2ms", "Resp": "3ms"},
        "zone_links": [{"src": "a", "dst": "b", "latency": "10ms", "message_latency": {"request": "11ms"}}],
        "links": [{"src": "a1", "dst": "b2", "latency": "20ms", "message_latency": {"Resp": "21ms"}},
                  {"src": "a1", "dst": "a1", "message_latency": {"Plain": "0.25ms"}}],
    }
    world = _world(cluster, network)
    sends = [(s, d, m(0)) for s, d in [("a1", "a2"), ("a1", "b1"), ("a1", "b2"), ("a1", "a1"), ("a2", "a2")]
             for m in (Req, Resp, Plain)]
    got = _arrivals(world, sends)
    assert got == {
        # no zone pair a-a: the network's tables, then its latency
        ("a1", "a2", "Req"): 2.0, ("a1", "a2", "Resp"): 3.0, ("a1", "a2", "Plain"): 1.0,
        # the zone pair a-b: its kind table, then its latency (which beats the network's Resp)
        ("a1", "b1", "Req"): 11.0, ("a1", "b1", "Resp"): 10.0, ("a1", "b1", "Plain"): 10.0,
        # the link a1-b2: its class table, then its latency (which beats the zone pair's request)
        ("a1", "b2", "Req"): 20.0, ("a1", "b2", "Resp"): 21.0, ("a1", "b2", "Plain"): 20.0,
        # a1's self link sets Plain only; the rest falls to self_latency
        ("a1", "a1", "Req"): 0.5, ("a1", "a1", "Resp"): 0.5, ("a1", "a1", "Plain"): 0.25,
        ("a2", "a2", "Req"): 0.5, ("a2", "a2", "Resp"): 0.5, ("a2", "a2", "Plain"): 0.5,
    }


def test_zone_links_set_loss_too():
    """A zone pair's loss applies to its traffic only; a node link's loss beats it."""
    world = _world({"nodes": ["a1", "b1", "b2"], "zones": {"a": ["a1"], "b": ["b1", "b2"]}},
                   {"zone_links": [{"src": "a", "dst": "b", "loss": 1.0}],
                    "links": [{"src": "a1", "dst": "b2", "loss": 0.0}]})
    got = _arrivals(world, [("a1", "b1", Plain(0)), ("a1", "b2", Plain(0)), ("b1", "b2", Plain(0))])
    assert set(got) == {("a1", "b2", "Plain"), ("b1", "b2", "Plain")}
    assert world.network.dropped["loss"] == 1


def test_scenarios_without_the_new_fields_draw_the_same_latencies():
    """An empty message_latency table changes nothing: the same seed gives the same arrival times."""
    def arrivals(network):
        world = _world({"count": 3}, network)
        rng = np.random.default_rng(0)
        sends = [(f"n{rng.integers(1, 4)}", f"n{rng.integers(1, 4)}", Plain(i)) for i in range(300)]
        for src, dst, msg in sends:
            world.nodes[src].send(dst, msg)
        world.env.run()
        return world.state

    base = {"latency": {"dist": "exponential", "mean": 2.0}}
    assert arrivals(base) == arrivals({**base, "message_latency": {}})


# -- validation ----------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "cluster": {"nodes": ["a1", "a2", "b1"], "zones": {"a": ["a1", "a2"], "b": ["b1"]}},
    "network": {"zone_links": [{"src": "a", "dst": "b", "latency": "30ms"}],
                "links": [{"src": "a1", "dst": "a2", "latency": "2ms"}]},
    "protocol": {"name": "quorum"},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


def test_the_base_of_the_error_cases_is_valid():
    """The scenario the error cases change is itself valid (so each error comes from its one change)."""
    s = Scenario.from_dict(BASE)
    assert s.cluster.zones is not None and s.cluster.zones.of_nodes() == {"a1": "a", "a2": "a", "b1": "b"}
    assert Scenario.from_toml_string(s.to_toml()) == s


@pytest.mark.parametrize("path, value, message", [
    ("cluster.zones", "dc1", "cluster.zones: must be a table of zone name -> list of nodes"),
    ("cluster.zones", {"a": ["a1", "a2"], "b c": ["b1"]}, "cluster.zones: zone names are letters"),
    ("cluster.zones", {"a": ["a1", "a2", "b1"], "b": []}, "cluster.zones.b: must be a non-empty list"),
    ("cluster.zones", {"a": ["a1", "a2"], "b": ["b1", 3]}, "cluster.zones.b[1]: must be a node name"),
    ("cluster.zones", {"a": ["a1", "a2"], "b": ["b1", "x9"]}, "cluster.zones.b[1]: unknown node 'x9'"),
    ("cluster.zones", {"a": ["a1", "a2"], "b": ["b1", "a1"]}, "cluster.zones.b[1]: node 'a1' is already in zone"),
    ("cluster.zones", {"a": ["a1"], "b": ["b1"]}, "cluster.zones: every node must be in a zone; a2 in none"),
    ("network.self_latency", "soon", "network.self_latency: must be a duration"),
    ("network.message_latency", 5, "network.message_latency: must be a table of message kind or class name"),
    ("network.message_latency", {"write": "soon"}, "network.message_latency.write: must be a duration"),
    ("network.message_latency", {"Bogus": 1}, "network.message_latency.Bogus: unknown message kind or class; "
     "protocol 'quorum' accepts ClientRequest, ClientReply, Put, PutAck, Get, GetReply, TreeLevel, LeafEntries, "
     "write, write_ack, read, read_reply, anti_entropy"),
    ("network.links.0.message_latency", {"ack": 1}, "network.links[0].message_latency.ack: unknown message"),
    ("network.zone_links.0.message_latency", {"": 1}, "network.zone_links[0].message_latency: keys must be"),
    ("network.zone_links.0.src", "c", "network.zone_links[0].src: unknown zone 'c'; zones are a, b"),
    ("network.zone_links.0.loss", 2, "network.zone_links[0].loss: must be in [0, 1], got 2"),
    ("network.zone_links.0.bogus", 1, "network.zone_links[0].bogus: unknown key"),
    ("network.zone_links", [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a"}],
     "network.zone_links[1]: link b -> a is already set by zone_links[0]"),
    ("cluster.zones", None, "network.zone_links[0].src: needs cluster.zones"),
])
def test_new_fields_name_the_field_in_errors(path, value, message):
    """Every new field's bad value raises ScenarioError naming that field and what is accepted."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(_with(path, value))
    assert str(err.value).startswith(message), str(err.value)


def test_a_protocol_without_message_types_says_so():
    """message_latency needs a protocol that lists its message classes; one that lists none is named."""
    data = {"network": {"message_latency": {"Note": "1ms"}}, "workload": {"clients": 0},
            "protocol": {"name": "test_recorder"}}  # tests/conftest.py: its nodes send Note, undeclared
    with pytest.raises(ScenarioError,
                       match=r"^network.message_latency: protocol 'test_recorder' declares no message types"):
        Scenario.from_dict(data)


def test_capsim_protocols_lists_message_classes_and_kinds(capsys):
    """``capsim protocols quorum`` names the classes and kinds message_latency accepts."""
    from sim.cli import main

    assert main(["protocols", "quorum"]) == 0
    out = capsys.readouterr().out
    assert "Put (write), PutAck (write_ack), Get (read), GetReply (read_reply)" in out


def test_readme_toml_examples_build():
    """Every TOML block in the README that names a protocol is a valid scenario (the docs cannot drift)."""
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S)]
    scenarios = [Scenario.from_dict(b) for b in blocks if "protocol" in b]
    assert any(s.cluster.zones is not None for s in scenarios)
    assert any(s.network.message_latency and s.network.self_latency for s in scenarios)


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "experiments" / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", [p for p in EXAMPLES if Scenario.from_toml(p).protocol.message_types()],
                         ids=lambda p: p.stem)
def test_declared_message_types_cover_every_message_sent(path):
    """A protocol's message_types() lists every class its nodes and clients send in its example scenario, so a
    message_latency table can name any of them (a class left out would silently keep the default latency)."""
    scenario = Scenario.from_toml(path).variant({"run.duration": "3s", "run.warmup": 0})
    sent = set(sim.run(scenario).messages["type"])
    declared = {t.__name__ for t in scenario.protocol.message_types()}
    assert sent and sent <= declared, sent - declared
