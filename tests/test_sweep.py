"""Sweeps: common random numbers, identical rows in every executor, failures, cache and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from scipy import stats

import sim
import sim.sweeps as sweep_mod
from sim.config import fld
from sim.errors import ScenarioError
from sim.protocol import ProtocolConfig, register_protocol
from sim.protocols.single_copy import SingleCopyConfig
from sim.sweepfile import parse_sweep
from sim.sweeps import expand_factors, replication_seed, summarize, sweep

ROOT = Path(__file__).resolve().parents[1]
BASE = sim.Scenario.from_dict({
    "cluster": {"count": 3},
    "network": {"latency": {"dist": "exponential", "mean": 1}},
    "faults": {"schedule": [{"kind": "isolate", "node": "n1", "start": 500, "end": 1000}]},
    "workload": {"clients": 3, "rate": 40, "timeout": "100ms"},
    "protocol": {"name": "single_copy"},
    "run": {"duration": "1500ms", "seed": 5},
})
FACTORS = {"network.loss": [0.0, 0.2], "workload.read_fraction": [0.1, 0.9]}
SC = {"protocol": {"name": "single_copy"}}  # the smallest base a sweep file can give


@register_protocol
@dataclass(frozen=True, kw_only=True)
class ExplodingConfig(ProtocolConfig[None]):
    """A protocol that fails at run time when ``explode`` is set (to test error rows)."""

    tag: ClassVar[str] = "test_exploding"
    explode: bool = fld(False)

    def build_nodes(self, world, state):
        if self.explode:
            raise RuntimeError("boom")
        return SingleCopyConfig().build_nodes(world, state)


def _without_runtime(df):
    return df.drop(columns=["runtime"]).reset_index(drop=True)


def test_expand_factors_and_common_random_numbers():
    """Points are the cartesian product; replication i has the same seed at every point."""
    points = expand_factors(FACTORS)
    assert points == [{"network.loss": loss, "workload.read_fraction": rf} for loss in (0.0, 0.2) for rf in (0.1, 0.9)]
    df = sweep(BASE, FACTORS, 3, executor="serial", progress=False)
    assert len(df) == 12 and df["error"].isna().all()
    seeds = df.pivot(index="point", columns="replication", values="seed")
    assert (seeds.nunique() == 1).all() and seeds.iloc[0].nunique() == 3
    assert list(seeds.iloc[0]) == [replication_seed(5, r) for r in range(3)]
    # same seed, same workload draws: the op count does not depend on loss
    ops = df.pivot_table(index=["workload.read_fraction", "replication"], columns="network.loss", values="ops")
    assert (ops[0.0] == ops[0.2]).all()


def test_processes_equal_serial():
    """The process pool gives exactly the rows of the serial run."""
    a = sweep(BASE, FACTORS, 2, executor="serial", progress=False)
    b = sweep(BASE, FACTORS, 2, executor="processes", workers=2, progress=False)
    pdt.assert_frame_equal(_without_runtime(a), _without_runtime(b))


@pytest.mark.slow
def test_dask_local_cluster_equals_serial():
    """A Dask LocalCluster gives exactly the rows of the serial run."""
    a = sweep(BASE, {"network.loss": [0.0, 0.2]}, 2, executor="serial", progress=False)
    b = sweep(BASE, {"network.loss": [0.0, 0.2]}, 2, executor="dask", workers=2, progress=False)
    pdt.assert_frame_equal(_without_runtime(a), _without_runtime(b))


def test_failed_runs_are_recorded_not_fatal(tmp_path):
    """A run that raises becomes a row with its error; the other points still run; failures are not cached."""
    base = BASE.variant({"protocol": {"name": "test_exploding"}})
    df = sweep(base, {"protocol.explode": [False, True]}, 2, executor="serial", progress=False, cache=tmp_path)
    assert list(df["error"].isna()) == [True, True, False, False]
    assert df["error"].dropna().str.contains("RuntimeError: boom").all()
    assert len(list(tmp_path.glob("*.json"))) == 2
    s = summarize(df, ["availability"])
    assert list(s["errors"]) == [0, 2] and list(s["n"]) == [2, 0]


def test_cache_skips_finished_runs(tmp_path, monkeypatch):
    """A second sweep with the same cache runs nothing and returns the same rows."""
    first = sweep(BASE, FACTORS, 2, executor="serial", progress=False, cache=tmp_path)
    calls = []
    real = sweep_mod._task
    monkeypatch.setattr(sweep_mod, "_task", lambda t: calls.append(t) or real(t))
    again = sweep(BASE, FACTORS, 2, executor="serial", progress=False, cache=tmp_path)
    assert calls == []
    pdt.assert_frame_equal(first, again, check_dtype=False)
    more = sweep(BASE, FACTORS, 3, executor="serial", progress=False, cache=tmp_path)
    assert len(calls) == 4 and len(more) == 12


def test_summarize_matches_student_t():
    """summarize() gives the mean and the Student-t 95% interval per point and metric."""
    df = pd.DataFrame({"x": [1, 1, 1, 2, 2, 2], "point": [0, 0, 0, 1, 1, 1], "replication": [0, 1, 2] * 2,
                       "seed": [1, 2, 3] * 2, "m": [1.0, 2.0, 4.0, 5.0, 5.0, 5.0], "runtime": 0.1, "error": None})
    s = summarize(df, ["m"])
    x = np.array([1.0, 2.0, 4.0])
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert s.loc[0, "mean"] == pytest.approx(x.mean())
    assert s.loc[0, "ci_low"] == pytest.approx(x.mean() - half)
    assert s.loc[0, "ci_high"] == pytest.approx(x.mean() + half)
    assert s.loc[1, "ci_low"] == s.loc[1, "ci_high"] == 5.0 and list(s["x"]) == [1, 2]


@pytest.mark.parametrize("data, message", [
    ({"factors": {"network.loss": [0.1]}}, "base: must be a scenario file path"),
    ({"base": SC, "factors": {}}, "factors: must be a table"),
    ({"base": SC, "factors": {"network.loss": [2.0]}},
        'factors."network.loss": first value is invalid: network.loss: must be in [0, 1]'),
    ({"base": SC, "factors": {"network..loss": [0.1]}}, 'factors."network..loss": is not a field path'),
    ({"base": SC, "factors": {"workload.rate": {"start": 1, "stop": 5}}}, 'factors."workload.rate": must be a list'),
    ({"base": SC, "factors": {"workload.rate": [5]}, "replications": 0}, "replications: must be an integer >= 1"),
    ({"base": {**SC, "network": {"los": 1}}, "factors": {"workload.rate": [5]}}, "base.network.los: unknown key"),
    ({"base": SC, "factors": {"workload.rate": [5]}, "plots": [{"x": "nope", "y": "availability"}]},
        "plots[0].x: must be one of the factors"),
])
def test_sweep_file_errors_name_the_field(data, message):
    """Sweep files are validated with field paths, like scenarios."""
    with pytest.raises(ScenarioError) as err:
        parse_sweep(data)
    assert str(err.value).startswith(message), str(err.value)


def test_sweep_file_ranges():
    """Range tables expand to evenly spaced or stepped values."""
    spec = parse_sweep({"base": SC, "factors": {"workload.rate": {"start": 10, "stop": 50, "num": 5},
                                                 "network.loss": {"start": 0, "stop": 0.3, "step": 0.1}}})
    assert spec.factors["workload.rate"] == [10, 20, 30, 40, 50]
    assert spec.factors["network.loss"] == pytest.approx([0.0, 0.1, 0.2])


SWEEP_TOML = """
name = "resume"
replications = 6
seed = 3
metrics = ["availability"]
[base]
cluster = {{ count = 3 }}
workload = {{ clients = 4, rate = 200 }}
run = {{ duration = "{duration}" }}
protocol = {{ name = "single_copy" }}
[factors]
"network.loss" = [0.0, 0.1, 0.2]
"""


def _cache_state(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_ino, p.read_text()) for p in sorted(folder.glob("*.json"))}


@pytest.mark.slow
def test_kill_and_resume_recomputes_only_missing_runs(tmp_path):
    """kill -9 in the middle of a sweep, run it again: finished runs are kept untouched, none is missing or doubled."""
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP_TOML.format(duration="3s"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(spec), "--executor", "serial", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cache = out / "cache"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _cache_state(cache)
    assert 4 <= len(before) < 18, len(before)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = _cache_state(cache)
    assert len(after) == 18
    assert all(after[name] == state for name, state in before.items())  # not rewritten
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 18 and not df.duplicated(["point", "replication"]).any()
    fresh = sweep(sim.Scenario.from_dict({"cluster": {"count": 3}, "workload": {"clients": 4, "rate": 200},
                                          "protocol": {"name": "single_copy"}, "run": {"duration": "3s"}}),
                  {"network.loss": [0.0, 0.1, 0.2]}, 6, seed=3, executor="serial", progress=False)
    pdt.assert_frame_equal(_without_runtime(df)[["network.loss", "point", "replication", "seed", "availability"]],
                           _without_runtime(fresh)[["network.loss", "point", "replication", "seed", "availability"]])


def test_cli_sweep_writes_results_and_figures(tmp_path, capsys):
    """capsim sweep writes results.parquet, results.csv, summary.csv and one figure per plot."""
    from sim.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text(SWEEP_TOML.format(duration="500ms").replace("replications = 6", "replications = 2"))
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(tmp_path / "o"), "--csv", "--quiet"]) == 0
    files = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"results.parquet", "results.csv", "summary.csv", "00-availability.png", "00-availability.svg"} <= files
    assert "6 runs (0 failed)" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert list(summary["network.loss"]) == [0.0, 0.1, 0.2] and (summary["n"] == 2).all()
    bad = tmp_path / "bad.toml"
    bad.write_text('base = { protocol = { name = "single_copy" } }\n[factors]\n"network.loss" = [3]\n')
    assert main(["sweep", str(bad)]) == 2
    assert 'factors."network.loss"' in capsys.readouterr().err


def test_example_sweep_file_is_valid():
    """The shipped example sweep parses."""
    from sim.sweepfile import load_sweep

    spec = load_sweep(ROOT / "experiments" / "sweeps" / "loss.toml")
    assert spec.factors["network.loss"][0] == 0.0 and spec.replications >= 2
    json.dumps(spec.factors)
