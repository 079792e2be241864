"""PBS t-visibility curve: time of the vectorised WARS Monte-Carlo.

Setting: N = 3 replicas, R = W = 1, every delay (W, A, R, S) exponential with
mean 1 ms, 20 values of t from 0 to 10 ms, 100k trials. Reports the best of
several runs for sampling plus reduction (``wars_trials``), for evaluating
the curve on the sampled trials, and for the whole ``wars_t_visibility``
call; then prints the curve. Target: the whole call well under one second.

Then the same question answered by the event simulation (the ``quorum``
protocol in dynamo mode, N = 3, R = W = 1, one closed-loop client on one key,
the same delays): every read paired with the newest write committed before it
is one (t, consistent) sample, as every Monte-Carlo trial is. The ratio of the
two sampling rates must be at least 50x.

    python benchmarks/bench_pbs.py [--quick] [--trials N] [--repeats K]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import sim
from sim.analysis import wars_t_visibility, wars_trials
from sim.checkers.staleness import read_staleness
from sim.dists import Exponential

N, R, W = 3, 1, 1
DELAY = Exponential(1.0)
T_VALUES = np.linspace(0.0, 10.0, 20)
SEED = 2012


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Shortest wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k trials, 2 repeats (a smoke run)")
    parser.add_argument("--trials", type=int, default=None, help="trials per run (default 100000)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per timing, best kept (default 7)")
    args = parser.parse_args(argv)
    trials = args.trials or (10_000 if args.quick else 100_000)
    repeats = args.repeats or (2 if args.quick else 7)
    delays = (DELAY, DELAY, DELAY, DELAY)

    def sample():
        return wars_trials(N, R, W, *delays, trials, np.random.default_rng(SEED))

    sampled = sample()
    t_sample = best_of(repeats, sample)
    t_curve = best_of(repeats, lambda: sampled.t_visibility(T_VALUES))
    t_total = best_of(
        repeats, lambda: wars_t_visibility(N, R, W, T_VALUES, *delays, trials, np.random.default_rng(SEED))
    )

    print(f"WARS t-visibility: N={N} R={R} W={W}, exponential delays (mean 1 ms), "
          f"{trials} trials x {len(T_VALUES)} t values, best of {repeats}")
    print(f"  sample + reduce (wars_trials)      {t_sample * 1e3:8.2f} ms")
    print(f"  curve on the trials (t_visibility) {t_curve * 1e3:8.2f} ms")
    print(f"  whole wars_t_visibility call       {t_total * 1e3:8.2f} ms"
          f"   ({trials * len(T_VALUES) / t_total / 1e6:.1f} M trial-t points/s)")
    curve = sampled.t_visibility(T_VALUES)
    print("\n   t (ms)  P(consistent)  95% CI")
    for row in curve.itertuples():
        print(f"  {row.t:7.3f}  {row.p_consistent:13.5f}  [{row.ci_low:.5f}, {row.ci_high:.5f}]")
    print(f"\n  t for 99.9% consistent reads: {sampled.visibility_time(0.999):.3f} ms")

    duration = "5s" if args.quick else "20s"
    scenario = sim.Scenario.from_dict({
        "cluster": {"count": N},
        "network": {"latency": {"dist": "exponential", "mean": 1.0}, "client_latency": 0},
        "workload": {"clients": 1, "mode": "closed", "think_time": {"dist": "exponential", "mean": 2},
                     "keys": 1, "timeout": "200ms"},
        "protocol": {"name": "quorum", "replicas": N, "r": R, "w": W, "mode": "dynamo"},
        "run": {"duration": duration, "seed": SEED},
    })
    start = time.perf_counter()
    result = sim.run(scenario)
    samples = int(read_staleness(result.history)["since_commit"].notna().sum())
    t_event = time.perf_counter() - start
    mc_rate = trials / t_total
    event_rate = samples / t_event
    print(f"\nevent simulation of the same question: {samples} read samples in {t_event:.2f} s "
          f"({event_rate:,.0f} samples/s)")
    print(f"Monte-Carlo: {mc_rate:,.0f} trials/s  ->  {mc_rate / event_rate:,.0f}x faster (target >= 50x)")


if __name__ == "__main__":
    main()
