"""Grading time of each lab's reference solution, against the bare simulations it consists of.

For every lab, the grader runs the reference solution (``tests/labs/<lab>_reference.py``)
over its tests' seeded fault schedules. Side by side, the same scenarios are run with
``sim.run`` alone, no checker. The ratio is the grader's overhead: building the
scenarios, the wall-clock guard and the checkers (linearizability, atomicity, ...).
Targets: a lab graded in well under a minute on 2 cores (< 30 s at 50 schedules), and
the grader at most 2x the bare runs.

    python benchmarks/bench_labs.py [--quick] [--seeds N] [--lab lab1]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import sim
from sim.labs import get_lab, lab_ids
from sim.labs.core import solution_key

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 schedules per test (a smoke run)")
    parser.add_argument("--seeds", type=int, default=None, help="schedules per test (default 50)")
    parser.add_argument("--lab", action="append", default=None, help="only this lab (repeatable)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (10 if args.quick else 50)
    sys.path.insert(0, str(ROOT / "tests" / "labs"))
    print(f"{'lab':<10} {'tests':>5} {'runs':>5} {'graded s':>9} {'bare s':>7} {'ratio':>6}")
    for lab_id in args.lab or lab_ids():
        lab = get_lab(lab_id)
        reference = importlib.import_module(f"{lab.id}_reference")
        start = time.perf_counter()
        report = sim.labs.grade(lab, reference, seeds=seeds, show=False, out=ROOT / "out" / "bench-labs")
        graded = time.perf_counter() - start
        if not report.passed:
            print(report)
            raise SystemExit(f"the reference solution of {lab.id} failed: the timing would mean nothing")
        key = solution_key(lab, reference)
        start = time.perf_counter()
        for test in lab.tests:
            for seed in range(1, seeds + 1):
                sim.run(sim.Scenario.from_dict(test.scenario(seed, key)))
        bare = time.perf_counter() - start
        runs = seeds * len(lab.tests)
        print(f"{lab.id:<10} {len(lab.tests):>5} {runs:>5} {graded:>9.1f} {bare:>7.1f} {graded / bare:>6.2f}")
    print("targets: graded < 30 s per lab at 50 schedules; ratio <= 2")


if __name__ == "__main__":
    main()
