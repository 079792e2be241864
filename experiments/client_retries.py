"""Client retries: the retry storm, writes applied twice, and availability bought with latency.

Three classic results about clients that retry requests, on a single-copy store
(one owner, the others forward to it):

1. Retry storm. Six open-loop clients (offered rate lambda) lose the owner for
   an outage of length D; every attempt in it times out after T. An operation
   invoked at s in the outage [a, b) retried immediately makes
   min(k, ceil((b - s) / T)) attempts inside it, so the load offered during the
   outage is multiplied by k - T k (k-1) / (2 D) on average (k attempts at
   most; D >= k T); a fixed delay d between attempts replaces T by T + d.
   Exponential backoff with jitter makes the same k attempts per operation
   but spreads them over a longer schedule, much of it after the outage: the
   multiplication inside the outage is lower, and so is the peak. It is not
   bounded, though: an outage longer than the backoff schedule sees the full
   k again. A retry budget (a token bucket per client: ratio r per first
   attempt, at most `burst` tokens) bounds it: attempts during the outage
   <= (1 + r) x operations + burst x clients. Retrying rescues the operations
   invoked late enough in the outage that an attempt falls after it:
   availability rises, most with the longest schedules, at a latency cost.
   The budget's price is the opposite: almost no retry is sent during the
   outage, so its operations fail as without retries.
2. Duplicates. Each message is lost with probability p. Without idempotency
   keys every attempt whose request arrives is applied: (1 - p) E[A]
   applications per write on average, E[A] = (1 - q^k) / (1 - q) attempts with
   q = 1 - (1 - p)^2 (an attempt fails when its request or its reply is lost).
   With keys exactly one, unless every request was lost (p^k): 1 - p^k on
   average, never more than one. Past the duplicate table's bound (a ttl
   shorter than the gap between attempts) the keys are forgotten and the
   writes are applied exactly as often as without them.
3. Availability and latency under loss. Retrying timeouts up to k attempts:
   availability 1 - q^k instead of 1 - q; an ok operation took j attempts with
   probability q^(j-1) (1 - q) / (1 - q^k), so its mean latency is
   2 L + T E[j - 1 | ok] (one-way latency L).

Outputs (in --out, default ``out/client_retries``): ``storm.csv`` and
``lossy.csv`` (one row per variant and seed), ``summary.csv`` (mean and 95%
interval per variant with the predicted value) and ``client_retries.png``.

    python experiments/client_retries.py [--quick] [--out DIR] [--seeds N] [--workers N] [--executor E]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

import sim
from sim.executors import map_tasks
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.scenario import Scenario

K = 5  # attempts at most, in the storm
TIMEOUT = 100.0
CLIENTS, RATE = 6, 20.0  # per client, per second
WINDOW = 100.0
BACKOFF = {"policy": "exponential", "delay": "200ms", "max_delay": "5s", "max_attempts": K}
STORM: dict[str, dict[str, Any]] = {
    "none": {},
    "immediate": {"policy": "immediate", "max_attempts": K},
    "fixed": {"policy": "fixed", "delay": "100ms", "max_attempts": K},
    "exponential full jitter": {**BACKOFF, "jitter": "full"},
    "exponential decorrelated": {**BACKOFF, "jitter": "decorrelated"},
    "full jitter + budget": {**BACKOFF, "jitter": "full", "budget_ratio": 0.1, "budget_burst": 2},
}

P, L, T = 0.2, 1.0, 20.0  # loss per message, one-way latency, timeout (lossy runs)
LOSSY: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "none": ({}, None),
    "immediate k=2": ({"policy": "immediate", "max_attempts": 2, "retry_on": ["info"]}, None),
    "immediate k=4": ({"policy": "immediate", "max_attempts": 4, "retry_on": ["info"]}, None),
    "k=4 + keys": ({"policy": "immediate", "max_attempts": 4, "retry_on": ["info"], "idempotency_keys": True}, None),
    "k=4 + keys, ttl 10ms": ({"policy": "immediate", "max_attempts": 4, "retry_on": ["info"],
                                 "idempotency_keys": True}, {"ttl": "10ms"}),
}


def outage_span(quick: bool) -> tuple[float, float]:
    return (1000.0, 2500.0) if quick else (3000.0, 6000.0)


def storm_scenario(variant: str, quick: bool) -> Scenario:
    start, end = outage_span(quick)
    return Scenario.from_dict({
        "name": f"client-retries-storm-{variant}",
        "cluster": {"count": 3},
        "network": {"latency": "1ms", "client_latency": "0.5ms"},
        "faults": {"schedule": [{"kind": "crash", "node": "n1", "start": start, "end": end}]},
        "workload": {"clients": CLIENTS, "rate": RATE, "timeout": TIMEOUT, "retry": STORM[variant]},
        "protocol": {"name": "single_copy", "owner": "n1"},
        "run": {"duration": end + 1500.0, "drain": "20s"},
    })


def lossy_scenario(variant: str, quick: bool) -> Scenario:
    retry, dedup = LOSSY[variant]
    protocol: dict[str, Any] = {"name": "single_copy", "owner": "n1"}
    if dedup is not None:
        protocol["dedup"] = dedup
    return Scenario.from_dict({
        "name": f"client-retries-lossy-{variant}",
        "cluster": {"count": 3},
        "network": {"loss": P, "latency": f"{L}ms", "client_latency": f"{L}ms"},
        "workload": {"clients": 1, "homes": ["n1"], "rate": 200, "keys": 5, "timeout": T, "retry": retry},
        "protocol": protocol,
        "run": {"duration": "2s" if quick else "5s", "drain": "1s"},
    })


def predicted_multiplication(k: int, gap: float, span: float) -> float:
    """Attempts per operation inside an outage of length ``span`` when attempts are ``gap`` apart (needs
    ``span >= k * gap``)."""
    return k - gap * k * (k - 1) / (2 * span)


def multiplication_variance(k: int, gap: float, span: float) -> float:
    """The variance of one operation's attempts inside the outage, X = min(k, ceil(x / gap)), x uniform in (0, D]."""
    j = np.arange(1, k)
    second = (gap * float(np.sum(j**2)) + (span - (k - 1) * gap) * k**2) / span
    return second - predicted_multiplication(k, gap, span) ** 2


def lossy_predictions(k: int, keys: bool) -> dict[str, float]:
    q = 1 - (1 - P) ** 2
    j = np.arange(1, k + 1)
    pj = q ** (j - 1) * (1 - q) / (1 - q**k)
    return {"availability": 1 - q**k, "latency_mean": 2 * L + T * float(np.sum((j - 1) * pj)),
            "applied_per_write": (1 - P**k) if keys else (1 - P) * (1 - q**k) / (1 - q)}


def measure_storm(variant: str, seed: int, quick: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    scenario = storm_scenario(variant, quick)
    start, end = outage_span(quick)
    r = sim.run(scenario, seed=seed)
    h = r.history
    attempts = r.tables.get("attempts")
    sends = attempts["send"].to_numpy() if attempts is not None else h["invoke"].to_numpy()
    in_outage = (h["invoke"] >= start) & (h["invoke"] < end)
    invoked = int(in_outage.sum())
    sent = int(((sends >= start) & (sends < end)).sum())
    edges = np.arange(0.0, scenario.run.duration + WINDOW, WINDOW)
    rate = np.histogram(sends, edges)[0] * 1000.0 / WINDOW
    offered = CLIENTS * RATE
    ok = h[h["outcome"] == "ok"]
    latency = (ok["complete"] - ok["invoke"]).to_numpy()
    row = {
        "variant": variant, "seed": seed, "sent": sent, "invoked": invoked,
        "multiplication": sent / invoked,
        "peak_load": float(rate[(edges[:-1] >= start) & (edges[:-1] < end)].max()) / offered,
        "attempts_per_op": float(h["attempts"].mean()),
        "availability": float((h["outcome"] == "ok").mean()),
        "availability_outage": float((h.loc[in_outage, "outcome"] == "ok").mean()),
        "latency_mean": float(latency.mean()),
        "latency_p99": float(np.percentile(latency, 99)),
        "budget_bound": (1 + 0.1) + 2 * CLIENTS / invoked if variant == "full jitter + budget" else math.nan,
        "predicted": _predicted(scenario, end - start),
        "predicted_variance": _predicted(scenario, end - start, variance=True),
    }
    timeline = pd.DataFrame({"variant": variant, "seed": seed, "time": edges[:-1], "load": rate / offered})
    return row, timeline


def _predicted(scenario: Scenario, span: float, variance: bool = False) -> float:
    """The closed form for retries a fixed gap apart: immediate (gap T) and fixed (gap T + delay); no retries: 1."""
    retry = scenario.workload.retry
    timeout = scenario.workload.timeout
    formula = multiplication_variance if variance else predicted_multiplication
    if retry.policy == "none":
        return 0.0 if variance else 1.0
    if retry.policy == "immediate":
        return formula(retry.attempts_allowed, timeout, span)
    if retry.policy == "fixed" and retry.jitter == "none":
        return formula(retry.attempts_allowed, timeout + retry.delay, span)
    return math.nan


def measure_lossy(variant: str, seed: int, quick: bool) -> dict[str, Any]:
    scenario = lossy_scenario(variant, quick)
    r = sim.run(scenario, seed=seed)
    h = r.history
    ok = h[h["outcome"] == "ok"]
    latency = (ok["complete"] - ok["invoke"]).to_numpy()
    retry = scenario.workload.retry
    row: dict[str, Any] = {
        "variant": variant, "seed": seed, "k": retry.attempts_allowed, "keys": retry.idempotency_keys,
        "availability": float((h["outcome"] == "ok").mean()),
        "latency_mean": float(latency.mean()),
        "applied_per_write": math.nan, "duplicated": math.nan, "extra": math.nan,
        # sums, so that tests can pool every operation of every seed
        "ops": len(h), "ok": len(ok), "latency_sum": float(latency.sum()), "latency_sumsq": float((latency**2).sum()),
        "writes": 0, "applied_sum": 0, "applied_sumsq": 0,
    }
    found = r.verdicts.get("duplicates")
    if found is not None:
        applied = found.table["applied"].to_numpy()
        row.update(applied_per_write=float(applied.mean()), duplicated=found.duplicated, extra=found.extra,
                   writes=len(applied), applied_sum=int(applied.sum()), applied_sumsq=int((applied**2).sum()))
    keys_hold = retry.idempotency_keys and (scenario.protocol.dedup.ttl > T)
    for name, value in lossy_predictions(retry.attempts_allowed, keys_hold).items():
        row[f"predicted_{name}"] = value
    return row


def _task(task: tuple[str, str, int, bool]) -> Any:
    kind, variant, seed, quick = task
    return measure_storm(variant, seed, quick) if kind == "storm" else measure_lossy(variant, seed, quick)


def interval(values: pd.Series) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds."""
    x = values.to_numpy(dtype=float)
    mean = float(x.mean())
    if len(x) < 2 or float(x.std()) == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(x) - 1) * stats.sem(x))
    return mean, mean - half, mean + half


def summarize(storm: pd.DataFrame, lossy: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for table, part, metrics in ((storm, "storm", ("multiplication", "peak_load", "availability",
                                                      "availability_outage", "latency_mean", "latency_p99")),
                                    (lossy, "lossy", ("availability", "latency_mean", "applied_per_write",
                                                      "duplicated"))):
        for variant, g in table.groupby("variant", sort=False):
            for metric in metrics:
                mean, lo, hi = interval(g[metric])
                pcol = "predicted" if part == "storm" and metric == "multiplication" else f"predicted_{metric}"
                predicted = float(g[pcol].iloc[0]) if pcol in g else math.nan
                rows.append({"part": part, "variant": variant, "metric": metric, "mean": mean, "ci_low": lo,
                                "ci_high": hi, "predicted": predicted})
    return pd.DataFrame(rows)


def plot(storm: pd.DataFrame, timeline: pd.DataFrame, lossy: pd.DataFrame, path: Path,
         outage: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    first = timeline[timeline["seed"] == timeline["seed"].min()]
    for variant, part in first.groupby("variant", sort=False):
        smooth = part["load"].rolling(5, min_periods=1, center=True).mean()
        axes[0].plot(part["time"] / 1000, smooth, label=variant)
    axes[0].axvspan(outage[0] / 1000, outage[1] / 1000, color="grey", alpha=0.2, label="owner down")
    axes[0].set_xlabel("time (s)")
    axes[0].set_ylabel("attempts sent / offered rate")
    axes[0].set_title("load during an outage (retry storm)")
    axes[0].legend(fontsize=7)
    means = lossy.groupby("variant", sort=False)[["applied_per_write"]].mean().dropna()
    axes[1].bar(range(len(means)), means["applied_per_write"], color="tab:red")
    axes[1].axhline(1.0, color="k", ls="--", lw=1)
    axes[1].set_xticks(range(len(means)), means.index, rotation=15, fontsize=8)
    axes[1].set_ylabel("applications per write")
    axes[1].set_title("writes applied twice (lossy network)")
    keyless = lossy[~lossy["keys"].astype(bool)]  # keys change what is applied, not what the client sees
    g = keyless.groupby("variant", sort=False)[["availability", "latency_mean"]].mean()
    axes[2].scatter(g["latency_mean"], g["availability"])
    for variant, row in g.iterrows():
        axes[2].annotate(f"loss: {variant}", (row["latency_mean"], row["availability"]), fontsize=8)
    s = storm.groupby("variant", sort=False)[["availability", "latency_mean"]].mean()
    axes[2].scatter(s["latency_mean"], s["availability"], marker="x")
    for variant, row in s.iterrows():
        axes[2].annotate(f"outage: {variant}", (row["latency_mean"], row["availability"]), fontsize=7)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("mean latency of ok operations (ms)")
    axes[2].set_ylabel("availability")
    axes[2].set_title("availability bought with latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = experiment_parser(__doc__, out="out/client_retries",
                               quick="shorter runs and 3 seeds",
                               seeds="replications per variant (default 3 quick, 10 full)")
    args = parse_experiment_args(parser, argv)
    seeds = range(1, 1 + (args.seeds or (3 if args.quick else 10)))
    out = args.out
    tasks = [("storm", v, s, args.quick) for v in STORM for s in seeds]
    tasks += [("lossy", v, s, args.quick) for v in LOSSY for s in seeds]
    results = map_tasks(_task, tasks, args.executor, args.workers)
    storm_rows, timelines, lossy_rows = [], [], []
    for (kind, _v, _s, _q), result in zip(tasks, results):
        if kind == "storm":
            storm_rows.append(result[0])
            timelines.append(result[1])
        else:
            lossy_rows.append(result)
    storm, lossy = pd.DataFrame(storm_rows), pd.DataFrame(lossy_rows)
    storm.to_csv(out / "storm.csv", index=False)
    lossy.to_csv(out / "lossy.csv", index=False)
    summary = summarize(storm, lossy)
    summary.to_csv(out / "summary.csv", index=False)
    plot(storm, pd.concat(timelines, ignore_index=True), lossy, out / "client_retries.png", outage_span(args.quick))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    main()
