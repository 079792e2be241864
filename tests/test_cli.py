"""The capsim command: runs every example scenario, writes outputs, rejects bad input cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.result import Result

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "experiments" / "scenarios").glob("*.toml"))


def test_there_are_examples():
    """The repository ships example scenarios."""
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_run_every_example(path, tmp_path, capsys):
    """capsim run SCENARIO --out DIR prints that protocol's own numbers and verdicts, and writes a result that
    loads back and says the same."""
    assert main(["run", str(path), "--seed", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    history = pd.read_csv(tmp_path / "history.csv")
    measured = (history["invoke"] >= summary_warmup(path)) & (history["invoke"] < duration(path))
    assert summary["ops"] == int(measured.sum())
    assert set(history["outcome"]) <= {"ok", "fail", "info"}
    loaded = Result.load(tmp_path)
    scenario = loaded.scenario
    if scenario.workload.clients:
        assert "availability" in out and "latency (ok ops)" in out
    else:
        assert "availability" not in out  # no client operations: nothing to say about them
    own = scenario.protocol.report(loaded)
    if scenario.protocol.tag not in ("single_copy", "fifo_queue"):
        assert own, scenario.protocol.tag
        assert any(line.startswith("verdict") for line in own)
    for line in own:
        assert line in out, line
    fresh = sim.run(scenario, seed=3)
    assert {k: v.ok for k, v in loaded.verdicts.items()} == {k: v.ok for k, v in fresh.verdicts.items()}


def summary_warmup(path):
    from sim.scenario import Scenario

    return Scenario.from_toml(path).run.warmup


def duration(path):
    from sim.scenario import Scenario

    return Scenario.from_toml(path).run.duration


def test_trace_flag_writes_trace(tmp_path, capsys):
    """--trace writes trace.csv with one row per message."""
    assert main(["run", str(EXAMPLES[0]), "--trace", "--out", str(tmp_path)]) == 0
    trace = pd.read_csv(tmp_path / "trace.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(trace) == summary["messages.sent"] + summary["messages.duplicated"]


def test_bad_scenario_exits_2_with_one_line(tmp_path):
    """A bad file exits with status 2 and one message naming the field, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[network]\nloss = 1.5\n[protocol]\nname = \"raft\"\n")
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "capsim: error: network.loss: must be in [0, 1], got 1.5"
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("args, fragment", [
    (["run", "does-not-exist.toml"], "file not found"),
    (["run", "EXAMPLE", "--seed", "-4"], "--seed: must be a non-negative integer"),
])
def test_user_mistakes_exit_2(args, fragment, capsys):
    """Missing files and bad seeds are reported without a traceback."""
    args = [str(EXAMPLES[0]) if a == "EXAMPLE" else a for a in args]
    assert main(args) == 2
    assert fragment in capsys.readouterr().err


def test_help_has_examples():
    """capsim --help shows usage examples."""
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "capsim run experiments/scenarios/" in proc.stdout


def test_an_empty_file_is_not_a_scenario(tmp_path):
    """capsim run /dev/null (or an empty file) says the protocol is missing, exit 2, instead of running a default."""
    for path in ("/dev/null", tmp_path / "empty.toml"):
        if isinstance(path, Path):
            path.write_text("")
        proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(path)], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert proc.stderr.startswith("capsim: error: protocol: missing") and len(proc.stderr.splitlines()) == 1
