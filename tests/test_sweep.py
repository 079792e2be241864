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
    ({"base": SC, "factors": {"workload.rate": [5]}, "name": "../../x"}, "name: must be a plain name"),
    ({"base": SC, "factors": {"workload.rate": [5]}, "name": "/tmp/x"}, "name: must be a plain name"),
    ({"base": SC, "factors": {"workload.rate": [5]}, "name": ".hidden"}, "name: must be a plain name"),
    ({"base": SC, "factors": {"workload.rate": [5]}, "name": ""}, "name: must be a non-empty string"),
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


def _small_sweep_file(folder: Path, **extra: str) -> Path:
    path = folder / "s.toml"
    lines = [f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n" + SWEEP_TOML.format(duration="500ms").replace("replications = 6",
                                                                                          "replications = 1"))
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("capsim: error: "), err
    return err[0]


def test_unknown_metric_is_an_error_listing_the_valid_ones(tmp_path, capsys):
    """A metric no run reports, in a sweep file or in summarize(), is an error naming the field and listing the
    metrics the runs do report; summarize() takes one name as a string (not its characters)."""
    from sim.cli import main

    spec = _small_sweep_file(tmp_path)
    spec.write_text(spec.read_text().replace('metrics = ["availability"]', 'metrics = ["availability", "availabilty"]'))
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = _one_line(capsys)
    assert line.startswith("capsim: error: metrics[1]: unknown metric 'availabilty'; the runs report: ops, ")
    assert "availability" in line and "latency.read.p99" in line
    df = sweep(BASE, {"network.loss": [0.0]}, 2, executor="serial", progress=False)
    one = summarize(df, "availability")
    assert list(one["metric"]) == ["availability"] and one.loc[0, "n"] == 2
    with pytest.raises(ScenarioError, match=r"metrics\[0\]: unknown metric 'latency'; the runs report: ops,"):
        summarize(df, "latency")


def test_a_sweep_where_every_run_fails_shows_the_errors(tmp_path, capsys):
    """Every run failing is exit 1 with the first errors on stderr, not an empty table; summarize() of such a
    table says every run failed."""
    from sim.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text('name = "boom"\n[base]\ncluster = { count = 3 }\nrun = { duration = "500ms" }\n'
                    'protocol = { name = "test_exploding", explode = true }\n[factors]\n"network.loss" = [0.0, 0.1]\n')
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(tmp_path / "o"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "all 2 runs failed" in captured.err and "RuntimeError: boom" in captured.err
    df = sweep(BASE.variant({"protocol": {"name": "test_exploding", "explode": True}}), {"network.loss": [0.0]},
               1, executor="serial", progress=False)
    with pytest.raises(ScenarioError, match="every run failed.*RuntimeError: boom"):
        summarize(df, "availability")


def test_cache_key_changes_with_the_code(tmp_path, monkeypatch):
    """A cached run is reused only by the same code: another source fingerprint, or another external protocol
    module, runs again."""
    first = sweep(BASE, {"network.loss": [0.0]}, 1, executor="serial", progress=False, cache=tmp_path)
    calls = []
    real = sweep_mod._task
    monkeypatch.setattr(sweep_mod, "_task", lambda t: calls.append(t) or real(t))
    sweep(BASE, {"network.loss": [0.0]}, 1, executor="serial", progress=False, cache=tmp_path)
    assert calls == []
    monkeypatch.setattr(sweep_mod, "code_fingerprint", lambda: "0123456789abcdef")
    again = sweep(BASE, {"network.loss": [0.0]}, 1, executor="serial", progress=False, cache=tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.json"))) == 2
    pdt.assert_frame_equal(_without_runtime(first), _without_runtime(again))
    module = tmp_path / "myproto.py"
    module.write_text("x = 1\n")
    key = sweep_mod._cache_key({"protocol": {"name": "p", "module": str(module)}})
    module.write_text("x = 2\n")
    assert sweep_mod._cache_key({"protocol": {"name": "p", "module": str(module)}}) != key


def test_numpy_scalars_are_accepted_everywhere(tmp_path):
    """np.arange, np.int64 and np.float32 work as factor values, variant() values and seeds, and the rows and
    cache hold plain numbers."""
    s = BASE.variant({"workload.clients": np.int64(2), "network.loss": np.float32(0.25)})
    assert s.workload.clients == 2 and type(s.workload.clients) is int
    assert s.network.loss == pytest.approx(0.25) and type(s.network.loss) is float
    df = sweep(BASE, {"workload.clients": np.arange(1, 3)}, 1, executor="serial", progress=False, cache=tmp_path)
    assert list(df["workload.clients"]) == [1, 2] and df["error"].isna().all()
    assert len(list(tmp_path.glob("*.json"))) == 2
    plain = sweep(BASE, {"workload.clients": [1, 2]}, 1, executor="serial", progress=False)
    pdt.assert_frame_equal(_without_runtime(df), _without_runtime(plain))
    assert len(sweep(BASE, {"network.loss": [0.0]}, seeds=[np.int64(4)], executor="serial", progress=False)) == 1


def test_sweep_file_that_cannot_be_read_is_one_line(tmp_path, capsys):
    """A sweep file that is a folder, is not UTF-8, or does not exist: one line naming it, exit 2."""
    from sim.cli import main

    binary = tmp_path / "b.toml"
    binary.write_bytes(b'name = "x"\n\xff\xfe\n')
    for path, needle in [(tmp_path, "is a folder, not a file"), (binary, "is not UTF-8 text"),
                         (tmp_path / "missing.toml", "file not found")]:
        assert main(["sweep", str(path)]) == 2
        assert needle in _one_line(capsys)


def test_unreachable_dask_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    """--dask with an address nothing listens on, or that is not an address: one line naming --dask, exit 2."""
    from sim import executors
    from sim.cli import main

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "2s")
    spec = _small_sweep_file(tmp_path)
    for address in ("tcp://127.0.0.1:9", "not-an-address"):
        out = tmp_path / f"o{len(address)}"
        assert main(["sweep", str(spec), "--dask", address, "--out", str(out), "--quiet"]) == 2
        line = _one_line(capsys)
        assert line.startswith(f"capsim: error: --dask: cannot connect to the Dask scheduler {address!r}: "), line


def test_sweep_folder_is_replaced_whole_and_kept_for_resume(tmp_path, capsys):
    """A second sweep into the same folder with fewer plots removes the first one's extra figures; results are
    listed in the manifest; the cache stays; a result folder is not taken as a sweep folder."""
    from sim.cli import main

    spec = _small_sweep_file(tmp_path)
    two = spec.read_text() + ('[[plots]]\nx = "network.loss"\ny = "availability"\n'
                              '[[plots]]\nx = "network.loss"\ny = "throughput"\n')
    spec.write_text(two.replace('metrics = ["availability"]', 'metrics = ["availability", "throughput"]'))
    out = tmp_path / "o"
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(out), "--quiet", "--csv"]) == 0
    assert (out / "01-throughput.png").exists() and (out / "results.csv").exists()
    spec.write_text(two.split("[[plots]]")[0] + '[[plots]]\nx = "network.loss"\ny = "availability"\n')
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(out), "--quiet"]) == 0
    wrote = capsys.readouterr().out.strip().splitlines()[-1]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "cache" not in p.parts}
    assert files == {"manifest.json", "results.parquet", "summary.csv", "00-availability.png", "00-availability.svg"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sweep" and manifest["files"]["results.parquet"]["rows"] == 3
    assert "wrote " in wrote and "results.parquet" in wrote and "01-throughput" not in wrote
    assert len(list((out / "cache").glob("*.json"))) == 3
    sim.run(BASE).save(tmp_path / "r")
    assert main(["sweep", str(spec), "--executor", "serial", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "holds a capsim result, not a sweep" in _one_line(capsys)
