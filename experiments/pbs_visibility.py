"""PBS t-visibility: event simulation vs the WARS Monte-Carlo vs the static closed form.

Reproduces the t-visibility curves of Bailis et al., "Probabilistically Bounded
Staleness for Practical Partial Quorums" (PVLDB 5(8), 2012, section 4): the
probability that a read starting t ms after a write committed returns that
write (or a newer one), for partial quorums N/R/W (N = 3 with (R, W) = (1, 1),
(1, 2), (2, 1), (2, 2); N = 5 with (1, 1), (2, 2)) under exponential (mean 1 ms)
and heavy-tailed Pareto (shape 1.5, scale 1/3 ms: mean 1 ms, infinite
variance) message delays.

Three estimates of the same quantity:

* the event simulation: the quorum protocol in ``dynamo`` mode on a cluster of
  N nodes holding one key on all N; one closed-loop client next to n1
  (``client_latency = 0``, so the client sees the commit when the coordinator
  does) with exponential think time (mean 2 ms) and half reads, so no two
  writes overlap and "newer" is unambiguous (notebooks/02). The history gives,
  per read, the time since the newest commit and whether it was stale
  (``sim.checkers.staleness``);
* the WARS model by vectorised Monte-Carlo, ``sim.analysis.wars_t_visibility``,
  with the four delays W, A, R, S drawn from the network's latency
  distribution (in the simulation every coordinator-replica message, including
  the coordinator's message to itself, takes one such delay);
* the static closed form ``1 - C(N-W, R) / C(N, R)``
  (``sim.analysis.stale_read_probability``): a read quorum chosen at random
  misses the W replicas that acknowledged the write.

Expected: the simulation and the WARS model agree at every t (same model,
two implementations). For each configuration and t bin, the model value is
the mean of the WARS curve over the bin's reads (their exact times since the
commit, since the curve is not flat across a bin) and should lie inside the
simulation's 99% Clopper-Pearson interval; the rule checked by the tests is
"at least 90% of the bins with >= 100 reads, and at most one bin per
configuration outside" (reads after the same write share its propagation
delays, so they are not quite independent and the binomial interval is a bit
narrow). With R + W > N no read is stale at all (every read quorum meets the
write quorum), in the simulation and in the model.

Why the t = 0 Monte-Carlo value exceeds the static closed form: the closed form
assumes that exactly the W acknowledging replicas hold the write when the read
starts. In WARS the write is sent to all N replicas at once; the commit waits
for the W-th acknowledgement, which has its own return delay A, so by then the
write has often reached more than W replicas, and the read request needs a
further delay R to reach a replica, during which the write keeps spreading.
Both effects only add fresh replicas. The closed form is the exact t = 0 value
only when A = R = 0 (``sim.analysis.pbs``); it is the worst case, not the
typical one. Heavy tails move the curve up near t = 0 (most messages are faster
than the mean) but make the last stale reads last much longer.

    python experiments/pbs_visibility.py [--quick] [--out DIR] [--workers N] [--executor E]

writes pbs_visibility.csv (one row per family, configuration and t bin:
simulation estimate and 99% CI, WARS value, static value, inside_ci),
pbs_curves.csv (the WARS curves on a fine grid) and pbs_visibility.png.
"""

from __future__ import annotations

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
from sim.analysis import stale_read_probability, wars_trials
from sim.checkers.staleness import read_staleness
from sim.dists import parse_dist
from sim.executors import map_tasks
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.sweeps import replication_seed

FAMILIES = {
    "exponential": {"dist": "exponential", "mean": 1.0},
    "pareto": {"dist": "pareto", "shape": 1.5, "scale": 1.0 / 3.0},
}
CONFIGS = [(3, 1, 1), (3, 1, 2), (3, 2, 1), (3, 2, 2), (5, 1, 1), (5, 2, 2)]
EDGES = np.array([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])  # t bins (ms)
CONFIDENCE = 0.99
MIN_READS = 100  # bins with fewer reads are reported but not judged
WARMUP = 1000.0
ROOT_SEED = 7


def scenario(n: int, r: int, w: int, latency: dict, duration: float) -> sim.Scenario:
    return sim.Scenario.from_dict({
        "name": f"pbs-n{n}r{r}w{w}",
        "cluster": {"count": n},
        "network": {"latency": latency, "client_latency": 0},
        "workload": {"clients": 1, "mode": "closed", "think_time": {"dist": "exponential", "mean": 2},
                     "keys": 1, "read_fraction": 0.5, "timeout": "200ms"},
        "protocol": {"name": "quorum", "replicas": n, "r": r, "w": w, "mode": "dynamo"},
        "run": {"duration": duration, "warmup": WARMUP},
    })


def simulate(task: dict[str, Any]) -> dict[str, Any]:
    """One run: per measured read, the time since the newest commit and whether it was stale."""
    sc = scenario(task["n"], task["r"], task["w"], FAMILIES[task["family"]], task["duration"])
    result = sim.run(sc, seed=task["seed"])
    st = read_staleness(result.history)
    st = st[(st["invoke"] >= WARMUP) & (st["invoke"] < task["duration"]) & st["since_commit"].notna()]
    return {**task, "since_commit": st["since_commit"].to_numpy(dtype=float), "stale": st["stale"].to_numpy(dtype=bool),
            "timeouts": int(result.summary["info"] + result.summary["fail"])}


def experiment(quick: bool, workers: int | None, executor: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    duration = 10_000.0 if quick else 30_000.0
    replications = 1 if quick else 4
    trials = 100_000 if quick else 400_000
    tasks = [{"family": fam, "n": n, "r": r, "w": w, "rep": rep, "seed": replication_seed(ROOT_SEED, rep),
              "duration": duration}
             for fam in FAMILIES for (n, r, w) in CONFIGS for rep in range(replications)]
    done = map_tasks(simulate, tasks, executor, workers)
    rows, curves = [], []
    grid = np.concatenate([np.linspace(0.0, 2.0, 41), np.linspace(2.1, 12.0, 100)])
    for fi, fam in enumerate(FAMILIES):
        delay = parse_dist(FAMILIES[fam], "latency")
        for n, r, w in CONFIGS:
            mine = [d for d in done if (d["family"], d["n"], d["r"], d["w"]) == (fam, n, r, w)]
            since = np.concatenate([d["since_commit"] for d in mine])
            fresh = ~np.concatenate([d["stale"] for d in mine])
            rng = np.random.default_rng([ROOT_SEED, fi, n, r, w])  # one stream per (family, configuration)
            model = wars_trials(n, r, w, delay, delay, delay, delay, trials, rng)
            static = 1.0 - stale_read_probability(n, r, w)
            curve = model.t_visibility(grid)
            curves.append(curve.assign(family=fam, static=static))
            p_model = model.p_consistent(since)  # the model's value at each read's own t
            idx = np.searchsorted(EDGES, since, side="right") - 1
            for b in range(len(EDGES) - 1):
                m = idx == b
                k, c = int(m.sum()), int(fresh[m].sum())
                row = {"family": fam, "n": n, "r": r, "w": w, "t_low": EDGES[b], "t_high": EDGES[b + 1],
                       "reads": k, "consistent": c, "static": static, "model_t0": float(model.p_consistent(0.0)[0]),
                       "timeouts": sum(d["timeouts"] for d in mine)}
                if k:
                    ci = stats.binomtest(c, k).proportion_ci(CONFIDENCE)
                    wars = float(p_model[m].mean())
                    row.update(t_mean=float(since[m].mean()), p_sim=c / k, ci_low=ci.low, ci_high=ci.high,
                              wars=wars, inside_ci=bool(ci.low <= wars <= ci.high), judged=k >= MIN_READS)
                else:
                    row.update(t_mean=np.nan, p_sim=np.nan, ci_low=np.nan, ci_high=np.nan, wars=np.nan,
                              inside_ci=False, judged=False)
                rows.append(row)
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def figure(table: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(13, 5), sharey=True, constrained_layout=True)
    colors = dict(zip(CONFIGS, plt.get_cmap("tab10").colors))
    for ax, fam in zip(axes, FAMILIES):
        for cfg in CONFIGS:
            n, r, w = cfg
            label = f"N={n} R={r} W={w}"
            cv = curves[(curves["family"] == fam) & (curves["n"] == n) & (curves["r"] == r) & (curves["w"] == w)]
            ax.plot(cv["t"], cv["p_consistent"], color=colors[cfg], lw=1.3, label=label)
            pts = table[(table["family"] == fam) & (table["n"] == n) & (table["r"] == r) & (table["w"] == w)
                        & (table["reads"] > 0)]
            ax.errorbar(pts["t_mean"], pts["p_sim"], yerr=[pts["p_sim"] - pts["ci_low"], pts["ci_high"] - pts["p_sim"]],
                        fmt="o", ms=3.5, capsize=2, color=colors[cfg], lw=0.8)
            ax.plot([0], [cv["static"].iloc[0]], marker="x", ms=8, mew=2, color=colors[cfg], ls="none")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(-0.1, 12)  # room for the static markers at t = 0
        ax.set_title(f"{fam} delays (mean 1 ms)")
        ax.set_xlabel("t: time since the newest write committed (ms)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P(read returns it or newer)")
    axes[0].plot([], [], color="0.3", label="WARS Monte-Carlo")
    axes[0].errorbar([], [], yerr=[], fmt="o", color="0.3", label="event simulation (99% CI)")
    axes[0].plot([], [], marker="x", ls="none", color="0.3", label="static 1 - C(N-W,R)/C(N,R)")
    axes[0].legend(fontsize="small", loc="lower right")
    fig.suptitle("PBS t-visibility: simulation vs WARS model vs static closed form")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def config_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per family and configuration: reads, stale reads, static and t = 0 model values, bins inside the CI."""
    keys = ["family", "n", "r", "w"]
    g = table.groupby(keys, sort=False)
    out = g[["reads", "consistent"]].sum()
    out["stale"] = out.pop("reads") - out["consistent"]
    out.insert(0, "reads", g["reads"].sum())
    out = out.drop(columns="consistent")
    out["static"] = g["static"].first()
    out["wars_t0"] = g["model_t0"].first()
    out["sim_first_bin"] = g["p_sim"].first()
    judged = table[table["judged"]].groupby(keys, sort=False)["inside_ci"]
    out["bins_judged"] = judged.size()
    out["bins_inside"] = judged.sum()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = experiment_parser(__doc__, out="out/pbs_visibility",
                           quick="one 10 s run per configuration, 100k model trials")
    args = parse_experiment_args(ap, argv)
    t0 = time.perf_counter()
    table, curves = experiment(args.quick, args.workers, args.executor)
    table.to_csv(args.out / "pbs_visibility.csv", index=False)
    curves.to_csv(args.out / "pbs_curves.csv", index=False)
    figure(table, curves, args.out / "pbs_visibility.png")
    print(config_summary(table).to_string(float_format=lambda v: f"{v:.3f}"))
    judged = table[table["judged"]]
    inside, total = int(judged["inside_ci"].sum()), len(judged)
    print(f"\n{inside}/{total} bins (>= {MIN_READS} reads): WARS value inside the simulation's "
          f"{CONFIDENCE:.0%} CI; {time.perf_counter() - t0:.1f} s -> {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
