"""``capsim lab``: list the labs, copy a skeleton, grade one solution or a class's folder."""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import ScenarioError
from . import get_lab, lab_ids, labs_folder, skeleton_path
from .core import GradeReport, SolutionError, grade

__all__ = ["add_parser", "run"]

MAX_SEEDS = 10_000


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="labs: list them, copy a skeleton, grade a solution",
                         description="Labs: write a protocol's nodes, then grade them under faults.",
                         epilog="examples:\n  capsim lab list\n  capsim lab skeleton lab1 my_register.py\n"
                                "  capsim lab grade lab1 my_register.py\n"
                                "  capsim lab grade lab1 submissions/ --out grades/lab1   (one CSV row per student)",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = lab.add_subparsers(dest="lab_command", metavar="ACTION", parser_class=parser_class)
    actions.add_parser("list", help="the labs and their tests")
    show = actions.add_parser("show", help="a lab's goal, tests and the classes to write")
    show.add_argument("lab", help="lab1 ... lab6, or a lab's name")
    sk = actions.add_parser("skeleton", help="copy a lab's skeleton to start from")
    sk.add_argument("lab", help="lab1 ... lab6, or a lab's name")
    sk.add_argument("dest", nargs="?", type=Path, default=None,
                    help="where to write it (default: the skeleton's name in the current folder)")
    g = actions.add_parser("grade", help="grade a solution file, or every .py in a folder (CSV)",
                           description="Run the solution over seeded fault schedules with the lab's checkers. "
                                       "For each failing test: the seed, the shrunk fault schedule, the checker's "
                                       "counter-example, a space-time diagram (PNG and SVG) and a scenario file "
                                       "that replays the run. Exit status: 0 every test passes, 1 a test fails, "
                                       "2 usage mistake. A folder is graded student by student into grades.csv.")
    g.add_argument("lab", help="lab1 ... lab6, or a lab's name")
    g.add_argument("solution", type=Path, help="the solution .py file, or a folder of them")
    g.add_argument("--seeds", type=int, default=50, help="fault schedules per test, seeds 1..N (default 50)")
    g.add_argument("--seed", type=int, default=None, help="run only this seed (to reproduce a failure)")
    g.add_argument("--test", action="append", default=None, help="only this test (repeatable)")
    g.add_argument("--out", type=Path, default=None,
                   help="folder for diagrams, replay files and grades.csv (default: lab-reports/<lab>)")


def run(args: argparse.Namespace) -> int:
    if args.lab_command is None:
        print("capsim lab: error: name an action: list, show, skeleton or grade (see capsim lab --help)",
              file=sys.stderr)
        return 2
    if args.lab_command == "list":
        for lab_id in lab_ids():
            lab = get_lab(lab_id)
            print(f"lab{lab.number}  {lab.id:<10} {lab.title}")
            for test in lab.tests:
                print(f"      - {test.name}: {test.goal}")
        return 0
    lab = _lab(args.lab)
    if args.lab_command == "show":
        print(f"lab{lab.number} ({lab.id}): {lab.title}")
        wanted = [f"{name} (a subclass of {base.__module__}.{base.__name__})" for name, base in lab.classes.items()]
        print(f"write: {', '.join(wanted)}")
        print(f"skeleton: {skeleton_path(lab.id)}")
        print("tests:")
        for test in lab.tests:
            print(f"  - {test.name}: {test.goal}")
        print(f"the whole statement: {labs_folder() / 'README.md'} (section lab{lab.number})")
        return 0
    if args.lab_command == "skeleton":
        src = skeleton_path(lab.id)
        if not src.is_file():
            raise SolutionError(f"the skeleton {src} is missing: the labs/ folder comes with a source checkout")
        dest = args.dest if args.dest is not None else Path(src.name)
        if dest.is_dir():
            dest = dest / src.name
        if dest.exists():
            raise ScenarioError("dest", f"{str(dest)!r} already exists; choose another name (nothing was overwritten)")
        if not dest.parent.is_dir():
            raise ScenarioError("dest", f"folder {str(dest.parent)!r} does not exist")
        shutil.copyfile(src, dest)
        print(f"wrote {dest}: complete the TODOs, then: capsim lab grade lab{lab.number} {dest}")
        return 0
    return _grade(args, lab)


def _lab(name: str) -> Any:
    try:
        return get_lab(name)
    except SolutionError as exc:
        raise ScenarioError("LAB", f"{name!r} is not a lab; " + str(exc).split("; ", 1)[-1]) from None


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seed is not None:
        return [args.seed]
    if not 1 <= args.seeds <= MAX_SEEDS:
        raise ScenarioError("--seeds", f"must be between 1 and {MAX_SEEDS}, got {args.seeds}")
    return list(range(1, args.seeds + 1))


def _grade(args: argparse.Namespace, lab: Any) -> int:
    seeds = _seeds(args)
    path: Path = args.solution
    if not path.exists():
        raise ScenarioError("SOLUTION", f"{str(path)!r} does not exist")
    if args.test:
        names = {t.name for t in lab.tests}
        for name in args.test:
            if name not in names:
                raise ScenarioError("--test", f"{lab.id} has no test {name!r}; its tests: {', '.join(sorted(names))}")
    out = args.out if args.out is not None else Path("lab-reports") / lab.id
    if out.exists() and not out.is_dir():
        raise ScenarioError("--out", f"{str(out)!r} is a file, not a folder")
    if path.is_dir():
        return _grade_folder(lab, path, seeds, args.test, out)
    if path.suffix != ".py":
        raise ScenarioError("SOLUTION", f"{str(path)!r} is not a .py file")
    try:
        report = grade(lab, path, seeds=seeds, out=out, tests=args.test, show=False)
    except SolutionError as exc:
        print(f"capsim lab grade: {path} cannot be graded: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0 if report.passed else 1


def _students(folder: Path, skeleton: str) -> list[tuple[str, Path]]:
    """(student, file): each .py directly in ``folder``, and each subfolder holding the skeleton's file name."""
    out = [(p.stem, p) for p in sorted(folder.glob("*.py"))]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        file = sub / skeleton
        if file.is_file():
            out.append((sub.name, file))
    return out


def _grade_folder(lab: Any, folder: Path, seeds: list[int], tests: list[str] | None, out: Path) -> int:
    students = _students(folder, lab.skeleton)
    if not students:
        raise ScenarioError("SOLUTION", f"folder {str(folder)!r} holds no .py file and no subfolder with "
                                        f"{lab.skeleton}")
    names = [t.name for t in lab.tests if tests is None or t.name in tests]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for student, file in students:
        row: dict[str, Any] = {"student": student, "file": str(file)}
        try:
            report: GradeReport | None = grade(lab, file, seeds=seeds, out=out / student, tests=tests, show=False)
        except SolutionError as exc:
            report, row["error"] = None, str(exc).splitlines()[0]
        for name in names:
            outcome = None if report is None else next(t for t in report.tests if t.test == name)
            row[name] = "error" if outcome is None else ("pass" if outcome.passed else f"fail (seed {outcome.seed})")
        row["passed"] = 0 if report is None else sum(t.passed for t in report.tests)
        row["tests"] = len(names)
        row.setdefault("error", "")
        rows.append(row)
        print(f"{student:<24} {row['passed']}/{len(names)}" + (f"  {row['error']}" if row["error"] else ""), flush=True)
    target = out / "grades.csv"
    with target.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["student", "file", *names, "passed", "tests", "error"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {target} ({len(rows)} students)")
    return 0
