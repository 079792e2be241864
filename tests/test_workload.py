"""Workload clients: arrival processes, key choice, read/write mix, targets, timeouts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import sim
from sim.scenario import Scenario


def _run(**sections):
    data = {"cluster": {"count": 3}, "network": {"latency": "1ms"}, "protocol": {"name": "single_copy"},
            "run": {"duration": "20s", "seed": 4}}
    data.update(sections)
    return sim.run(Scenario.from_dict(data))


def test_open_loop_is_poisson():
    """Open-loop arrivals: counts match rate x time and gaps are exponential (KS test)."""
    r = _run(workload={"clients": 2, "rate": 100})
    h = r.history
    for _client, ops in h.groupby("client"):
        n = len(ops)
        assert abs(n - 2000) < 4 * np.sqrt(2000)
        gaps = np.diff(np.sort(ops["invoke"].to_numpy()))
        assert stats.kstest(gaps, stats.expon(scale=10.0).cdf).pvalue > 0.001


def test_closed_loop_keeps_one_operation_outstanding():
    """Closed-loop clients never overlap their own operations and wait a think time between them."""
    r = _run(workload={"clients": 3, "mode": "closed", "think_time": "5ms"})
    for _, ops in r.history.groupby("client"):
        ops = ops.sort_values("invoke")
        gaps = ops["invoke"].to_numpy()[1:] - ops["complete"].to_numpy()[:-1]
        assert np.allclose(gaps, 5.0)
    # a cycle is one round trip (2 ms to the owner, 4 ms through a forwarding node) plus 5 ms think
    assert len(r.history) >= 3 * (20_000 // 9) - 3


def test_read_fraction_and_zipf_keys():
    """The read share matches read_fraction; zipf key frequencies follow 1/k^s."""
    r = _run(workload={"clients": 4, "rate": 200, "read_fraction": 0.25, "keys": 20, "key_dist": "zipf", "zipf_s": 1.2})
    h = r.history
    n = len(h)
    reads = int((h["op"] == "read").sum())
    ci = stats.binomtest(reads, n).proportion_ci(0.999)
    assert ci.low <= 0.25 <= ci.high
    w = 1 / np.arange(1, 21) ** 1.2
    expected = w / w.sum() * n
    observed = np.bincount(h["key"].astype(int), minlength=20)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_target_policies():
    """home, fixed, round_robin and random send operations to the expected nodes."""
    home = _run(workload={"clients": 3, "target": "home"}).history
    assert (home.groupby("client")["node"].unique().map(list).tolist()) == [["n1"], ["n2"], ["n3"]]
    fixed = _run(workload={"clients": 3, "target": "fixed", "target_node": "n2"}).history
    assert set(fixed["node"]) == {"n2"}
    rr = _run(workload={"clients": 1, "target": "round_robin"}).history
    assert list(rr["node"][:6]) == ["n2", "n3", "n1", "n2", "n3", "n1"]
    rnd = _run(workload={"clients": 1, "target": "random", "rate": 300}).history
    counts = rnd["node"].value_counts().reindex(["n1", "n2", "n3"]).to_numpy()
    assert stats.chisquare(counts).pvalue > 0.001


def test_timeouts_become_info_and_late_replies_are_ignored():
    """An operation whose reply comes after the timeout ends info, even if a reply arrives later."""
    r = _run(network={"latency": "40ms"},
             workload={"clients": 1, "timeout": "100ms", "target": "fixed", "target_node": "n2"},
             protocol={"name": "single_copy", "owner": "n1"})
    h = r.history
    assert (h["outcome"] == "info").all() and (h["error"] == "timeout").all()
    assert np.allclose(h["complete"] - h["invoke"], 100.0)


def test_node_up_flag_and_crashed_target():
    """Operations sent to a crashed node are flagged node_up=False and excluded from availability."""
    r = _run(workload={"clients": 3, "target": "home"},
             faults={"schedule": [{"kind": "crash", "node": "n3", "start": "5s", "end": "10s"}]})
    h = r.history
    down = h[~h["node_up"]]
    assert len(down) > 0 and set(down["node"]) == {"n3"}
    assert down["invoke"].between(5000, 10000).all()
    assert r.summary["availability"] == pytest.approx(1.0, abs=1e-3)


def test_drain_lets_in_flight_operations_finish():
    """Operations invoked just before the end still complete during the drain period."""
    r = _run(network={"latency": "30ms"}, workload={"clients": 2, "timeout": "1s"})
    assert (r.history["outcome"] == "ok").all()
    assert r.history["complete"].max() > r.scenario.run.duration
