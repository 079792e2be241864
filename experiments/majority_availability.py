"""Majority-quorum availability under independent crashes vs the binomial formula.

Reproduces the textbook availability of a majority quorum (e.g. Peleg and
Wool, "The availability of quorum systems", Information and Computation 123,
1995; ``sim.analysis.majority_availability``): with N replicas each up
independently with probability p, an operation needing q = N // 2 + 1 of them
succeeds with probability

    A(N, p) = sum_{k=q}^{N} C(N, k) p^k (1 - p)^(N - k).

The simulation is built to measure exactly that quantity:

* the quorum protocol (``dynamo`` mode, one round trip per operation) with
  N = 3 or 5 replicas, R = W = q, on nodes n1..nN, plus one more node
  (n4 or n6) that holds no replica of the key, never crashes and coordinates
  every operation: all clients sit next to it and send it everything, so a
  client never loses its coordinator and the only thing that decides an
  operation is how many replicas answer;
* one key (key 0, whose preference list is n1..nN);
* random crashes on n1..nN only (``faults.random``): each replica stays up for
  an exponential time of mean ``crash_mtbf`` and is down for an exponential
  time of mean D = 50 ms, so the stationary probability that it is up is
  p = mtbf / (mtbf + D); the replicas are independent, so at a random instant
  the number up is Binomial(N, p);
* open-loop (Poisson) clients: by PASTA their operations sample the state of
  the replicas at instants spread uniformly over time. (Closed-loop clients
  would not: an operation that fails waits for its timeout, so fewer
  operations would start while the quorum is down.)

Availability of operations then estimates A(N, p), up to two biases that the
design keeps far below the confidence intervals:

* straddling: a replica counts only if it is up when the coordinator sends to
  it and stays up while the message travels (a message sent to a down node is
  lost even if the node recovers before it would arrive; one to a node that
  crashes meanwhile is lost too; the reply is sent at once and a message
  already sent survives its sender's crash). With a constant one-way latency
  l = 0.1 ms, memoryless up times give P(replica answers) = p exp(-l / mtbf)
  exactly, so the expected availability of operations is
  A(N, p exp(-l / mtbf)): lower than A(N, p) by ``straddle_bias`` (below
  0.2% here, largest at p = 0.5). Operations are short (0.4 ms) against up and
  down times (>= 50 ms), and a request timeout of 20 ms (client: 50 ms) ends
  failed operations quickly without affecting the ones that succeed;
* warm-up: every replica starts up, and P(up at t) = p + (1 - p) exp(-t / tau)
  with tau = 1 / (1 / mtbf + 1 / D) <= 50 ms; measuring from t = 1 s leaves an
  upward bias of at most ``warmup_bias`` (about exp(-20)).

Every run also records, from its own fault record, the exact fraction of the
measured time during which a quorum of replicas was up (``time_fraction``):
its mean estimates A(N, p) with no straddling bias, and the difference between
operations and time fraction within a run is only the operations' sampling
noise and the straddling bias. Expected: A(N, p) inside the 95% CI of the
operations' availability at every p (the tests use the 99% CI, widened by
the two bias bounds), for N = 3 and 5; and the cross-over of the curves at
p = 0.5 (more replicas help only when p > 1/2).

    python experiments/majority_availability.py [--quick] [--out DIR] [--workers N] [--executor E]

writes majority_availability.csv (per N and p: formula, bias bounds, mean and
95%/99% CIs of the operations' availability and of the time fraction),
majority_runs.csv (one row per run) and majority_availability.png.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

import sim
from sim.analysis import majority_availability
from sim.executors import map_tasks
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.sweeps import replication_seed

DOWN_MEAN = 50.0  # D: mean time a replica stays down (ms)
LATENCY = 0.1  # l: constant one-way message delay (ms)
WARMUP = 1000.0
ROOT_SEED = 31


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"p_up": [0.6, 0.9], "sizes": [3, 5], "duration": 10_000.0, "replications": 4}
    return {"p_up": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99], "sizes": [3, 5], "duration": 60_000.0,
            "replications": 20}


def mtbf_for(p_up: float) -> float:
    """Mean up time giving a stationary up probability p_up = mtbf / (mtbf + D)."""
    return p_up / (1.0 - p_up) * DOWN_MEAN


def scenario(n: int, p_up: float, duration: float) -> sim.Scenario:
    q = n // 2 + 1
    replicas = [f"n{i}" for i in range(1, n + 1)]
    coordinator = f"n{n + 1}"
    return sim.Scenario.from_dict({
        "name": f"majority-n{n}-p{p_up:g}",
        "cluster": {"nodes": replicas + [coordinator]},
        "network": {"latency": LATENCY},
        "faults": {"random": {"crash_mtbf": mtbf_for(p_up),
                             "crash_duration": {"dist": "exponential", "mean": DOWN_MEAN},
                             "crash_nodes": replicas}},
        "workload": {"clients": 2, "homes": [coordinator], "target": "home", "mode": "open", "rate": 100,
                     "keys": 1, "read_fraction": 0.5, "timeout": "50ms"},
        "protocol": {"name": "quorum", "replicas": n, "r": q, "w": q, "mode": "dynamo",
                     "request_timeout": "20ms"},
        "run": {"duration": duration, "warmup": WARMUP},
    })


def quorum_time(faults: pd.DataFrame, n: int, q: int, lo: float, hi: float) -> tuple[float, float]:
    """Fraction of ``[lo, hi)`` with at least ``q`` of the ``n`` replicas up, and the mean up fraction.

    Each replica's crash intervals are disjoint, so the number of crash
    intervals covering an instant is the number of replicas down then.
    """
    crashes = faults[faults["kind"] == "crash"]
    down = int(((crashes["start"] < lo) & (crashes["end"] > lo)).sum())
    events = [(t, +1) for t in crashes["start"] if lo <= t < hi] + [(t, -1) for t in crashes["end"] if lo <= t < hi]
    events.sort()
    quorum, down_time, prev = 0.0, 0.0, lo
    for t, change in events:
        if n - down >= q:
            quorum += t - prev
        down_time += down * (t - prev)
        down += change
        prev = t
    if n - down >= q:
        quorum += hi - prev
    down_time += down * (hi - prev)
    span = hi - lo
    return quorum / span, 1.0 - down_time / (n * span)


def simulate(task: dict[str, Any]) -> dict[str, Any]:
    """One run: availability of operations, and the exact quorum-up fraction of its own crash schedule."""
    n, p_up, duration = task["n"], task["p_up"], task["duration"]
    result = sim.run(scenario(n, p_up, duration), seed=task["seed"])
    frac, up = quorum_time(result.faults, n, n // 2 + 1, WARMUP, duration)
    s = result.summary
    return {**task, "ops": s["ops"], "availability": s["availability"], "time_fraction": frac,
            "up_fraction": up, "crashes": int((result.faults["kind"] == "crash").sum()), "runtime": result.runtime}


def _ci(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean of ``x``."""
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def biases(n: int, p_up: float) -> tuple[float, float, float]:
    """(formula, straddle_bias, warmup_bias): the bounds of the docstring for this point."""
    mtbf = mtbf_for(p_up)
    formula = majority_availability(n, p_up)
    straddle = formula - majority_availability(n, p_up * math.exp(-LATENCY / mtbf))
    tau = 1.0 / (1.0 / mtbf + 1.0 / DOWN_MEAN)
    warm = majority_availability(n, min(1.0, p_up + (1.0 - p_up) * math.exp(-WARMUP / tau))) - formula
    return formula, straddle, warm


def experiment(quick: bool, workers: int | None, executor: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = settings(quick)
    tasks = [{"n": n, "p_up": p, "rep": rep, "seed": replication_seed(ROOT_SEED, rep), "duration": cfg["duration"]}
             for n in cfg["sizes"] for p in cfg["p_up"] for rep in range(cfg["replications"])]
    runs = pd.DataFrame(map_tasks(simulate, tasks, executor, workers))
    rows = []
    for (n, p), g in runs.groupby(["n", "p_up"], sort=True):
        formula, straddle, warm = biases(n, p)
        a, tf = g["availability"].to_numpy(dtype=float), g["time_fraction"].to_numpy(dtype=float)
        lo95, hi95 = _ci(a, 0.95)
        lo99, hi99 = _ci(a, 0.99)
        tlo, thi = _ci(tf, 0.95)
        rows.append({"n": n, "p_up": p, "mtbf": mtbf_for(p), "runs": len(g), "formula": formula,
                     "straddle_bias": straddle, "warmup_bias": warm, "expected_ops": formula - straddle,
                     "mean": float(a.mean()), "ci_low": lo95, "ci_high": hi95, "ci99_low": lo99, "ci99_high": hi99,
                     "inside_ci": bool(lo95 <= formula <= hi95),
                     "time_fraction": float(tf.mean()), "tf_ci_low": tlo, "tf_ci_high": thi,
                     "ops_minus_time": float((a - tf).mean()), "up_fraction": float(g["up_fraction"].mean())})
    return pd.DataFrame(rows), runs


def figure(table: pd.DataFrame, path: Path) -> None:
    fig, (ax, dev) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    grid = np.linspace(0.4, 1.0, 121)
    for n, g in table.groupby("n"):
        line = ax.plot(grid, [majority_availability(n, p) for p in grid], lw=1.2, label=f"N={n}: binomial formula")[0]
        color = line.get_color()
        ax.errorbar(g["p_up"], g["mean"], yerr=[g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]], fmt="o", ms=4,
                    capsize=3, color=color, label=f"N={n}: operations (95% CI)")
        x = g["p_up"] + (n - 4) * 0.003  # N = 3 a little left, N = 5 a little right, so the bars do not overlap
        dev.errorbar(x, g["mean"] - g["formula"], yerr=[g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]],
                     fmt="o", ms=4, capsize=3, color=color, label=f"N={n}: operations - formula")
        dev.plot(x, g["time_fraction"] - g["formula"], "s", mfc="none", color=color,
                 label=f"N={n}: quorum-up time fraction - formula")
        dev.plot(g["p_up"], -g["straddle_bias"], ls="--", lw=1, color=color, label=f"N={n}: predicted straddling bias")
    ax.plot(grid, grid, ls=":", color="0.5", lw=1, label="one replica (A = p)")
    ax.set_xlabel("per-replica up probability p = mtbf / (mtbf + mean down time)")
    ax.set_ylabel("availability of operations")
    ax.set_title("Majority quorum (R = W = N//2+1) under random crashes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    dev.axhline(0, color="0.3", lw=0.8)
    dev.set_xlabel("p")
    dev.set_ylabel("simulated - formula")
    dev.set_title("deviation from A(N, p)")
    dev.grid(alpha=0.3)
    dev.legend(fontsize="x-small")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = experiment_parser(__doc__, out="out/majority_availability",
                           quick="two values of p, four 10 s runs each")
    args = parse_experiment_args(ap, argv)
    t0 = time.perf_counter()
    table, runs = experiment(args.quick, args.workers, args.executor)
    table.to_csv(args.out / "majority_availability.csv", index=False)
    runs.to_csv(args.out / "majority_runs.csv", index=False)
    figure(table, args.out / "majority_availability.png")
    cols = ["n", "p_up", "formula", "mean", "ci_low", "ci_high", "inside_ci", "time_fraction", "straddle_bias",
            "ops_minus_time", "up_fraction"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\n{int(table['inside_ci'].sum())}/{len(table)} formula values inside the 95% CI of the operations' "
          f"availability; {len(runs)} runs in {time.perf_counter() - t0:.1f} s -> {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
