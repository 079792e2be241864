"""How often and how long commit protocols block as the coordinator's crash rate grows.

The closed form. The coordinator crashes at rate ``lambda = 1 / crash_mtbf`` while it
is up (exponential up times, so crashes are memoryless). A transaction blocks when the
coordinator crashes inside its uncertainty window ``W`` (from sending the prepares to
sending the decision, see :mod:`sim.transactions.tables`) and stays down longer than
the blocking threshold. Transactions begin only while the coordinator is up, so for
each of them ``P(block | W) = 1 - exp(-lambda W)`` exactly, and

    P(block) = E[1 - exp(-lambda W)]  ~=  1 - exp(-lambda * tau),   tau = E[W],

the approximation erring upwards (Jensen) by at most ``lambda**2 * Var(W) / 2``: about
2e-5 at lambda = 0.5/s for the scenario below, negligible. ``tau`` is measured on
fault-free runs of the same scenario. With cooperative termination only transactions
where everyone voted yes block (a no voter knows the outcome), so ``tau`` becomes the
mean of ``window_all_yes`` (the window of all-yes transactions, 0 for the others). 3PC
never blocks on a coordinator crash: its prediction is 0.

The estimate. ``P(block)`` is a probability per *transaction*, so a point's estimate
pools its runs: blocked transactions over transactions, not the mean of the runs'
fractions. A run's fraction is a ratio with a random denominator: a run with more
crashes has fewer transactions (none begin while the coordinator is down) and more
blocked ones, so the mean of the fractions overestimates ``P(block)`` (by 7-8% at the
crash rates below, measured over 400 runs per point) while the pooled ratio converges
to it. Its 95% interval comes from the runs as independent replications (the delta
method for a ratio of sums, t quantile), because blocked transactions cluster: one
crash blocks every transaction in flight at once, so a binomial interval over
transactions would be too narrow. Blocked lock-time per transaction is pooled the same
way.

The runs are an ordinary sweep: one base scenario per variant (by label), the factor
``faults.random.crash_mtbf`` (``inf``: fault-free, which measures ``tau``) and explicit
seeds::

    runs = sim.sweep(blocking_scenarios(duration=6000), {"faults.random.crash_mtbf": [inf, 700, 250]},
                     seeds=range(6))
    table = blocking_table(blocking_rows(runs))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from ..scenario import Scenario

__all__ = ["VARIANTS", "CRASH_MTBF", "blocking_scenario", "blocking_scenarios", "blocking_rows", "blocking_table",
           "pooled_ratio"]

#: the sweep factor that sets the coordinator's crash rate
CRASH_MTBF = "faults.random.crash_mtbf"

#: label -> (protocol name, cooperative termination)
VARIANTS: dict[str, tuple[str, bool]] = {
    "2PC": ("two_phase_commit", False),
    "2PC + termination": ("two_phase_commit", True),
    "3PC": ("three_phase_commit", False),
}


def blocking_scenario(variant: str, crash_mtbf: float, *, duration: float = 10_000.0, clients: int = 2,
                      rate: float = 10.0, abort_probability: float = 0.2, force_time: float = 20.0,
                      crash_duration: float = 500.0) -> Scenario:
    """Four nodes, coordinator ``n1`` crashing every ``crash_mtbf`` ms on average (``inf``:
    never; the factor :data:`CRASH_MTBF`) for ``crash_duration`` ms; ``clients`` clients
    at ``rate`` transfers/s each.

    Links have exponential latency (mean 2 ms) and a forced write takes ``force_time``
    (20 ms: a disk flush on a spinning disk), so the uncertainty window is about 40 ms.
    Timeouts: votes 50 ms, decision 150 ms, rounds of 20 ms, a blocking threshold of
    240 ms, shorter than every outage.
    """
    protocol, cooperative = VARIANTS[variant]
    proto: dict[str, Any] = {"name": protocol, "abort_probability": abort_probability, "force_time": force_time,
                             "decision_timeout": 150, "retry_interval": 20, "vote_timeout": 50}
    if protocol == "two_phase_commit":
        proto["cooperative_termination"] = cooperative
    faults = {"random": {"crash_mtbf": crash_mtbf, "crash_duration": crash_duration, "crash_nodes": ["n1"]}}
    return Scenario.from_dict({
        "name": f"blocking {variant}",
        "cluster": {"count": 4},
        "network": {"latency": {"dist": "exponential", "mean": 2}},
        "workload": {"clients": clients, "rate": rate, "target": "fixed", "target_node": "n1", "keys": 1000,
                     "timeout": 1000},
        "protocol": proto,
        "faults": faults,
        "run": {"duration": duration},
    })


def blocking_scenarios(variants: Sequence[str] = tuple(VARIANTS), **kw: Any) -> dict[str, Scenario]:
    """The fault-free scenario of each variant, by label: the bases of a blocking sweep."""
    return {variant: blocking_scenario(variant, math.inf, **kw) for variant in variants}


def blocking_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns the blocking analysis uses, from a sweep over :func:`blocking_scenarios`.

    One row per run: ``variant``, ``crash_mtbf``, ``lambda``, ``seed``, ``txns``,
    ``committed``, ``blocked`` (transactions), ``blocked_fraction``, ``blocked_time``,
    ``blocked_time_per_txn``, ``lost_throughput``, ``window``, ``window_all_yes`` and
    ``violations``.
    """
    failed = runs[runs["error"].notna()]
    if len(failed):
        raise RuntimeError(f"{len(failed)} blocking runs failed, first: {failed['error'].iloc[0]}")
    mtbf = runs[CRASH_MTBF].astype(float)
    return pd.DataFrame({
        "variant": runs["scenario"], "crash_mtbf": mtbf, "lambda": 1.0 / mtbf, "seed": runs["seed"],
        "txns": runs["txn.count"], "committed": runs["txn.committed"], "blocked": runs["txn.blocked"],
        "blocked_fraction": runs["txn.blocked_fraction"], "blocked_time": runs["txn.blocked_time.mean"],
        "blocked_time_per_txn": runs["txn.blocked_time_per_txn"],
        "lost_throughput": runs["txn.lost_throughput"], "window": runs["txn.window.mean"],
        "window_all_yes": runs["txn.window_all_yes.mean"], "violations": runs["txn.atomicity_violations"],
    })


def _ci(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def pooled_ratio(numerators: ArrayLike, denominators: ArrayLike) -> tuple[float, float]:
    """``sum(numerators) / sum(denominators)`` and its 95% CI half-width over the runs (one pair each).

    The runs are the independent replications: the half-width is the delta method's standard
    error of a ratio of sums, ``sqrt(sum((y - r x)**2) / (n (n - 1))) / mean(x)``, times the t
    quantile with ``n - 1`` degrees of freedom (NaN with fewer than two runs).
    """
    y = np.asarray(numerators, dtype=float)
    x = np.asarray(denominators, dtype=float)
    n = len(x)
    if n == 0 or x.sum() == 0:
        return math.nan, math.nan
    ratio = float(y.sum() / x.sum())
    if n < 2:
        return ratio, math.nan
    se = math.sqrt(float(((y - ratio * x) ** 2).sum()) / (n * (n - 1))) / float(x.mean())
    return ratio, float(stats.t.ppf(0.975, n - 1) * se)


def blocking_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, crash_mtbf): the pooled blocked fraction and blocked lock-time per
    transaction, means of the other columns, each with its 95% CI half-width, and the
    predicted fraction (see the module docstring).

    ``tau`` comes from the variant's fault-free rows (``crash_mtbf = inf``), which the
    runs (:func:`blocking_rows`) must include.
    """
    out = []
    for variant, per_variant in runs.groupby("variant", sort=False):
        calm = per_variant[~np.isfinite(per_variant["crash_mtbf"])]
        if calm.empty:
            raise ValueError(f"no fault-free (crash_mtbf = inf) runs for {variant!r}: cannot measure tau")
        tau = float(calm["window_all_yes" if variant == "2PC + termination" else "window"].mean())
        for mtbf, point in per_variant.groupby("crash_mtbf", sort=True):
            lam = 1.0 / float(mtbf)  # type: ignore[arg-type]  # a group key of the float column
            row = {"variant": variant, "crash_mtbf": mtbf, "lambda": lam, "seeds": len(point), "tau": tau,
                   "predicted": 0.0 if variant == "3PC" else 1 - math.exp(-lam * tau)}
            txns = point["txns"].to_numpy(dtype=float)
            row["blocked_fraction"], row["blocked_fraction_ci"] = pooled_ratio(point["blocked"], txns)
            row["blocked_time_per_txn"], row["blocked_time_per_txn_ci"] = pooled_ratio(
                point["blocked_time_per_txn"].to_numpy(dtype=float) * txns, txns)
            for col in ("blocked_time", "lost_throughput", "txns"):
                row[col], row[f"{col}_ci"] = _ci(point[col])
            row["violations"] = int(point["violations"].sum())
            out.append(row)
    return pd.DataFrame(out)
