"""The cost guard: absurd runs and sweeps are refused at once, naming the field; estimates are honest; progress."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import typing
from pathlib import Path

import pandas.testing as pdt
import pytest
import simpy

import sim
import sim.cost as cost
from sim.cli import main
from sim.config import Duration, MaybeInfDuration
from sim.cost import estimate
from sim.errors import ScenarioError
from sim.protocol import ProtocolConfig
from sim.sweepfile import parse_sweep

BASE = {"cluster": {"count": 5}, "workload": {"clients": 10, "rate": 50}, "protocol": {"name": "raft"},
        "run": {"duration": "10s"}}


def _scenario(**updates):
    return sim.Scenario.from_dict(BASE).variant(updates)


ABSURD = [
    ({"workload.rate": 1e9}, "workload.rate"),
    ({"run.duration": "1e9s"}, "run.duration"),
    ({"workload.clients": 100_000}, "workload.clients"),
    ({"protocol.heartbeat": "1ns"}, "protocol.heartbeat"),
    ({"faults": {"random": {"crash_mtbf": "1us"}}}, "faults.random.crash_mtbf"),
    ({"workload.keys": 10**12, "workload.key_dist": "zipf"}, "workload.keys"),
]


@pytest.mark.parametrize("updates, field", ABSURD, ids=[f for _, f in ABSURD])
def test_absurd_runs_are_refused_at_once_naming_the_field(updates, field, tmp_path):
    """Each of these ran until killed (or raised MemoryError): now capsim run refuses it in one line that names the
    field, the estimate and the override, with exit 2."""
    path = tmp_path / "s.toml"
    path.write_text(_scenario(**updates).to_toml())
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"capsim: error: {field}: "), lines[0]
    assert "the run would take about" in lines[0] and "Pass --allow-large" in lines[0]
    with pytest.raises(ScenarioError) as err:
        sim.run(_scenario(**updates))
    assert err.value.path == field


def test_a_publisher_flood_is_refused():
    """A messaging publisher at 1e9 messages/s with no count is refused, naming its rate; with a count it is not."""
    s = sim.Scenario.from_toml(Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
                               / "rabbitmq-retry-dlx.toml")
    flood = s.variant({"protocol.publishers[0].rate": 1e9, "protocol.publishers[0].count": None})
    with pytest.raises(ScenarioError) as err:
        sim.run(flood)
    assert err.value.path == "protocol.publishers[0].rate" and "messages" in err.value.reason
    estimate(s.variant({"protocol.publishers[0].rate": 1e9}))  # count = 200 bounds it
    assert estimate(s.variant({"protocol.publishers[0].rate": 1e9})).events < cost.MAX_EVENTS


def test_allow_large_runs_what_the_guard_refuses(monkeypatch, tmp_path, capsys):
    """With the limit lowered below a small run, it is refused without the override and runs with it, in Python
    (allow_large=True) and on the command line (--allow-large)."""
    s = _scenario(**{"run.duration": "1s"})
    monkeypatch.setattr(cost, "MAX_EVENTS", estimate(s).events / 2)
    with pytest.raises(ScenarioError, match="limit is"):
        sim.run(s)
    assert sim.run(s, allow_large=True).summary["ops"] > 0
    path = tmp_path / "s.toml"
    path.write_text(s.to_toml())
    assert main(["run", str(path)]) == 2
    assert "--allow-large" in capsys.readouterr().err
    assert main(["run", str(path), "--allow-large"]) == 0


def _events(scenario):
    """The events a run really processes (kernel steps)."""
    count = 0
    real = simpy.Environment.step

    def step(env):
        nonlocal count
        count += 1
        return real(env)

    simpy.Environment.step = step
    try:
        sim.run(scenario, allow_large=True)
    finally:
        simpy.Environment.step = real
    return count


@pytest.mark.parametrize("protocol", ["single_copy", "quorum", "raft", "eventual", "primary_backup"])
def test_the_estimate_is_within_a_factor_of_three(protocol):
    """For the key-value protocols under load, the estimated event count is within a factor of 3 of the events the
    kernel really processes (the guard tells a typo from an experiment; it needs no more)."""
    s = _scenario(**{"protocol": {"name": protocol}, "workload.rate": 100, "run.duration": "2s"})
    measured = _events(s)
    estimated = estimate(s).events
    assert 1 / 3 <= measured / estimated <= 3, (measured, estimated)


def test_every_periodic_timer_is_counted():
    """Every duration field of a built-in config named like a period (heartbeat, interval, mtbf) is declared with
    fld(every=...), so the estimate counts it; a new timer without it fails here."""
    from sim.faultspec import RandomFaults
    from sim.scenario import RunConfig

    classes = [RandomFaults, RunConfig, *ProtocolConfig.members().values()]
    seen = set()
    while classes:
        cls = classes.pop()
        if cls in seen or not dataclasses.is_dataclass(cls):
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            for arg in typing.get_args(tp) or (tp,):
                if dataclasses.is_dataclass(arg):
                    classes.append(arg)
                for inner in typing.get_args(arg):
                    if dataclasses.is_dataclass(inner):
                        classes.append(inner)
            periodic = any(word in f.name for word in ("heartbeat", "interval", "mtbf"))
            if periodic and (tp in (Duration, MaybeInfDuration, Duration | None) or "Duration" in str(tp)):
                assert f.metadata.get("every") in ("node", "run"), f"{cls.__name__}.{f.name} is not counted"


def test_huge_sweeps_are_refused_before_expanding():
    """A range of 1e8 points, and factors whose product is a billion runs, are refused at once, naming the field."""
    base = {"protocol": {"name": "single_copy"}}
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as err:
        parse_sweep({"base": base, "factors": {"network.loss": {"start": 0, "stop": 1, "num": 10**8}}})
    assert err.value.path == 'factors."network.loss".num' and "limit is 100,000 runs" in str(err.value)
    with pytest.raises(ScenarioError) as err:
        parse_sweep({"base": base, "factors": {"workload.rate": {"start": 1, "stop": 1e8 + 1, "step": 1}}})
    assert err.value.path == 'factors."workload.rate".step'
    factors = {"workload.rate": range(1, 1001), "workload.keys": range(1, 1001), "workload.clients": range(1, 1001)}
    with pytest.raises(ScenarioError) as err:
        sim.sweep(sim.Scenario.from_dict(base), factors, executor="serial", progress=False)
    assert err.value.path == "factors" and "1e9 runs" in str(err.value)
    assert time.perf_counter() - t0 < 30  # refused, not expanded (expanding a billion points takes hours)


def test_a_sweep_refuses_a_point_too_large_and_allows_it_when_asked(monkeypatch):
    """One point beyond the limit refuses the whole sweep before any run, naming the field; allow_large runs it."""
    s = _scenario(**{"run.duration": "500ms", "workload.rate": 20})
    monkeypatch.setattr(cost, "MAX_EVENTS", estimate(s).events * 1.5)
    with pytest.raises(ScenarioError) as err:
        sim.sweep(s, {"workload.rate": [20, 80]}, executor="serial", progress=False)
    assert err.value.path == "workload.rate"
    df = sim.sweep(s, {"workload.rate": [20, 80]}, executor="serial", progress=False, allow_large=True)
    assert df["error"].isna().all()


def test_progress_changes_nothing_in_the_run():
    """A run reporting progress gives exactly the run without it; progress rises to the end of the run."""
    s = sim.Scenario.from_toml(Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
                               / "partitioned-store.toml")
    seen: list[float] = []
    a = sim.run(s)
    b = sim.run(s, progress=seen.append)
    pdt.assert_frame_equal(a.history, b.history)
    pdt.assert_frame_equal(a.timeline, b.timeline)
    assert a.summary.keys() == b.summary.keys()
    assert len(seen) >= 50 and seen == sorted(seen) and seen[-1] == b.meta["sim_end"]


def _in_terminal(args: list[str], delay: float) -> str:
    """Run ``capsim ARGS`` (its bar shown after ``delay`` s) on a 120-column pseudo-terminal; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    code = f"import sys, sim.cli as c; c.PROGRESS_DELAY = {delay}; sys.exit(c.main({args!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    assert proc.returncode == 0, out
    return out.decode(errors="replace")


def test_run_shows_a_progress_bar_in_a_terminal(tmp_path):
    """capsim run in a terminal shows a bar on simulated time once the run has taken PROGRESS_DELAY (2 s; here
    0.1 s, the run takes longer); --quiet, or output that is not a terminal, shows none."""
    path = tmp_path / "busy.toml"
    path.write_text(_scenario(**{"workload.rate": 100, "run.duration": "8s", "name": "busy"}).to_toml())
    shown = _in_terminal(["run", str(path)], delay=0.1)
    assert "busy (simulated s):" in shown and "%|" in shown
    assert "busy (simulated s)" not in _in_terminal(["run", str(path), "--quiet"], delay=0.1)
    code = f"import sys, sim.cli as c; c.PROGRESS_DELAY = 0.1; sys.exit(c.main({['run', str(path)]!r}))"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert piped.returncode == 0 and "simulated s)" not in piped.stderr + piped.stdout
