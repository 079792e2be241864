"""Closed-form oracles over many seeds: M/M/1 time in system, availability under a partition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import sim
from sim.analysis import mm1
from sim.scenario import Scenario

REPLICATIONS = 30


def _ci95(values):
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_mean_time_in_system(rho):
    """M/M/1 (mu = 1/ms): the 95% CI over 30 replications contains 1/(mu - lambda)."""
    mu = 1.0
    lam = rho * mu
    scenario = Scenario.from_dict({
        "cluster": {"nodes": ["server"]},
        "network": {"latency": 0},
        "workload": {"clients": 2, "rate": lam * 1000 / 2, "timeout": "inf", "target": "fixed",
                         "target_node": "server"},
        "protocol": {"name": "fifo_queue", "service_time": {"dist": "exponential", "mean": 1 / mu}},
        "run": {"duration": "6s", "warmup": "500ms"},
    })
    means = []
    for seed in range(REPLICATIONS):
        r = sim.run(scenario, seed=seed)
        s = r.summary
        assert s["info"] == 0 and s["fail"] == 0
        ok = s["latency.read.count"] + s["latency.write.count"]
        total = s["latency.read.mean"] * s["latency.read.count"] + s["latency.write.mean"] * s["latency.write.count"]
        means.append(total / ok)
    lo, hi = _ci95(means)
    expected = mm1(lam, mu).mean_time_in_system
    assert expected == 1 / (mu - lam)
    assert lo <= expected <= hi, (lo, hi)


@pytest.mark.slow
def test_single_copy_availability_under_partition():
    """Owner isolated from half the clients for half the measured run: availability 3/4 overall,
    0 on the cut-off side, 1 on the owner's side (CI over many seeds; edge effects only lower it)."""
    latency, duration = 1.0, 8000.0
    scenario = Scenario.from_dict({
        "cluster": {"nodes": ["n1", "n2", "n3"]},
        "network": {"latency": latency},
        "faults": {"schedule": [{"kind": "isolate", "node": "n1", "start": duration / 4, "end": 3 * duration / 4}]},
        "workload": {"clients": 8, "homes": ["n1", "n2"], "rate": 40, "timeout": "100ms"},
        "protocol": {"name": "single_copy", "owner": "n1"},
        "run": {"duration": duration},
    })
    overall = []
    for seed in range(20):
        s = sim.run(scenario, seed=seed).summary
        overall.append(s["availability"])
        assert s["availability.minority"] == 1.0
        assert s["availability.majority"] <= 0.01
        assert s["availability.none"] >= 0.99
    lo, hi = _ci95(overall)
    # ops of the cut-off half invoked up to one round trip (2 ms) before the cut are lost too:
    edge = 0.5 * 2 * latency / duration
    assert lo <= 0.75 and hi >= 0.75 - edge, (lo, hi)
