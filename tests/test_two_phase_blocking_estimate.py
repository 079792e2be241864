"""The blocked fraction of a blocking sweep, pooled over runs, matches E[1 - exp(-lambda W)] (chapter 5's points)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import sim
from sim.transactions.blocking import (
    CRASH_MTBF,
    blocking_rows,
    blocking_scenario,
    blocking_scenarios,
    blocking_table,
    pooled_ratio,
)

DURATION = 6000.0


def test_pooled_ratio_is_the_ratio_of_sums_with_a_delta_method_interval():
    """Two runs, 10 of 100 and 5 of 10: 15/110 (not the mean of 0.1 and 0.5), with the half-width by hand."""
    ratio, half = pooled_ratio([10, 5], [100, 10])
    assert ratio == pytest.approx(15 / 110)
    residuals = np.array([10 - ratio * 100, 5 - ratio * 10])
    se = math.sqrt((residuals**2).sum() / (2 * 1)) / 55
    assert half == pytest.approx(stats.t.ppf(0.975, 1) * se)
    assert math.isnan(pooled_ratio([3], [40])[1]) and pooled_ratio([3], [40])[0] == pytest.approx(3 / 40)
    assert all(math.isnan(v) for v in pooled_ratio([], []))


def _windows(variant: str, seeds: range) -> np.ndarray:
    """Uncertainty windows of every transaction of fault-free runs (0 for those nobody voted yes in;
    with cooperative termination the all-yes windows, as the module docstring says)."""
    column = "window_all_yes" if variant == "2PC + termination" else "window"
    out = []
    for seed in seeds:
        t = sim.run(blocking_scenario(variant, math.inf, duration=DURATION), seed=seed).tables["transactions"]
        out.append(t.loc[t["begin"] < DURATION, column].to_numpy(dtype=float))
    return np.concatenate(out)


@pytest.mark.parametrize("variant, mtbf, seeds", [("2PC", 2000.0, 160), ("2PC", 250.0, 40),
                                                  ("2PC + termination", 700.0, 80)])
def test_blocked_fraction_matches_the_closed_form(variant, mtbf, seeds):
    """Over many runs the pooled blocked fraction's 95% CI holds P(block) = E[1 - exp(-lambda W)].

    W from 10 fault-free runs; the closed form's own uncertainty (lambda times twice the standard error
    of the windows' mean, an upper bound of its sensitivity) widens the interval. lambda = 0.5/s is the
    point chapter 5 once showed at twice the prediction: 16 runs, an unlucky sample, averaged per run.
    """
    w = _windows(variant, range(10))
    lam = 1.0 / mtbf
    closed = float(np.mean(1 - np.exp(-lam * w)))
    slack = 2 * lam * w.std(ddof=1) / math.sqrt(len(w))
    base = blocking_scenarios((variant,), duration=DURATION)
    runs = pd.concat([blocking_rows(sim.sweep(base, {CRASH_MTBF: [math.inf]}, seeds=range(10), progress=False)),
                      blocking_rows(sim.sweep(base, {CRASH_MTBF: [mtbf]}, seeds=range(seeds), progress=False))])
    point = blocking_table(runs).query("crash_mtbf == @mtbf").iloc[0]
    assert abs(point["blocked_fraction"] - closed) <= point["blocked_fraction_ci"] + slack, (point, closed)
    # the table's prediction 1 - exp(-lambda tau) errs upwards by at most lambda^2 Var(W) / 2
    assert -slack <= point["predicted"] - closed <= lam**2 * w.var() / 2 + slack
