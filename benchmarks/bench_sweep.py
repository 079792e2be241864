"""Sweep executors: 2 local workers vs serial, and Dask LocalCluster vs the process pool.

The sweep is a set of independent runs of about a second each (a single-copy
store under a partition). All three executors run the same runs; each is timed
end to end, start-up included, best of ``--repeats``.
Targets: processes(2) >= 1.8x serial; dask(2) within 15% of processes(2).

    python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import sim
from sim.sweeps import sweep


def base(duration_ms: float) -> sim.Scenario:
    return sim.Scenario.from_dict({
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "exponential", "mean": 1}},
        "faults": {"schedule": [{"kind": "partition", "start": duration_ms / 3, "end": 2 * duration_ms / 3,
                                 "groups": [["n1", "n2"]]}]},
        "workload": {"clients": 10, "rate": 300, "timeout": "200ms"},
        "protocol": {"name": "single_copy"},
        "run": {"duration": duration_ms},
    })


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    duration = 1500.0 if args.quick else 4000.0
    runs = 4 if args.quick else 24
    repeats = args.repeats or (1 if args.quick else 2)
    scenario = base(duration)
    one = sim.run(scenario).runtime
    factors = {"network.loss": [0.0, 0.05]}
    reps = runs // 2
    serial = min(timed(lambda: sweep(scenario, factors, reps, executor="serial", progress=False))
                 for _ in range(repeats))
    procs = min(timed(lambda: sweep(scenario, factors, reps, executor="processes", workers=2, progress=False))
                for _ in range(repeats))
    dask = min(timed(lambda: sweep(scenario, factors, reps, executor="dask", workers=2, progress=False))
               for _ in range(repeats))
    print(f"runs per sweep            {runs} (one run ~{one:.2f} s)")
    print(f"serial                    {serial:6.2f} s")
    print(f"processes, 2 workers      {procs:6.2f} s   speed-up {serial / procs:.2f}x (target >= 1.8x)")
    overhead = 100 * (dask / procs - 1)
    print(f"dask LocalCluster, 2      {dask:6.2f} s   overhead vs processes {overhead:+.0f}% (target <= 15%)")


if __name__ == "__main__":
    main()
