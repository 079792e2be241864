"""Lab 5 (two-phase commit with cooperative termination): grader, base classes and checks.

The reference solution passes every test over the default 50 schedules; each known-wrong
solution fails the test its mistake breaks and passes the others; the checks reject
hand-made bad runs; the base classes' log, vote and decide behave as the statement says.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import commit_reference as ref
import pandas as pd
import pytest
from commit_wrong import VARIANTS

import sim
from sim.checkers.atomicity import VIOLATION_KINDS, check_atomicity
from sim.labs import commit as lab5
from sim.labs import grade, skeleton_path
from sim.labs.core import solution_key

REFERENCE = {"Coordinator": ref.Coordinator, "Participant": ref.Participant}
LABS_DIR = Path(__file__).resolve().parent / "labs"
README = Path(__file__).resolve().parent.parent / "labs" / "README.md"

#: variant -> the test its mistake breaks, and the first seed that shows it
BREAKS = {
    "no-termination": ("blocking-bounded", 1),
    "abort-on-timeout": ("atomic", 1),
    "early-vote": ("atomic", 3),
    "unlogged-decision": ("atomic", 1),
    "every-participant": ("commits-without-faults", 1),
}


def test_reference_passes_every_test(tmp_path):
    report = grade("lab5", REFERENCE, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50, 50, 50]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("variant", list(BREAKS))
def test_known_wrong_solutions_fail_the_test_they_break(variant, tmp_path):
    test, seed = BREAKS[variant]
    report = grade("lab5", VARIANTS[variant], out=tmp_path, tests=[test], shrink_seconds=5)
    outcome = report.tests[0]
    assert not outcome.passed and outcome.error is None and outcome.evidence is not None, str(report)
    assert outcome.seed == seed
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0
    expected = {"no-termination": ("voted yes", "although"), "abort-on-timeout": ("split",),
                "early-vote": ("committed",), "unlogged-decision": ("split",),
                "every-participant": ("did not commit",)}[variant]
    assert all(word in outcome.message for word in expected), outcome.message


def test_known_wrong_solutions_pass_the_tests_they_do_not_break(tmp_path):
    """Each mistake is caught by its own test only: the tests tell the properties apart."""
    for variant, (broken, _) in BREAKS.items():
        others = [t.name for t in lab5.LAB.tests if t.name != broken]
        report = grade("lab5", VARIANTS[variant], seeds=10, out=tmp_path / variant, tests=others)
        assert report.passed, str(report)


def test_grading_is_deterministic(tmp_path):
    a = grade("lab5", VARIANTS["no-termination"], seeds=5, out=tmp_path / "a")
    b = grade("lab5", VARIANTS["no-termination"], seeds=5, out=tmp_path / "b")
    assert [(t.passed, t.seed, t.message, t.faults) for t in a.tests] == \
        [(t.passed, t.seed, t.message, t.faults) for t in b.tests]


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab5", skeleton_path("lab5"), seeds=2, out=tmp_path, shrink_seconds=1)
    assert [t.passed for t in report.tests] == [False, False, False]
    for t in report.tests:
        assert "NotImplementedError: TODO: start_transaction" in t.error
        assert "lab5_commit.py" in t.error and "sim/labs/commit.py" not in t.error


def test_replay_file_of_a_solution_file_runs_with_capsim_run(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from commit_wrong import NoTerminationParticipant as Participant\n"
                   "from commit_reference import Coordinator\n")
    report = grade("lab5", bad, out=tmp_path / "out", tests=["blocking-bounded"], shrink_seconds=5)
    replay = Path(report.tests[0].files["replay"])
    env = {**os.environ, "PYTHONPATH": f"{LABS_DIR}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(replay), "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "atomicity" in proc.stdout and "blocked" in proc.stdout


# -- the checks reject hand-made bad runs ---------------------------------------------------------
def _run_like(parts: list[tuple], outages: list[tuple[float, float]], end: float = 3000.0) -> SimpleNamespace:
    """A result with a hand-made participants table: rows (gtid, node, vote, vote_time, outcome, outcome_time)."""
    frame = pd.DataFrame(parts, columns=["gtid", "node", "vote", "vote_time", "outcome", "outcome_time"])
    frame["unresolved"] = (frame["vote"] == "yes") & frame["outcome_time"].isna()
    events = [(t, "n1", e) for down, up in outages for t, e in ((down, "crash"), (up, "recover"))]
    gtids = list(dict.fromkeys(frame["gtid"]))
    scenario = sim.Scenario.from_dict(lab5._calm_scenario(1, "unused.py"))
    return SimpleNamespace(scenario=scenario, meta={"sim_end": end},
                           node_events=pd.DataFrame(events, columns=["time", "node", "event"]),
                           tables={"participants": frame,
                                   "transactions": pd.DataFrame({"gtid": gtids, "op_id": range(len(gtids))})})


NAN = math.nan


def test_blocking_check_fails_a_participant_that_waits_although_a_peer_voted_no():
    run = _run_like([("t1", "n2", "yes", 100.0, "aborted", 700.0), ("t1", "n3", "no", 101.0, "aborted", 101.0)],
                    [(105.0, 1000.0)])
    check = lab5.check_blocking(run)
    assert not check.ok and "n2 voted yes on t1" in check.message and "n3 voted no" in check.message
    assert "600 ms later" in check.message and check.window is not None


def test_blocking_check_counts_from_the_coordinators_recovery_when_nobody_knew():
    stuck = [("t1", "n2", "yes", 100.0, "committed", 1050.0), ("t1", "n3", "yes", 101.0, "committed", 1052.0)]
    assert lab5.check_blocking(_run_like(stuck, [(105.0, 1000.0)])).ok
    slow = [("t1", "n2", "yes", 100.0, "committed", 1300.0), ("t1", "n3", "yes", 101.0, "committed", 1052.0)]
    check = lab5.check_blocking(_run_like(slow, [(105.0, 1000.0)]))
    assert not check.ok and "came back at 1000 ms" in check.message and "300 ms later" in check.message


def test_blocking_check_fails_a_participant_that_could_learn_from_a_peer_that_knew():
    run = _run_like([("t1", "n2", "yes", 100.0, "committed", 1050.0), ("t1", "n3", "yes", 101.0, "committed", 110.0)],
                    [(105.0, 1000.0)])
    check = lab5.check_blocking(run)
    assert not check.ok and "n3 committed at 110.0 ms" in check.message


def test_blocking_check_fails_a_participant_that_never_decides():
    run = _run_like([("t1", "n2", "yes", 100.0, None, NAN), ("t1", "n3", None, NAN, None, NAN)], [])
    check = lab5.check_blocking(run)
    assert not check.ok and "never decided" in check.message and "n3 never voted" in check.message


def test_commit_check_fails_an_aborted_transaction_without_faults():
    parts = pd.DataFrame({"gtid": ["t1", "t1", "t2", "t2"], "node": ["n2", "n3", "n2", "n4"],
                          "vote": ["yes", "yes", "yes", "yes"], "vote_time": [1.0, 1.0, 2.0, 2.0],
                          "outcome": ["committed", "committed", "aborted", "aborted"],
                          "outcome_time": [9.0, 9.0, 60.0, 60.0]})
    txns = pd.DataFrame({"gtid": ["t1", "t2"], "op_id": [1, 2], "begin": [0.0, 1.0], "decision": ["commit", "abort"],
                         "client_outcome": ["ok", "fail"]})
    check = lab5.check_commits(SimpleNamespace(tables={"participants": parts, "transactions": txns}))
    assert not check.ok and check.message.startswith("1 of 2 transactions did not commit") and check.ops == (2,)
    parts.loc[2:, "outcome"] = "committed"
    txns.loc[1, "client_outcome"] = "ok"
    assert lab5.check_commits(SimpleNamespace(tables={"participants": parts, "transactions": txns})).ok


def test_atomic_check_shows_a_split_before_a_late_commit():
    events = pd.DataFrame([("t1", "n2", 5.0, "prepared"), ("t2", "n2", 6.0, "prepared"), ("t2", "n3", 6.0, "prepared"),
                           ("t2", "n2", 9.0, "committed"), ("t2", "n3", 9.5, "aborted")],
                          columns=["gtid", "node", "time", "state"]).assign(detail="")
    verdict = check_atomicity(events, {"t1": ("n2", "n3"), "t2": ("n2", "n3")}, {"t1": "ok"})
    txns = pd.DataFrame({"gtid": ["t1", "t2"], "op_id": [1, 2], "begin": [0.0, 1.0], "decision": ["commit", None],
                         "client_outcome": ["ok", "info"]})
    check = lab5.check_atomic(SimpleNamespace(verdicts={"atomicity": verdict},
                                              tables={"transactions": txns, "events": events}))
    assert not check.ok and check.message.startswith("split: t2: committed at n2 but aborted at n3")
    assert "1 more transactions violate" in check.message and check.ops == (2,)
    assert set(lab5.SEVERITY) == set(VIOLATION_KINDS)


# -- the base classes ---------------------------------------------------------------------------
@pytest.fixture
def harness():
    return sim.Harness(sim.Scenario.from_dict(lab5._calm_scenario(1, solution_key(lab5.LAB, REFERENCE))))


def test_log_writes_are_durable_in_order_and_lost_in_a_crash(harness):
    n2 = harness.nodes["n2"]
    done = []
    n2.write_log("t1", "a", done.append, "a")
    n2.write_log("t1", "b", done.append, "b")
    harness.advance(10.0)  # a write takes 1-5 ms
    assert done == ["a", "b"] and n2.log == (("t1", "a"), ("t1", "b"))
    n2.write_log("t2", "c", done.append, "c")
    harness.crash("n2")
    harness.recover("n2")
    harness.advance(10.0)
    assert done == ["a", "b"] and n2.log == (("t1", "a"), ("t1", "b"))


def test_vote_and_decide_refuse_what_the_statement_forbids(harness):
    n2 = harness.nodes["n2"]
    assert n2.can_commit("t9") is True  # no local check fails in this scenario, and the answer is stable
    n2._checks["t8"] = False
    with pytest.raises(ValueError, match="votes yes on t8 although can_commit"):
        n2.vote("t8", True)
    n2.vote("t8", False)
    assert [(s.dst, s.msg) for s in harness.take()] == [("n1", lab5.Vote("t8", False))]
    with pytest.raises(ValueError, match="outcome must be 'commit' or 'abort', got 'done'"):
        n2.decide("t8", "done")


def test_coordinator_decide_answers_the_client_once(harness):
    from sim.kernel.messages import ClientReply, ClientRequest

    sent = harness.deliver("n1", ClientRequest(7, "write", 3, 70), src="c0")
    gtid = sent[0].msg.gtid
    assert gtid == "t1-1" and {s.dst for s in sent} <= set(lab5.PARTICIPANTS)
    assert harness.deliver("n1", ClientRequest(7, "write", 3, 70), src="c0") == []  # a duplicate request
    harness.nodes["n1"].decide(gtid, "abort", "test")
    harness.nodes["n1"].decide(gtid, "abort", "test")
    replies = [s.msg for s in harness.take() if s.dst == "c0"]
    assert replies == [ClientReply(7, False, None, "aborted")]


def _span(lo_hi: tuple[float, float]) -> str:
    return f"{lo_hi[0]:g} to {lo_hi[1]:g} ms"


def test_the_stated_numbers_are_the_codes():
    """The README's Lab 5 section states the bound, the timeouts and the nemesis as the code has them."""
    scenario = sim.Scenario.from_dict(lab5._blocking_scenario(1, "unused.py"))
    assert scenario.protocol.threshold == lab5.BOUND == 200.0
    section = " ".join(README.read_text().split("## Lab 5")[1].split())  # line breaks as spaces
    stated = [
        f"**{lab5.BOUND:g} ms**",
        f"`vote_timeout` = {lab5.VOTE_TIMEOUT:g} ms",
        f"`decision_timeout` = {lab5.DECISION_TIMEOUT:g} ms",
        f"`retry_interval` = {lab5.RETRY_INTERVAL:g} ms",
        f"takes {lab5.FORCE_TIME['low']:g} to {lab5.FORCE_TIME['high']:g} ms",
        f"exponential latency (mean {lab5.LATENCY['mean']:g} ms)",
        f"(down {_span(lab5.RESTART)})",
        f"longer outage ({_span(lab5.LONG_OUTAGE)})",
        f"each {_span(lab5.RESTART_LEAD)} after",
        f"{lab5.ATOMIC_REFUSALS:.0%} of the local checks fail",
        f"stays down {lab5.OUTAGE:g} ms",
        f"{_span(lab5.OUTAGE_LEAD)} later",
        f"{lab5.BLOCKING_REFUSALS:.0%} of the local checks fail",
        f"up to {lab5.SETTLE / 1000:g} s after",
    ]
    assert [text for text in stated if text not in section] == []
