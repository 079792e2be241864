"""Result: tables, summary, and a lossless save/load through a folder."""

from __future__ import annotations

import math
from pathlib import Path

import pandas.testing as pdt

import sim
from sim.result import Result
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]


def test_result_carries_resolved_scenario_and_seed():
    """The result holds the resolved scenario with the seed actually used."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "partitioned-store.toml")
    r = sim.run(s, seed=99)
    assert r.seed == 99 and r.scenario.run.seed == 99
    assert r.scenario.protocol.owner == "n1" and r.runtime > 0
    assert list(r.history.columns)[:8] == ["op_id", "client", "op", "key", "value", "invoke", "complete", "outcome"]


def test_save_load_round_trip(tmp_path):
    """save() then load() gives equal tables, summary and scenario."""
    s = Scenario.from_toml(ROOT / "experiments" / "scenarios" / "lossy-network.toml")
    s = s.variant({"run.trace": True, "run.duration": "3s"})
    r = sim.run(s)
    back = Result.load(r.save(tmp_path / "out"))
    assert back.scenario == r.scenario and back.seed == r.seed
    pdt.assert_frame_equal(back.history, r.history, check_dtype=False)
    for name in ("timeline", "faults", "messages", "trace"):
        pdt.assert_frame_equal(getattr(back, name), getattr(r, name), check_dtype=False)
    for k, v in r.summary.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(back.summary[k])
        else:
            assert back.summary[k] == v


def test_summary_latency_and_throughput_agree_with_history():
    """Summary percentiles and throughput are those of the measured ok operations."""
    s = Scenario.from_dict({"cluster": {"count": 3}, "network": {"latency": {"dist": "exponential", "mean": 2}},
                            "workload": {"clients": 3, "rate": 100}, "protocol": {"name": "single_copy"},
                            "run": {"duration": "4s", "warmup": "1s"}})
    r = sim.run(s)
    h = r.history
    m = h[(h["invoke"] >= 1000) & (h["invoke"] < 4000) & (h["outcome"] == "ok")]
    reads = m[m["op"] == "read"]
    lat = (reads["complete"] - reads["invoke"])
    assert r.summary["latency.read.p99"] == lat.quantile(0.99)
    assert r.summary["latency.read.count"] == len(reads)
    assert r.summary["throughput"] == len(m) / 3.0
