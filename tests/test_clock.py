"""Node clocks: rate drift moves timers and both readings; steps move only the wall clock."""

from __future__ import annotations

import math

import pytest
from conftest import recorder_world
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.errors import ScenarioError
from sim.harness import Harness
from sim.scenario import Scenario


def fire_log(node, delay: float) -> list[tuple[float, float, float]]:
    """Set a timer of ``delay`` local ms; the list gets (simulated time, monotonic, wall clock) when it fires."""
    log: list[tuple[float, float, float]] = []
    node.set_timer(delay, lambda: log.append((node.now, node.monotonic(), node.clock())))
    return log


@settings(max_examples=60, deadline=None)
@given(drift=st.floats(-0.9, 4.0), delay=st.floats(0.01, 1e4), set_at=st.floats(0.5, 500.0))
def test_a_timer_on_a_drifting_node_fires_after_delay_over_rate(drift, delay, set_at):
    """With rate 1 + drift from t = 0, a timer of d local ms set at t0 fires at t0 + d / (1 + drift),
    when both the monotonic clock and the wall clock have advanced by d."""
    world = recorder_world(1, faults={"schedule": [{"kind": "clock_skew", "node": "n1", "drift": drift}]})
    node = world.nodes["n1"]
    world.env.run(until=set_at)
    m0, c0 = node.monotonic(), node.clock()
    assert c0 == pytest.approx(set_at * (1 + drift)) and m0 == pytest.approx(c0)
    log = fire_log(node, delay)
    world.env.run(until=set_at + delay / (1 + drift) * 1.001 + 1e-6)
    [(t, m, c)] = log
    assert t == pytest.approx(set_at + delay / (1 + drift), rel=1e-12, abs=1e-9)
    assert m - m0 == pytest.approx(delay, rel=1e-9, abs=1e-9)
    assert c - c0 == pytest.approx(delay, rel=1e-9, abs=1e-9)


def test_without_clock_faults_both_readings_are_simulated_time_exactly(make_world):
    """drift 0: no float error creeps in; timers fire exactly at now + delay."""
    world = make_world(1)
    node = world.nodes["n1"]
    world.env.run(until=0.1)
    log = fire_log(node, 0.2)
    world.env.run(until=1.0)
    assert log == [(0.1 + 0.2, 0.1 + 0.2, 0.1 + 0.2)]


@pytest.mark.parametrize(("faults", "fires_at"), [
    # 40 local ms pass at rate 1; the other 60 at rate 2 take 30 real ms
    ([{"kind": "clock_skew", "node": "n1", "start": 40, "drift": 1.0}], 70.0),
    # ... or at rate 0.5, 120 real ms
    ([{"kind": "clock_skew", "node": "n1", "start": 40, "drift": -0.5}], 160.0),
    # rate 2 over [40, 50) covers 20 local ms; the last 40 at rate 1 again
    ([{"kind": "clock_skew", "node": "n1", "start": 40, "end": 50, "drift": 1.0}], 90.0),
    # an offset (a jump of the wall clock) and a step change no timer
    ([{"kind": "clock_skew", "node": "n1", "start": 40, "offset": "1s"},
      {"kind": "clock_step", "node": "n1", "start": 60, "by": "-500ms"}], 100.0),
])
def test_a_pending_timer_follows_rate_changes_and_ignores_jumps(make_world, faults, fires_at):
    """A timer of 100 local ms set at 0 fires when the node's monotonic clock reads 100."""
    world = make_world(1, faults={"schedule": faults})
    node = world.nodes["n1"]
    log = fire_log(node, 100.0)
    world.env.run(until=1000)
    [(t, m, _c)] = log
    assert t == pytest.approx(fires_at) and m == pytest.approx(100.0)


def test_a_cancelled_or_crashed_timer_stays_dead_when_the_rate_changes(make_world):
    """Retiming keeps cancel() and crashes effective: neither timer fires, a live one does, retimed."""
    world = make_world(1, faults={"schedule": [
        {"kind": "crash", "node": "n1", "start": 10, "end": 20},
        {"kind": "clock_skew", "node": "n1", "start": 30, "drift": 1.0},
    ]})
    node = world.nodes["n1"]
    fired: list[tuple[str, float]] = []
    node.set_timer(100.0, lambda: fired.append(("set before the crash", node.now)))
    world.env.run(until=25)
    node.set_timer(100.0, lambda: fired.append(("cancelled", node.now))).cancel()
    node.set_timer(100.0, lambda: fired.append(("live", node.now)))
    world.env.run(until=500)
    assert fired == [("live", pytest.approx(25 + 5 + 95 / 2))]  # 5 local ms at rate 1, 95 at rate 2


def test_a_retimed_timer_is_retimed_again_after_many_other_timers(make_world):
    """The node's list of timers to retime is pruned as timers fire; a pending (already retimed) one stays."""
    world = make_world(1, faults={"schedule": [{"kind": "clock_skew", "node": "n1", "start": 10, "end": 100,
                                                "drift": 1.0}]})
    node = world.nodes["n1"]
    log = fire_log(node, 1000.0)
    world.env.run(until=20)
    for i in range(2000):  # fire and are pruned long before the rate changes back
        node.set_timer(0.01 * i, lambda: None)
    world.env.run(until=2000)
    [(t, m, _c)] = log
    assert t == pytest.approx(100 + (1000 - 10 - 2 * 90))  # 10 at rate 1, 180 at rate 2, the rest at rate 1
    assert m == pytest.approx(1000.0) and len(node._timers) < 300


def test_a_step_moves_the_wall_clock_only_and_may_move_it_backwards(make_world):
    """clock_step jumps clock() by ``by`` for good; monotonic() never jumps."""
    world = make_world(1, faults={"schedule": [{"kind": "clock_step", "node": "n1", "start": 50, "by": "-30ms"}]})
    node = world.nodes["n1"]
    world.env.run(until=49.0)
    before = node.clock(), node.monotonic()
    world.env.run(until=51.0)
    assert node.clock() == pytest.approx(51.0 - 30.0) and node.clock() < before[0]  # went backwards
    assert node.monotonic() == 51.0 > before[1]
    world.env.run(until=1000.0)
    assert node.clock() == pytest.approx(970.0)


def test_the_end_of_a_skew_sets_the_wall_clock_right_and_the_monotonic_clock_keeps_its_gain(make_world):
    """After clock_skew ends the wall clock reads real time again; the monotonic clock does not jump back."""
    skew = {"kind": "clock_skew", "node": "n1", "start": 100, "end": 300, "offset": "-50ms", "drift": 0.5}
    world = make_world(1, faults={"schedule": [skew]})
    node = world.nodes["n1"]
    world.env.run(until=299.999)
    assert node.monotonic() == pytest.approx(100 + 1.5 * 199.999)
    world.env.run(until=400)
    assert node.clock() == 400.0
    assert node.monotonic() == pytest.approx(100 + 1.5 * 200 + 100)
    assert node.clock_rate == 1.0


def test_the_harness_lists_and_fires_a_retimed_timer_at_its_new_time():
    """A unit test can drift a node by hand: the harness shows the new due time and fires the timer then."""
    h = Harness({"cluster": {"count": 1}, "workload": {"clients": 0}, "protocol": {"name": "single_copy"}})
    node = h.nodes["n1"]
    log = fire_log(node, 100.0)
    [timer] = h.timers_of("n1")
    assert timer.at == 100.0
    h.advance(20)
    node.set_clock_skew(0.0, 1.0)  # 80 local ms left, at rate 2
    [timer] = h.timers_of("n1")
    assert timer.at == pytest.approx(60.0)
    h.advance(39)
    assert log == []
    h.fire(timer)
    assert [t for t, _m, _c in log] == [pytest.approx(60.0)] and h.timers_of("n1") == []


def scenario_with(fault: dict) -> Scenario:
    return Scenario.from_dict({"cluster": {"count": 2}, "protocol": {"name": "eventual"},
                               "faults": {"schedule": [fault]}})


@pytest.mark.parametrize(("fault", "field", "says"), [
    ({"kind": "clock_step", "node": "n1", "start": 5, "end": 10, "by": 3}, "faults.schedule[0].end", "no end"),
    ({"kind": "clock_step", "node": "n1", "start": 5}, "faults.schedule[0].by", "missing"),
    ({"kind": "clock_step", "node": "n9", "by": 3}, "faults.schedule[0].node", "unknown node"),
    ({"kind": "clock_step", "node": "n1", "by": "soon"}, "faults.schedule[0].by", ""),
    ({"kind": "clock_skew", "node": "n1", "drift": -1}, "faults.schedule[0].drift", "> -1"),
    ({"kind": "clock_skew", "node": "n1", "drift": math.nan}, "faults.schedule[0].drift", "finite"),
    ({"kind": "clock_step", "node": "n1", "by": math.inf}, "faults.schedule[0].by", "finite"),
    ({"kind": "clock_skew", "node": "n1", "drift": math.inf}, "faults.schedule[0].drift", "finite"),
])
def test_bad_clock_faults_are_rejected_naming_the_field(fault, field, says):
    """Every mistake in a clock fault names its field and what is accepted."""
    with pytest.raises(ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]")) as err:
        scenario_with(fault)
    assert says in str(err.value)


def test_clock_faults_read_from_toml():
    """Both clock faults are plain TOML."""
    s = Scenario.from_toml_string("""
        [cluster]
        count = 2
        [protocol]
        name = "eventual"
        [[faults.schedule]]
        kind = "clock_skew"
        node = "n1"
        drift = 0.05
        [[faults.schedule]]
        kind = "clock_step"
        node = "n2"
        start = "2s"
        by = "-250ms"
    """)
    skew, step = s.faults.schedule
    assert (skew.tag, skew.drift, step.tag, step.start, step.by) == ("clock_skew", 0.05, "clock_step", 2000.0, -250.0)
    assert math.isinf(step.end)


def test_set_clock_skew_from_python_rejects_a_stopped_clock(make_world):
    """The node method checks its argument too (a drift of -1 would stop every timer)."""
    node = make_world(1).nodes["n1"]
    with pytest.raises(ValueError, match="drift"):
        node.set_clock_skew(0.0, -1.0)
