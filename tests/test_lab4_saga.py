"""Lab 4 (saga orchestrator): the reference passes, known-wrong orchestrators fail the test they break,
the order checker rejects hand-made bad histories, the lab's services and base class behave as stated."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import saga_reference
import saga_wrong

import sim
from sim.checkers.saga_order import ORDER_RULES, check_saga_order
from sim.errors import ScenarioError
from sim.labs import get_lab, grade, skeleton_path
from sim.labs.core import solution_key
from sim.labs.saga import StepCommand, StepReply, report_problems

LAB = get_lab("lab4")
STEPS = ["create_order", "reserve_stock", "charge_payment", "schedule_shipping"]


def _failed(report) -> dict[str, int]:
    return {t.test: t.seed for t in report.tests if not t.passed}


def test_reference_passes_every_test(tmp_path):
    report = grade("lab4", saga_reference.SagaOrchestrator, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50, 50, 50]
    assert not any(tmp_path.iterdir())


def test_a_second_correct_design_passes_too(tmp_path):
    """Replaying unfinished sagas from step 0 over idempotent services is correct: the grader accepts it."""
    report = grade("lab4", saga_reference.ReplayOrchestrator, seeds=10, out=tmp_path)
    assert report.passed, str(report)


@pytest.mark.parametrize(("variant", "test", "seed", "says"), [
    (saga_wrong.VolatileLog, "all-or-nothing", 1, "never finished"),
    (saga_wrong.NoResend, "all-or-nothing", 2, "never finished"),
    (saga_wrong.SkipFirstStep, "all-or-nothing", 1, "marked compensated, but create_order still applied"),
    (saga_wrong.ReportEarly, "all-or-nothing", 1, "reported compensated at"),
    (saga_wrong.ForwardCompensation, "compensation-order", 1, "still had effect"),
    (saga_wrong.CompensateRefusedStep, "compensation-order", 1, "the service had refused its action"),
    (saga_wrong.GiveUpAfterThreeTimeouts, "compensation-order", 1, "its action never ran"),
    (saga_wrong.SlowResend, "finishes-promptly", 1, "sagas ended within 500 ms"),
])
def test_known_wrong_orchestrators_fail_the_test_they_break(variant, test, seed, says, tmp_path):
    report = grade("lab4", variant, out=tmp_path, tests=[test])
    assert _failed(report) == {test: seed}, str(report)
    outcome = report.tests[0]
    assert says in outcome.message and outcome.error is None and outcome.evidence is not None
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0


@pytest.mark.parametrize(("variant", "passes"), [
    (saga_wrong.VolatileLog, ["compensation-order", "finishes-promptly"]),
    (saga_wrong.ForwardCompensation, ["all-or-nothing"]),
    (saga_wrong.CompensateRefusedStep, ["all-or-nothing"]),
    (saga_wrong.SlowResend, ["all-or-nothing", "compensation-order"]),
])
def test_the_tests_tell_the_mistakes_apart(variant, passes, tmp_path):
    """Each mistake breaks one property and keeps others: the grader separates them."""
    report = grade("lab4", variant, out=tmp_path, tests=passes, seeds=10)
    assert report.passed, str(report)


def test_a_forgotten_saga_is_shown_with_the_crash_that_lost_it(tmp_path):
    report = grade("lab4", saga_wrong.VolatileLog, out=tmp_path, tests=["all-or-nothing"], seeds=1)
    outcome = report.tests[0]
    assert [f["node"] for f in outcome.faults] == ["orch"]          # shrunk to the one crash that matters
    events = outcome.evidence["event"].tolist()
    assert events[0] == "start" and "crash" in events and "applied" in events
    assert not any(e.startswith("reported") for e in events)
    replayed = sim.run(sim.Scenario.from_dict(outcome.scenario))
    assert not LAB.tests[0].check(replayed).ok


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab4", skeleton_path("lab4"), seeds=2, out=tmp_path)
    assert not report.passed
    for t in report.tests:
        assert "NotImplementedError: TODO: start_saga" in t.error
        assert "lab4_saga.py" in t.error and "sim/runner.py" not in t.error


def test_grading_is_deterministic(tmp_path):
    a = grade("lab4", saga_wrong.NoResend, seeds=5, out=tmp_path / "a", tests=["all-or-nothing"])
    b = grade("lab4", saga_wrong.NoResend, seeds=5, out=tmp_path / "b", tests=["all-or-nothing"])
    assert [(t.test, t.passed, t.seed, t.message, t.faults) for t in a.tests] == \
        [(t.test, t.passed, t.seed, t.message, t.faults) for t in b.tests]
    assert _failed(a) == {"all-or-nothing": 2}


# -- the order checker on hand-made histories ---------------------------------------------------------------
def _effects(*rows):
    return pd.DataFrame(rows, columns=["time", "saga_id", "step", "effect"])


GOOD = [(1, "s", 0, "applied"), (2, "s", 1, "applied"), (3, "s", 2, "refused"), (4, "s", 1, "undone"),
        (5, "s", 0, "undone"), (6, "t", 0, "applied"), (7, "t", 1, "applied"), (8, "t", 2, "applied"),
        (9, "t", 3, "applied"), (10, "u", 0, "refused")]


def test_order_checker_accepts_a_saga_run_by_the_book():
    report = check_saga_order(_effects(*GOOD), STEPS)
    assert report.ok and report.counts["sagas"] == 3 and report.counts["violating_sagas"] == 0


@pytest.mark.parametrize(("rows", "rule", "detail"), [
    ([(1, "s", 1, "applied")], "forward_order", "reserve_stock took effect before create_order had"),
    ([(1, "s", 0, "applied"), (2, "s", 1, "refused"), (3, "s", 2, "applied")], "forward_order",
     "charge_payment took effect although reserve_stock was refused"),
    ([(2, "s", 0, "applied"), (2, "s", 1, "applied")], "forward_order", "before create_order had"),
    ([(1, "s", 0, "applied"), (2, "s", 1, "applied"), (3, "s", 2, "refused"), (4, "s", 1, "undone"),
      (5, "s", 2, "applied")], "after_compensation", "charge_payment took effect at 5.0 ms, after the compensation"),
    ([(1, "s", 0, "applied"), (2, "s", 1, "applied"), (3, "s", 0, "undone"), (4, "s", 1, "undone")],
     "reverse_order", "create_order was undone while the later step(s) reserve_stock still had effect"),
    ([(1, "s", 0, "applied"), (2, "s", 1, "refused"), (3, "s", 1, "undo_refused"), (4, "s", 0, "undone")],
     "undo_not_applied", "reserve_stock was compensated, but the service had refused its action"),
    ([(1, "s", 0, "applied"), (2, "s", 3, "undo_never_ran"), (3, "s", 0, "undone")],
     "undo_not_applied", "schedule_shipping was compensated, but its action never ran"),
])
def test_order_checker_rejects_each_broken_rule(rows, rule, detail):
    report = check_saga_order(_effects(*GOOD, *[(t, "bad", s, e) for t, _, s, e in rows]), STEPS)
    assert not report.ok
    assert report.violations["saga_id"].unique().tolist() == ["bad"]         # the good sagas stay good
    assert report.counts[rule] >= 1 and sum(report.counts[r] for r in ORDER_RULES) == len(report.violations)
    assert detail in report.violations.iloc[0]["detail"], report.violations
    assert report.explanation.startswith("1 of 4 sagas out of order") and "bad" in report.explanation


def test_order_checker_reads_time_not_row_order_and_says_what_is_wrong_with_its_input():
    shuffled = _effects((2, "s", 1, "applied"), (1, "s", 0, "applied"), (3, "s", 0, "noise"))
    assert check_saga_order(shuffled, STEPS).ok                       # other effects are ignored
    with pytest.raises(ValueError, match="lacks column"):
        check_saga_order(pd.DataFrame({"saga_id": ["s"]}), STEPS)
    with pytest.raises(ValueError, match="step 7 is not an index"):
        check_saga_order(_effects((1, "s", 7, "applied")), STEPS)


def test_report_problems_finds_conflicting_and_premature_reports():
    outcomes = pd.DataFrame([(10.0, "a", "completed"), (12.0, "a", "completed"), (20.0, "b", "completed"),
                             (30.0, "b", "compensated"), (5.0, "c", "compensated")],
                            columns=["time", "saga_id", "outcome"])
    effects = pd.DataFrame([(9.0, "a", 3, "schedule_shipping", "shipping", "applied"),
                            (4.0, "c", 0, "create_order", "orders", "undone"),
                            (6.0, "c", 1, "reserve_stock", "stock", "undone")],
                           columns=["time", "saga_id", "step", "step_name", "service", "effect"])
    problems = report_problems(outcomes, effects)
    assert problems["saga_id"].tolist() == ["c", "b"]
    assert "reserve_stock was undone only at 6.0 ms" in problems.iloc[0]["detail"]
    assert "reported completed at 20.0 ms, then compensated" in problems.iloc[1]["detail"]


# -- the lab's services and the orchestrator's base class, handler by handler ---------------------------------
def _harness(cls=saga_reference.SagaOrchestrator):
    scenario = LAB.tests[2].scenario(1, solution_key(LAB, cls))
    return sim.Harness(scenario)


def _run_command(h, node, msg):
    h.deliver(node, msg, src="orch")
    h.advance(100)                                                    # the service time
    return [s.msg for s in h.take() if isinstance(s.msg, StepReply)]


def test_services_are_idempotent_and_keep_tombstones():
    h = _harness()
    h.take()
    effects = h.state.effects
    assert _run_command(h, "stock", StepCommand("saga-x", 1, False, 1))[0].ok
    assert _run_command(h, "stock", StepCommand("saga-x", 1, False, 2)) == [StepReply("saga-x", 1, False, True, 2)]
    assert _run_command(h, "stock", StepCommand("saga-x", 1, True, 1))[0].ok
    assert _run_command(h, "stock", StepCommand("saga-x", 1, True, 2))[0].ok   # a repeated compensation
    assert not _run_command(h, "stock", StepCommand("saga-x", 1, False, 3))[0].ok  # a late action is refused
    assert _run_command(h, "orders", StepCommand("saga-y", 0, True, 1))[0].ok  # compensation first: tombstone
    assert not _run_command(h, "orders", StepCommand("saga-y", 0, False, 1))[0].ok
    assert [(r[1], r[5]) for r in effects.rows] == [("saga-x", "applied"), ("saga-x", "undone"),
                                                    ("saga-y", "undo_never_ran")]
    h.crash("stock")
    h.recover("stock")
    assert not _run_command(h, "stock", StepCommand("saga-x", 1, False, 4))[0].ok  # the record is durable


def test_a_crash_wipes_the_orchestrators_memory_but_not_its_disk():
    h = _harness()
    orch = h.nodes["orch"]
    orch.scratch = "kept in memory"
    orch.disk["note"] = "kept on disk"
    h.crash("orch")
    assert not hasattr(orch, "scratch") and not hasattr(orch, "sagas")
    h.recover("orch")
    assert orch.disk["note"] == "kept on disk" and orch.sagas is orch.disk["sagas"]
    assert orch.steps[0].service == "orders" and len(h.timers_of("orch")) == 1   # boot ran; arrivals resumed


def test_misaddressed_commands_and_unknown_sagas_are_clear_errors():
    h = _harness()
    orch = h.nodes["orch"]
    with pytest.raises(ValueError, match="no saga with that id was started"):
        orch.send_command("saga-99", 0)
    h.advance(1000)                                                   # some sagas start
    with pytest.raises(ValueError, match=r"step 0 \(create_order\) runs at 'orders'.*not to 'stock'"):
        orch.send("stock", StepCommand("saga-0", 0, False, 0))
    with pytest.raises(ValueError, match="step must be a step index 0..3, got 4"):
        orch.send_command("saga-0", 4)
    with pytest.raises(ValueError, match="report_completed\\('nope'\\)"):
        orch.report_completed("nope")


@pytest.mark.parametrize(("patch", "path"), [
    (lambda d: d["cluster"].update(nodes=["orch", "orders", "stock", "payment"]), "cluster.nodes"),
    (lambda d: d["workload"].update(clients=2), "workload.clients"),
])
def test_scenarios_the_lab_cannot_run_name_the_field(patch, path):
    data = LAB.tests[0].scenario(1, solution_key(LAB, saga_reference.SagaOrchestrator))
    patch(data)
    with pytest.raises(ScenarioError) as err:
        sim.Scenario.from_dict(data)
    assert err.value.path == path
