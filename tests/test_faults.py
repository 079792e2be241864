"""Fault schedules: splits, random faults from rates, and their application by the kernel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.dists import Constant, parse_dist
from sim.faultspec import Crash, Partition, RandomFaults, Split
from sim.kernel.faults import resolve_schedule
from sim.scenario import Scenario

NODES = ("n1", "n2", "n3", "n4", "n5")


def test_split_picks_minority_of_the_right_size():
    """split: minority of (n-1)//2 nodes by default; first/last/random picks."""
    rng = np.random.default_rng(0)
    first, last, rnd, halves = resolve_schedule(
        [Split(pick="first"), Split(pick="last"), Split(pick="random"), Split(minority=2, pick="random")], NODES, rng)
    assert first.groups == (("n1", "n2"),)
    assert last.groups == (("n4", "n5"),)
    assert len(rnd.groups[0]) == 2 and set(rnd.groups[0]) <= set(NODES)
    assert all(isinstance(f, Partition) for f in (first, last, rnd, halves))


def test_random_faults_are_deterministic_per_seed():
    """The same faults stream gives the same schedule; another seed a different one."""
    spec = RandomFaults(partition_mtbf=1000.0, crash_mtbf=2000.0)
    a = spec.generate(NODES, 60_000, np.random.default_rng(1))
    b = spec.generate(NODES, 60_000, np.random.default_rng(1))
    c = spec.generate(NODES, 60_000, np.random.default_rng(2))
    assert a == b and a != c


def test_random_partition_count_matches_rates():
    """Partition starts follow a renewal process: count over T ~ T / (mtbf + mean duration)."""
    mtbf, mean_len, horizon = 1000.0, 500.0, 3_000_000.0
    spec = RandomFaults(partition_mtbf=mtbf, partition_duration=parse_dist({"dist": "exponential", "mean": mean_len}))
    faults = spec.generate(NODES, horizon, np.random.default_rng(3))
    parts = [f for f in faults if isinstance(f, Partition)]
    expected = horizon / (mtbf + mean_len)
    # cycle length has mean 1500 and sd sqrt(1000^2 + 500^2); count CI from the renewal CLT
    sd = np.sqrt(horizon * (mtbf**2 + mean_len**2) / (mtbf + mean_len) ** 3)
    assert abs(len(parts) - expected) < 4 * sd
    assert all(p.end > p.start for p in parts)
    assert all(b.start >= a.end for a, b in zip(parts, parts[1:]))


def test_random_crashes_are_per_node_and_bounded():
    """Crashes are generated per listed node, inside [start, end)."""
    spec = RandomFaults(crash_mtbf=500.0, crash_duration=Constant(1.0),
                        crash_nodes=("n2", "n4"), start=1000.0, end=9000.0)
    faults = spec.generate(NODES, 20_000, np.random.default_rng(5))
    assert faults and all(isinstance(f, Crash) and f.node in ("n2", "n4") for f in faults)
    assert all(1000.0 <= f.start < 9000.0 for f in faults)
    # uptime gaps are exponential with the configured mean
    gaps = []
    for node in ("n2", "n4"):
        mine = [f for f in faults if f.node == node]
        gaps += [b.start - a.end for a, b in zip(mine, mine[1:])]
    assert stats.kstest(gaps, stats.expon(scale=500.0).cdf).pvalue > 0.001


def test_random_faults_reach_the_result():
    """Generated faults appear, concrete, in the run's faults table."""
    import sim

    s = Scenario.from_dict({"cluster": {"count": 5},
                            "faults": {"random": {"partition_mtbf": "1s", "partition_duration": "300ms"}},
                            "workload": {"clients": 2}, "protocol": {"name": "single_copy"},
                            "run": {"duration": "10s"}})
    r = sim.run(s)
    assert len(r.faults) >= 3 and set(r.faults["kind"]) == {"partition"}
    assert (r.faults["end"] - r.faults["start"]).round(6).eq(300.0).all()
    assert r.summary["faults"] == len(r.faults)


@pytest.mark.parametrize("kind", ["isolate", "split"])
def test_isolate_and_split_become_partitions(kind):
    """isolate/split faults are applied as partitions and labelled in the faults table."""
    import sim

    fault = {"kind": kind, "start": "1s", "end": "2s"}
    if kind == "isolate":
        fault["node"] = "n3"
    s = Scenario.from_dict({"cluster": {"count": 5}, "faults": {"schedule": [fault]}, "workload": {"clients": 5},
                            "protocol": {"name": "single_copy"}, "run": {"duration": "3s"}})
    r = sim.run(s)
    assert list(r.faults["kind"]) == ["partition"]
    assert r.summary["ops.minority"] > 0 and r.summary["ops.majority"] > 0


def test_leader_faults_resolve_when_they_start():
    """node = "@leader" isolates or crashes the protocol's leader; protocols without one are rejected."""
    import sim
    from sim.errors import ScenarioError

    base = {"cluster": {"count": 3}, "workload": {"clients": 3, "rate": 50}, "run": {"duration": "3s"},
            "protocol": {"name": "single_copy", "owner": "n2"}}
    at_leader = {"node": "@leader", "start": "1s", "end": "2s"}
    iso = sim.run(Scenario.from_dict({**base, "faults": {"schedule": [{"kind": "isolate", **at_leader}]}}))
    during = iso.history[iso.history["invoke"].between(1000, 1990)]
    assert set(during.loc[during["outcome"] == "ok", "client"]) == {"c1"}   # only the client next to n2
    crash = sim.run(Scenario.from_dict({**base, "faults": {"schedule": [{"kind": "crash", **at_leader}]}}))
    events = [tuple(e) for e in crash.node_events[["node", "event"]].itertuples(index=False)]
    assert events == [("n2", "crash"), ("n2", "recover")]
    with pytest.raises(ScenarioError, match=r"^faults.schedule\[0\].node: '@leader' needs a protocol with a leader"):
        Scenario.from_dict({**base, "protocol": {"name": "fifo_queue"},
                            "faults": {"schedule": [{"kind": "crash", "node": "@leader", "start": 0}]}})


def test_a_clean_restart_of_an_ordinary_node_is_the_same_as_a_crash():
    """crash with clean = true: an ordinary node loses its volatile state either way, so the run is the same as
    with a hard kill; the faults table says which it was."""
    import sim

    def run(clean):
        fault = {"kind": "crash", "node": "n2", "start": "1s", "end": "2s", "clean": clean}
        return sim.run(Scenario.from_dict({"cluster": {"count": 3}, "workload": {"clients": 3, "rate": 50},
                                           "protocol": {"name": "single_copy", "owner": "n2"},
                                           "faults": {"schedule": [fault]}, "run": {"duration": "3s"}}))

    clean, killed = run(True), run(False)
    assert clean.history.equals(killed.history)
    assert list(clean.node_events["event"]) == ["crash", "recover"]
    assert list(clean.faults["detail"]) == ["node=n2, clean=True"] and list(killed.faults["kind"]) == ["crash"]
    assert (clean.history["outcome"] == "fail").any() or (clean.history["outcome"] == "info").any()


@pytest.mark.parametrize("fault, message", [
    ({"kind": "crash", "node": "n1", "start": "1s", "clean": True}, "faults.schedule[0].end: a clean restart must end"),
    ({"kind": "crash", "node": "n1", "start": "1s", "end": "2s", "clean": 1},
     "faults.schedule[0].clean: must be true or false, got 1"),
])
def test_a_clean_restart_is_validated(fault, message):
    """A clean restart needs an end (it is a restart); clean is a boolean. The errors name the field."""
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError) as err:
        Scenario.from_dict({"cluster": {"count": 3}, "protocol": {"name": "single_copy"},
                            "faults": {"schedule": [fault]}})
    assert str(err.value).startswith(message), str(err.value)
