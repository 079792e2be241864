"""Scenario parsing and validation: field-path errors, TOML round trips, variants."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.dists import Exponential
from sim.errors import ScenarioError
from sim.scenario import Scenario

FULL = {
    "name": "full",
    "cluster": {"nodes": ["a", "b", "c", "d", "e"], "zones": {"east": ["a", "b", "c"], "west": ["d", "e"]}},
    "network": {
        "latency": {"dist": "exponential", "mean": "2ms"},
        "loss": 0.01,
        "duplicate": 0.001,
        "reorder": 0.05,
        "self_latency": "100us",
        "message_latency": {"Forwarded": "3ms", "ClientReply": {"dist": "exponential", "mean": 1}},
        "links": [
            {"src": "a", "dst": "b", "latency": "10ms"},
            {"src": "c", "dst": "d", "symmetric": False, "loss": 0.5},
            {"src": "d", "dst": "e", "loss": 0.2},
            {"src": "e", "dst": "e", "message_latency": {"ForwardedReply": "1ms"}},
        ],
        "zone_links": [
            {"src": "east", "dst": "west", "latency": "30ms", "message_latency": {"Forwarded": "31ms"}},
            {"src": "west", "dst": "west", "latency": "1ms", "loss": 0.1},
        ],
    },
    "faults": {
        "schedule": [
            {"kind": "partition", "start": "1s", "end": "2s", "groups": [["a", "b"], ["c"]]},
            {"kind": "partition", "start": "1s", "end": "2s", "groups": [["a"]], "one_way": True},
            {"kind": "split", "start": "3s", "end": "4s", "pick": "last"},
            {"kind": "isolate", "start": "4s", "end": "5s", "node": "c"},
            {"kind": "crash", "start": "5s", "end": "6s", "node": "d"},
            {"kind": "loss", "start": "1s", "end": "3s", "probability": 0.3, "src": "a"},
            {"kind": "duplicate", "start": "1s", "end": "3s", "probability": 0.3},
            {"kind": "latency_spike", "start": "1s", "end": "3s", "extra": "50ms", "dst": "e"},
            {"kind": "clock_skew", "node": "e", "offset": "-20ms", "drift": 0.01},
        ],
        "random": {"partition_mtbf": "5s", "crash_mtbf": "20s", "crash_duration": "1s"},
    },
    "workload": {"clients": 6, "homes": ["a", "c"], "mode": "closed", "think_time": "5ms", "keys": 50,
                 "key_dist": "zipf", "zipf_s": 1.2, "read_fraction": 0.9, "timeout": "200ms", "target": "random"},
    "protocol": {"name": "single_copy", "owner": "c"},
    "run": {"duration": "8s", "warmup": "1s", "seed": 123, "trace": True, "timeline_window": "100ms"},
}


def test_full_scenario_parses_with_units():
    """Every section parses; durations become milliseconds; defaults are filled in."""
    s = Scenario.from_dict(FULL)
    assert s.nodes == ("a", "b", "c", "d", "e")
    assert s.network.latency == Exponential(2.0)
    assert s.faults.schedule[0].start == 1000.0
    assert s.faults.schedule[8].offset == -20.0 and s.faults.schedule[8].end == math.inf
    assert s.workload.timeout == 200.0 and s.run.duration == 8000.0
    assert s.protocol.tag == "single_copy" and s.protocol.owner == "c"


def test_toml_round_trip(tmp_path):
    """to_toml / from_toml gives back an equal scenario, and to_dict is stable."""
    s = Scenario.from_dict(FULL)
    path = tmp_path / "s.toml"
    path.write_text(s.to_toml())
    back = Scenario.from_toml(path)
    assert back == s
    assert back.to_dict() == s.to_dict()
    assert Scenario.from_dict(s.to_dict()) == s


def test_cluster_count_names_nodes():
    """count = N names the nodes n1..nN."""
    s = Scenario.from_dict({"cluster": {"count": 4}, "protocol": {"name": "single_copy"}})
    assert s.nodes == ("n1", "n2", "n3", "n4")


def test_variants_do_not_mutate_the_base():
    """replace() and variant() build new validated scenarios; the base is unchanged."""
    base = Scenario.from_dict(FULL)
    v = base.variant({"network.loss": 0.2}, run__seed=9)
    assert v.network.loss == 0.2 and v.run.seed == 9
    assert base.network.loss == 0.01 and base.run.seed == 123
    r = dataclasses.replace(base, name="other")
    assert r.name == "other" and base.name == "full"
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.name = "x"  # type: ignore[misc]
    with pytest.raises(ScenarioError, match=r"^network\.loss: must be in \[0, 1\], got 2"):
        base.variant({"network.loss": 2})


def _with(path: str, value, base=None):
    data = copy.deepcopy(base or FULL)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("network.links.2.loss", 1.5, "network.links[2].loss: must be in [0, 1], got 1.5"),
        ("network.bogus", 1, "network.bogus: unknown key; accepted keys:"),
        ("network.loss", "high", "network.loss: must be a number, got str 'high'"),
        ("network.links.0.src", "zz", "network.links[0].src: unknown node 'zz'"),
        ("faults.schedule.4.node", "q", "faults.schedule[4].node: unknown node 'q'"),
        ("faults.schedule.0.groups", [["a"], ["a"]], "faults.schedule[0].groups[1][0]: node 'a' is in two groups"),
        ("faults.schedule.0.end", "500ms", "faults.schedule[0].end: must be after start"),
        ("faults.schedule.3.kind", "meteor", "faults.schedule[3].kind: must be one of"),
        ("workload.clients", -2, "workload.clients: must be >= 0, got -2"),
        ("workload.mode", "semi", "workload.mode: must be one of 'open', 'closed', got 'semi'"),
        ("workload.homes", ["a", "x"], "workload.homes[1]: unknown node 'x'"),
        ("workload.timeout", "soon", "workload.timeout: must be a duration"),
        ("run.warmup", "9s", "run.warmup: must be shorter than duration"),
        ("run.seed", -1, "run.seed: must be >= 0, got -1"),
        ("run.duration", 0, "run.duration: must be > 0, got 0.0"),
        ("protocol.owner", "zz", "protocol.owner: unknown node 'zz'"),
        ("protocol.name", "paxos9", "protocol.name: must be one of"),
        ("protocol.replicas", 3, "protocol.replicas: unknown key"),
        ("cluster.nodes", ["a", "a"], "cluster.nodes[1]: duplicate node name 'a'"),
        ("network.latency", {"dist": "exponential", "mean": "-1ms"}, "network.latency.mean: must not be negative"),
    ],
)
def test_errors_name_the_field(path, value, message):
    """Each kind of mistake raises ScenarioError whose message starts with the field path."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict(_with(path, value))
    assert str(err.value).startswith(message), str(err.value)


def test_unknown_top_level_key_and_bad_toml(tmp_path):
    """Unknown sections and invalid TOML are clear errors, not tracebacks."""
    with pytest.raises(ScenarioError, match="^clusters: unknown key"):
        Scenario.from_dict({"clusters": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nduration = 3")
    with pytest.raises(ScenarioError, match="invalid TOML"):
        Scenario.from_toml(bad)
    with pytest.raises(ScenarioError, match="file not found"):
        Scenario.from_toml(tmp_path / "missing.toml")


# -- property tests -------------------------------------------------------------

def _leaf_paths(data, prefix=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield prefix + (k,)
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield prefix + (i,)
            yield from _leaf_paths(v, prefix + (i,))


PATHS = list(_leaf_paths(FULL))
junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


def _mutate(data, path, value, how):
    node = data
    for k in path[:-1]:
        node = node[k]
    last = path[-1]
    if how == "replace":
        node[last] = value
    elif how == "delete" and isinstance(node, dict):
        del node[last]
    elif how == "extra" and isinstance(node[last], dict):
        node[last]["zz_" + str(value)[:5]] = value
    else:
        node[last] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), junk, st.sampled_from(["replace", "delete", "extra"]))
def test_malformed_dicts_raise_only_scenario_errors(path, value, how):
    """Any malformed scenario raises ScenarioError (never another exception) naming a field."""
    data = copy.deepcopy(FULL)
    _mutate(data, path, value, how)
    try:
        s = Scenario.from_dict(data)
    except ScenarioError as exc:
        assert exc.path, str(exc)
        assert str(exc).startswith(exc.path + ": ")
    else:
        assert Scenario.from_dict(s.to_dict()) == s


durations = st.one_of(st.integers(1, 10**6), st.sampled_from(["250us", "5ms", "2s", "1min"]))
dists = st.one_of(
    durations,
    st.builds(lambda m: {"dist": "exponential", "mean": m}, durations),
    st.builds(lambda a, b: {"dist": "uniform", "low": a, "high": a + b}, st.floats(0, 100), st.floats(0, 100)),
    st.builds(lambda mu, s: {"dist": "lognormal", "mu": mu, "sigma": s}, st.floats(-3, 3), st.floats(0, 2)),
    st.builds(lambda w: {"dist": "mixture", "components": [{"weight": w, "dist": "constant", "value": 1},
                                                          {"weight": 1.0, "dist": "pareto", "shape": 2, "scale": 1}]},
              st.floats(0.01, 10)),
    st.builds(lambda r: {"dist": "exponential", "rate": r}, st.floats(0.001, 100)),
    st.builds(lambda xs: {"dist": "empirical", "samples": xs}, st.lists(st.floats(0, 1e4), min_size=1, max_size=5)),
    st.builds(lambda o, m: {"dist": "shifted", "offset": o, "base": {"dist": "exponential", "mean": m}},
              durations, durations),
)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 7),
    latency=dists,
    loss=st.floats(0, 1),
    clients=st.integers(0, 20),
    mode=st.sampled_from(["open", "closed"]),
    duration=durations,
    seed=st.integers(0, 2**63 - 1),
)
def test_valid_scenarios_round_trip_through_toml(n, latency, loss, clients, mode, duration, seed):
    """Generated valid scenarios survive to_toml -> from_toml unchanged."""
    s = Scenario.from_dict({
        "cluster": {"count": n},
        "network": {"latency": latency, "loss": loss},
        "workload": {"clients": clients, "mode": mode, "think_time": latency},
        "run": {"duration": duration, "seed": seed},
        "faults": {"schedule": [{"kind": "crash", "node": f"n{n}", "start": 0, "end": "inf"}]},
        "protocol": {"name": "single_copy"},
    })
    assert Scenario.from_toml_string(s.to_toml()) == s


def test_a_scenario_must_name_its_protocol():
    """Leaving out [protocol] is an error that says how to name one, not a silent single_copy."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"cluster": {"count": 3}})
    assert err.value.path == "protocol" and "[protocol] name =" in str(err.value)


def test_node_names_cannot_be_client_names():
    """Clients are c0, c1, ...: a node with one of those names is refused (it would receive the clients' replies)."""
    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"cluster": {"nodes": ["c0", "c1", "c2"]}, "workload": {"clients": 2},
                            "protocol": {"name": "single_copy"}})
    assert err.value.path == "cluster.nodes[0]" and "client's name" in str(err.value)
    # without clients (messaging roles) the names are free
    assert Scenario.from_dict({"cluster": {"nodes": ["c0", "n2"]}, "workload": {"clients": 0},
                               "protocol": {"name": "single_copy"}}).nodes == ("c0", "n2")


def test_unknown_cluster_key_lists_count_too():
    """The accepted keys of [cluster] include count, which is not a field but is accepted."""
    with pytest.raises(ScenarioError,
                       match=r"^cluster.cnt: unknown key; accepted keys: nodes, zones, fsync, node_fsync, count$"):
        Scenario.from_dict({"cluster": {"cnt": 3}, "protocol": {"name": "single_copy"}})
