"""The lab grader itself, and lab 1 (linearizable register).

Every lab is graded here with its reference solution (must pass every test over
the default 50 schedules) and with known-wrong solutions (each must fail the test
that its mistake breaks): a grader that never fails proves nothing.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import register_reference
import register_wrong

import sim
from sim.labs import get_lab, grade, skeleton_path
from sim.labs.core import Check, SolutionError

LABS_DIR = Path(__file__).resolve().parent / "labs"


def _failed(report) -> dict[str, int]:
    return {t.test: t.seed for t in report.tests if not t.passed}


def test_lab1_reference_passes_every_test(tmp_path):
    report = grade("lab1", register_reference.RegisterNode, out=tmp_path)
    assert report.passed, str(report)
    assert [t.runs for t in report.tests] == [50, 50]
    assert not any(tmp_path.iterdir())                      # nothing written for a pass


@pytest.mark.parametrize(("variant", "test"), [
    (register_wrong.NoMajority, "linearizable"),
    (register_wrong.NoWriteBack, "linearizable"),
    (register_wrong.WaitForAll, "majority-available"),
])
def test_lab1_known_wrong_solutions_fail_the_test_they_break(variant, test, tmp_path):
    report = grade("lab1", variant, out=tmp_path)
    assert test in _failed(report), str(report)
    outcome = next(t for t in report.tests if t.test == test)
    assert outcome.error is None and outcome.evidence is not None
    for kind in ("replay", "diagram (png)", "diagram (svg)"):
        assert Path(outcome.files[kind]).stat().st_size > 0
    assert "FAIL" in str(report) and f"seed {outcome.seed}" in str(report)


def test_wait_for_all_stays_linearizable(tmp_path):
    """The availability test is what catches it: the grader tells the two properties apart."""
    report = grade("lab1", register_wrong.WaitForAll, out=tmp_path)
    assert _failed(report) == {"majority-available": 1}


def test_shrunk_schedule_is_a_subset_that_still_fails_and_the_replay_file_reproduces_it(tmp_path):
    report = grade("lab1", register_wrong.NoWriteBack, out=tmp_path, tests=["linearizable"])
    outcome = report.tests[0]
    lab = get_lab("lab1")
    full = lab.tests[0].scenario(outcome.seed, "x")["faults"]["schedule"]
    assert outcome.faults_before == len(full)
    assert all(f in full for f in outcome.faults) and len(outcome.faults) < len(full)
    # the replay scenario names an in-process class: run it here, through the ordinary simulator
    replayed = sim.run(sim.Scenario.from_dict(outcome.scenario))
    assert not lab.tests[0].check(replayed).ok


def test_replay_file_of_a_solution_file_runs_with_capsim_run(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from register_wrong import NoMajority as RegisterNode\n")
    report = grade("lab1", bad, out=tmp_path / "out", tests=["linearizable"])
    replay = Path(report.tests[0].files["replay"])
    assert f'solution = "{bad.resolve()}"' in replay.read_text()
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(replay), "--json", "--quiet"],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert '"ok"' in proc.stdout


def _env():
    import os

    return {**os.environ, "PYTHONPATH": f"{LABS_DIR}:{os.environ.get('PYTHONPATH', '')}"}


def test_grading_is_deterministic(tmp_path):
    a = grade("lab1", register_wrong.NoWriteBack, seeds=20, out=tmp_path / "a")
    b = grade("lab1", register_wrong.NoWriteBack, seeds=20, out=tmp_path / "b")
    assert [(t.test, t.passed, t.seed, t.message, t.faults) for t in a.tests] == \
        [(t.test, t.passed, t.seed, t.message, t.faults) for t in b.tests]


def test_untouched_skeleton_fails_with_the_students_traceback(tmp_path):
    report = grade("lab1", skeleton_path("lab1"), seeds=3, out=tmp_path)
    assert not report.passed
    for t in report.tests:
        assert "NotImplementedError: TODO" in t.error
        assert "lab1_register.py" in t.error and "sim/runner.py" not in t.error


class _Looping(register_reference.RegisterNode):
    def handle_Query(self, msg, src):
        while True:
            pass


class _SimulatedLoop(register_reference.RegisterNode):
    """Never returns control to simulated time: a zero-delay timer that rearms itself."""

    def boot(self):
        super().boot()
        self.set_timer(0, self._spin)

    def _spin(self):
        self.set_timer(0, self._spin)


class _LosesOneAlarm(register_reference.RegisterNode):
    """Loops, and the first timeout is lost (as one raised inside a finalizer is): the guard must fire again."""

    def handle_Query(self, msg, src):
        try:
            while True:
                pass
        except BaseException:  # stands for an exception Python itself drops
            pass
        while True:
            pass


@pytest.mark.parametrize("cls", [_Looping, _SimulatedLoop, _LosesOneAlarm])
def test_a_handler_that_never_returns_is_a_failed_test_not_a_hung_grader(cls, tmp_path):
    report = grade("lab1", cls, seeds=2, out=tmp_path, run_seconds=1.0, shrink_seconds=0.5, tests=["linearizable"])
    assert not report.passed
    assert "did not finish within 1 s" in report.tests[0].error


class _Raises(register_reference.RegisterNode):
    def handle_StoreAck(self, msg, src):
        raise KeyError("oops")


def test_an_exception_in_a_handler_names_the_handler(tmp_path):
    report = grade("lab1", _Raises, seeds=2, out=tmp_path, shrink_seconds=1)
    t = report.tests[0]
    assert not t.passed and "KeyError: 'oops'" in t.error and "handle_StoreAck" in t.error
    assert "KeyError" in t.message
    assert Path(t.files["diagram (png)"]).stat().st_size > 0      # the messages up to the exception, drawn


def test_solutions_that_cannot_be_graded_say_why(tmp_path):
    with pytest.raises(SolutionError, match="defines no class RegisterNode"):
        grade("lab1", sim)                                  # a module without the class
    with pytest.raises(SolutionError, match="must be a class deriving from"):
        grade("lab1", {"RegisterNode": int})
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(SolutionError, match="importing broken.py failed"):
        grade("lab1", broken)
    with pytest.raises(SolutionError, match="does not exist"):
        grade("lab1", tmp_path / "missing.py")
    with pytest.raises(SolutionError, match="unknown lab 'lab99'"):
        grade("lab99", register_reference.RegisterNode)
    with pytest.raises(ValueError, match="no test 'nope'"):
        grade("lab1", register_reference.RegisterNode, tests=["nope"])


def test_checks_report_failure_honestly():
    """A check result is the checker's verdict, never a constant: a fabricated history fails."""
    import pandas as pd

    from sim.labs.register import check_linearizable_history

    class Fake:
        history = pd.DataFrame({
            "op_id": [1, 2, 3], "client": ["c0", "c1", "c1"], "node": ["n1", "n2", "n2"],
            "op": ["write", "read", "read"], "key": [0, 0, 0], "value": [1, 1, None],
            "invoke": [0.0, 10.0, 20.0], "complete": [5.0, 15.0, 25.0], "outcome": ["ok", "ok", "ok"],
        })
    verdict = check_linearizable_history(Fake())
    assert isinstance(verdict, Check) and not verdict.ok and verdict.window is not None


def _capsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, cwd=cwd, env=_env())


def test_cli_grades_a_file_and_exits_1_on_failure(tmp_path):
    ok = _capsim("lab", "grade", "lab1", str(LABS_DIR / "register_reference.py"), "--seeds", "5",
                 "--out", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert "PASS  linearizable" in ok.stdout and "score 2/2" in ok.stdout
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from register_wrong import WaitForAll as RegisterNode\n")
    bad = _capsim("lab", "grade", "lab1", str(wrong), "--seeds", "3", "--out", str(tmp_path / "w"))
    assert bad.returncode == 1 and "FAIL  majority-available" in bad.stdout
    assert "diagram (png)" in bad.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["lab", "grade", "lab7", "x.py"], "'lab7' is not a lab"),
    (["lab", "grade", "lab1", "missing.py"], "SOLUTION: 'missing.py' does not exist"),
    (["lab", "grade", "lab1", "x.txt"], "is not a .py file"),
    (["lab", "grade", "lab1", "x.py", "--seeds", "0"], "--seeds: must be between 1 and 10000"),
    (["lab", "grade", "lab1", "x.py", "--seeds", "many"], "invalid int value"),
    (["lab", "grade", "lab1", "x.py", "--test", "fast"], "has no test 'fast'"),
    (["lab", "grade", "lab1", "x.py", "--seed", "-3"], "--seed: must be an integer"),
    (["lab", "frobnicate"], "invalid choice"),
    (["lab"], "name an action"),
])
def test_cli_mistakes_are_one_line_and_exit_2(args, message, tmp_path):
    (tmp_path / "x.py").write_text("")
    (tmp_path / "x.txt").write_text("")
    proc = _capsim(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_solution_that_does_not_import_is_reported_not_crashed(tmp_path):
    (tmp_path / "s.py").write_text("import not_a_module_anywhere\n")
    proc = _capsim("lab", "grade", "lab1", "s.py", "--seeds", "2", cwd=tmp_path)
    assert proc.returncode == 1
    assert "cannot be graded" in proc.stderr and "ModuleNotFoundError" in proc.stderr
    assert "sim/labs/core.py" not in proc.stderr


def test_cli_grades_a_class_folder_into_one_csv_row_per_student(tmp_path):
    sub = tmp_path / "subs"
    sub.mkdir()
    (sub / "alice.py").write_text("from register_reference import RegisterNode\n")
    (sub / "bob.py").write_text("from register_wrong import NoMajority as RegisterNode\n")
    (sub / "carol").mkdir()
    shutil.copy(skeleton_path("lab1"), sub / "carol" / "lab1_register.py")
    (sub / "dave.py").write_text("x = 1\n")
    proc = _capsim("lab", "grade", "lab1", str(sub), "--seeds", "4", "--out", str(tmp_path / "grades"))
    assert proc.returncode == 0, proc.stderr
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "grades" / "grades.csv").open())}
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    assert rows["alice"]["passed"] == "2" and rows["alice"]["linearizable"] == "pass"
    assert rows["bob"]["linearizable"].startswith("fail (seed") and rows["bob"]["majority-available"] == "pass"
    assert rows["carol"]["passed"] == "0"
    assert rows["dave"]["linearizable"] == "error" and "defines no class RegisterNode" in rows["dave"]["error"]


def test_cli_skeleton_copies_and_never_overwrites(tmp_path):
    proc = _capsim("lab", "skeleton", "lab1", cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "lab1_register.py").read_text() == skeleton_path("lab1").read_text()
    again = _capsim("lab", "skeleton", "lab1", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cli_list_and_show_name_every_test():
    listed = _capsim("lab", "list")
    assert listed.returncode == 0
    for test in get_lab("lab1").tests:
        assert test.name in listed.stdout
    shown = _capsim("lab", "show", "register")
    assert "RegisterNode (a subclass of sim.labs.register.RegisterBase)" in shown.stdout


class _StoreInInit(register_reference.RegisterNode):
    """Keeps the register in an attribute set in __init__: it would survive a crash on a plain Node."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory = {}

    def boot(self):
        super().boot()
        self.store = self.memory


def test_a_crash_loses_what_the_solution_kept_outside_its_disk(tmp_path):
    report = grade("lab1", _StoreInInit, out=tmp_path, tests=["linearizable"])
    assert not report.passed
    assert "has no attribute 'memory'" in report.tests[0].error


def test_capsim_run_of_a_failing_solution_shows_the_solutions_traceback_only(tmp_path):
    report = grade("lab1", skeleton_path("lab1"), seeds=1, out=tmp_path, tests=["linearizable"])
    proc = _capsim("run", report.tests[0].files["replay"], "--quiet")
    assert proc.returncode == 1
    assert "protocol 'lab_register' raised during the run" in proc.stderr
    assert "lab1_register.py" in proc.stderr and "NotImplementedError: TODO" in proc.stderr
    assert "sim/kernel" not in proc.stderr and "sim/runner.py" not in proc.stderr


def test_a_checker_that_cannot_judge_a_run_fails_the_test_instead_of_crashing_the_grader(tmp_path):
    """E.g. a solution records something the lab's checker cannot read: the test fails, saying so."""
    from dataclasses import replace

    from sim.labs import core

    lab = get_lab("lab1")

    def unreadable(result):
        return {}["no such column"]

    broken = replace(lab, tests=(replace(lab.tests[1], check=unreadable),))
    report = core.grade(broken, register_reference.RegisterNode, seeds=2, out=tmp_path, shrink_seconds=1)
    t = report.tests[0]
    assert not t.passed and t.error is None
    assert "the checker could not judge this run (KeyError: 'no such column')" in t.message
