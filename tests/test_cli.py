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
    workload_verdicts = {"counter"} & set(loaded.verdicts)  # the workload's, printed with the operations
    for name in workload_verdicts:
        assert any(line.startswith("verdict") and f" {name}: " in line for line in out.splitlines()), out
    if len(loaded.verdicts) > len(workload_verdicts):  # protocols with checkers print each verdict of theirs
        assert sum(line.startswith("verdict") for line in own) == len(loaded.verdicts) - len(workload_verdicts), own
    else:  # key-value stores: their counters
        assert any(line.startswith("protocol ") for line in out.splitlines()), out
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
    (["run", "EXAMPLE", "--seed", "-4"], "--seed: must be an integer in [0, 2**63), got -4"),
    (["run", "EXAMPLE", "--seed", "99999999999999999999999"], "--seed: must be an integer in [0, 2**63)"),
    (["demo", "--seed", "-1"], "--seed: must be an integer in [0, 2**63), got -1"),
    (["sweep", "SWEEP", "--workers", "99999999999999999999"], "--workers: must be an integer in [1, 1024]"),
    (["sweep", "SWEEP", "--workers", "0"], "--workers: must be an integer in [1, 1024], got 0"),
])
def test_user_mistakes_exit_2(args, fragment, capsys):
    """Missing files, bad seeds and absurd worker counts are one line, exit 2, before any work."""
    sweep = ROOT / "experiments" / "sweeps" / "loss.toml"
    args = [{"EXAMPLE": str(EXAMPLES[0]), "SWEEP": str(sweep)}.get(a, a) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err


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


def test_version(capsys):
    """capsim --version prints the installed version."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().startswith("capsim ")


def test_protocols_lists_every_protocol_and_describes_each(capsys):
    """capsim protocols names every protocol with a line about it; capsim protocols NAME prints its fields from the
    config class (types, defaults with units, accepted values); an unknown name is a one-line error, exit 2."""
    from sim.protocol import BUILTIN_PROTOCOLS

    assert main(["protocols"]) == 0
    listing = capsys.readouterr().out
    for name in BUILTIN_PROTOCOLS:
        (row,) = [ln for ln in listing.splitlines() if ln.split(" ", 1)[0] == name]
        assert len(row.split()) > 3, row  # a description follows the name
    assert main(["protocols", "raft"]) == 0
    raft = capsys.readouterr().out
    rows = {ln.split()[0]: ln for ln in raft.splitlines()
            if ln and not ln.startswith(("raft:", "field", "module", "messages"))}
    assert set(rows) == {"election_timeout_min", "election_timeout_max", "heartbeat", "read_mode", "check_quorum",
                         "pre_vote", "lease_drift_bound", "lease_margin", "max_batch", "forward", "forward_ttl",
                         "snapshot_threshold", "snapshot_timeout", "snapshot_record_time",
                         "dedup_window", "dedup", "dedup.ttl", "dedup.max_entries"}
    assert "duration (ms)" in rows["heartbeat"] and "50 ms" in rows["heartbeat"] and "> 0" in rows["heartbeat"]
    assert '"read_index" | "lease" | "log" | "local"' in rows["read_mode"]
    assert main(["protocols", "messaging"]) == 0
    assert "publishers[].rate" in capsys.readouterr().out  # nested tables are listed with their paths
    assert main(["protocols", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capsim: error: NAME: no protocol 'nosuch'") and len(err.splitlines()) == 1


def test_there_is_an_example_scenario_for_every_protocol():
    """experiments/scenarios/ has at least one scenario per built-in protocol (both quorum modes)."""
    from sim.protocol import BUILTIN_PROTOCOLS
    from sim.scenario import Scenario

    used = {(s.protocol.tag, getattr(s.protocol, "mode", None)) for s in map(Scenario.from_toml, EXAMPLES)}
    assert set(BUILTIN_PROTOCOLS) <= {tag for tag, _ in used}
    assert {("quorum", "dynamo"), ("quorum", "abd")} <= used
