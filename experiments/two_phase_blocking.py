"""Blocking of two-phase commit as the coordinator's crash rate grows (and how 3PC avoids it).

Reproduces: the fraction of transactions that block (a participant voted yes and
cannot learn the outcome) against the coordinator's crash rate lambda, compared with
the approximation

    P(block) ~= 1 - exp(-lambda * tau),   tau = mean uncertainty window,

for plain 2PC, for 2PC with the cooperative termination protocol (only transactions
where every participant voted yes can block, so tau is the mean window of those,
counting the others as 0), and for 3PC, which never blocks on a coordinator crash.

Where the expected value comes from: coordinator up times are exponential (the
fault generator's crash_mtbf = 1/lambda), so crashes are memoryless and a window of
length W contains one with probability 1 - exp(-lambda W); a crash there leaves the
yes voters uncertain with nobody who knows the outcome (Bernstein, Hadzilacos &
Goodman, "Concurrency Control and Recovery in Database Systems", 1987, ch. 7; Skeen,
"Nonblocking commit protocols", SIGMOD 1981). Averaging over W and replacing E[.] by
its value at tau = E[W] is the approximation (it overestimates by at most
lambda^2 Var(W) / 2, negligible here); tau is measured on fault-free runs of the same
scenario. The measured fraction of a point pools its runs (blocked transactions over
transactions, 95% CI over runs by the delta method): the mean of the runs' own
fractions would overestimate it, since runs with more crashes have fewer transactions.
See sim/transactions/blocking.py for the scenario and the estimate.

    python experiments/two_phase_blocking.py --quick --out out/blocking

writes blocking_runs.csv (one row per run), blocking.csv (mean, 95% CI and prediction
per point) and blocking.png.
"""

from __future__ import annotations

import math
import sys
import time

import pandas as pd

import sim
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.transactions.blocking import CRASH_MTBF, blocking_rows, blocking_scenarios, blocking_table


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, out="out/two_phase_blocking",
                               quick="3 crash rates x 6 runs of 6 s (under a minute) instead of 6 x 30 runs of 10 s")
    args = parse_experiment_args(parser, argv)

    if args.quick:
        mtbfs, seeds, duration = [2000.0, 700.0, 250.0], range(6), 6000.0
    else:
        mtbfs, seeds, duration = [4000.0, 2000.0, 1000.0, 500.0, 250.0, 150.0], range(30), 10_000.0
    out = args.out
    t0 = time.perf_counter()
    bases = blocking_scenarios(duration=duration)
    run_on = {"executor": args.executor, "workers": args.workers, "progress": False}
    # crash_mtbf = inf: fault-free runs, which measure tau (a few seeds are plenty)
    runs = pd.concat([blocking_rows(sim.sweep(bases, {CRASH_MTBF: [math.inf]}, seeds=range(3), **run_on)),
                      blocking_rows(sim.sweep(bases, {CRASH_MTBF: mtbfs}, seeds=seeds, **run_on))],
                     ignore_index=True)
    table = blocking_table(runs)
    runs.to_csv(out / "blocking_runs.csv", index=False)
    table.to_csv(out / "blocking.csv", index=False)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.transactions.plots import plot_blocking

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plot_blocking(table, axes)
    fig.suptitle(f"Commit protocols under coordinator crashes ({len(seeds)} seeds per point, 95% CI)")
    fig.tight_layout()
    fig.savefig(out / "blocking.png", dpi=120)

    cols = ["variant", "crash_mtbf", "blocked_fraction", "blocked_fraction_ci", "predicted", "blocked_time",
            "violations"]
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"wrote {out}/blocking.csv, blocking_runs.csv, blocking.png in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
