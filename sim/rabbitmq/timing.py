"""The timing verdict: is a simulated latency percentile within the real broker's own run-to-run noise?

Timing on a real broker is not reproducible: the same scenario, seed and
broker give a p50 of 5.5 ms in one run and 19 ms in the next when other work
shares the machine's two cores (measured on RabbitMQ 3.10.8). A fixed
tolerance is therefore either too tight for a loaded machine or too loose for
a quiet one. The allowance is derived instead from what the broker itself did
in this validation, which runs the broker side ``R`` times (3 by default; see
:func:`sim.rabbitmq.validate.validate`):

``between``  the standard deviation of the percentile over the ``R`` broker
             runs: how much one run differs from the next on this machine now;
``within``   the bootstrap standard error of one broker run's percentile
             (resampling its messages; the root mean square over the runs):
             the noise of a finite sample, which ``between`` should be at least,
             and is known far better than ``between`` is from three runs;
``sim se``   the bootstrap standard error of the simulation's percentile.

The simulation agrees when it differs from the mean of the broker runs by at
most ``allowance = max(A, B)`` with

``A = t(R-1) * between * sqrt(1 + 1/R)``: the two-sided prediction interval
    for one more broker run at :attr:`TimingRule.level` (Student's t with
    ``R - 1`` degrees of freedom: three runs give a wide interval, which is the
    honest price of three runs), i.e. the simulation is judged as if it were
    one more run of the broker;
``B = z * sqrt(sim_se**2 + within**2 / R)``: the sampling noise alone, at the
    same level (normal quantile), which is all there is with a single run.

Both sides use the same level, so a validation with four judged percentiles
says "differs" by chance in about ``4 * (1 - level)`` of runs where the model
is right (4% at the default 0.99).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TimingRule", "Judgement", "judge", "timing_rows", "TIMING_COLUMNS"]

TIMING_COLUMNS = ["quantity", "simulation", "broker", "difference", "allowance", "broker runs", "rule", "agree"]
_PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))


@dataclass(frozen=True)
class TimingRule:
    """Which percentiles are judged, at what confidence ``level``, with how many bootstrap ``resamples``."""

    level: float = 0.99
    resamples: int = 1000
    judged: tuple[str, ...] = ("p50", "p95")

    def __post_init__(self) -> None:
        if not 0.5 < self.level < 1.0:
            raise ValueError(f"TimingRule.level must be in (0.5, 1), got {self.level!r}")
        if self.resamples < 100:
            raise ValueError(f"TimingRule.resamples must be >= 100, got {self.resamples!r}")

    def describe(self) -> str:
        """One paragraph: how the allowance of every judged timing row was derived."""
        return (f"Timing allowance: the simulation agrees when it is within max(A, B) of the mean of the broker "
                f"runs, at {self.level:.0%} two-sided confidence: A = t(R-1) x (standard deviation over the R broker "
                "runs) x sqrt(1 + 1/R), the prediction interval of one more broker run; B = z x sqrt(se_sim^2 + "
                f"se_run^2 / R), the sampling noise alone (bootstrap standard errors, {self.resamples} resamples of "
                "each run's messages). Judged: " + ", ".join(self.judged) + "; the rest is shown.")


@dataclass(frozen=True)
class Judgement:
    """One timing quantity: the simulated value, the broker runs' values, the noise and the verdict."""

    sim: float
    runs: tuple[float, ...]
    between: float
    within: float
    sim_se: float
    allowance: float

    @property
    def broker(self) -> float:
        finite = [v for v in self.runs if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def difference(self) -> float:
        return self.broker - self.sim

    @property
    def agree(self) -> bool:
        if math.isnan(self.sim) and math.isnan(self.broker):
            return True
        return bool(abs(self.difference) <= self.allowance)  # a nan on one side: False


def _bootstrap_se(samples: np.ndarray, q: float, rng: np.random.Generator, resamples: int) -> float:
    """Standard error of the ``q``-th percentile of ``samples``, by resampling them with replacement."""
    if len(samples) < 2:
        return math.nan
    idx = rng.integers(0, len(samples), size=(resamples, len(samples)))
    return float(np.percentile(samples[idx], q, axis=1).std(ddof=1))


def _percentile(samples: np.ndarray, q: float) -> float:
    return float(np.percentile(samples, q)) if len(samples) else math.nan


def judge(sim: np.ndarray, runs: Sequence[np.ndarray], q: float, rule: TimingRule,
          rng: np.random.Generator) -> Judgement:
    """The ``q``-th percentile of ``sim`` against the same percentile of each broker run (module docstring)."""
    from scipy import stats

    values = tuple(_percentile(r, q) for r in runs)
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    between = float(np.std(finite, ddof=1)) if n >= 2 else math.nan
    ses = [_bootstrap_se(r, q, rng, rule.resamples) for r in runs if len(r) >= 2]
    within = float(np.sqrt(np.mean(np.square(ses)))) if ses else math.nan
    sim_se = _bootstrap_se(sim, q, rng, rule.resamples)
    tail = 0.5 + rule.level / 2.0
    a = float(stats.t.ppf(tail, n - 1)) * between * math.sqrt(1.0 + 1.0 / n) if n >= 2 else 0.0
    b = float(stats.norm.ppf(tail)) * math.sqrt(np.nan_to_num(sim_se) ** 2 + np.nan_to_num(within) ** 2 / max(n, 1))
    return Judgement(_percentile(sim, q), values, between, within, sim_se, max(a, b))


def _row(quantity: str, sim: Any, broker: Any, runs: Sequence[float], rule: str, agree: bool | None,
         allowance: float = math.nan) -> dict[str, Any]:
    shown = " ".join(f"{v:.3f}" if math.isfinite(v) else "-" for v in runs)
    return {"quantity": quantity, "simulation": sim, "broker": broker, "difference": broker - sim,
            "allowance": allowance, "broker runs": shown, "rule": rule, "agree": agree}


def timing_rows(sim: np.ndarray, runs: Sequence[np.ndarray], rule: TimingRule,
                rng: np.random.Generator) -> list[dict[str, Any]]:
    """count, p50, p95, p99 and mean rows (ms): the judged percentiles with their allowance, the rest shown."""
    counts = [float(len(r)) for r in runs]
    rows = [_row("count", float(len(sim)), float(np.mean(counts)) if counts else math.nan, counts, "shown", None)]
    for name, q in _PERCENTILES:
        if name in rule.judged:
            j = judge(sim, runs, q, rule, rng)
            rows.append(_row(f"{name} (ms)", j.sim, j.broker, j.runs, "within allowance", j.agree, j.allowance))
        else:
            values = [_percentile(r, q) for r in runs]
            rows.append(_row(f"{name} (ms)", _percentile(sim, q), _nanmean(values), values, "shown", None))
    means = [float(r.mean()) if len(r) else math.nan for r in runs]
    rows.append(_row("mean (ms)", float(sim.mean()) if len(sim) else math.nan, _nanmean(means), means, "shown", None))
    return rows


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
