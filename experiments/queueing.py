"""Queueing sanity check: simulated M/M/1 and M/M/c waiting times against the formulas.

Reproduces the textbook steady-state results for a FIFO queue with Poisson
arrivals and exponential service: the mean time in system of M/M/1 is
W = 1 / (mu - lambda), and for M/M/c the mean wait in line is
Wq = C(c, a) / (c mu - lambda), where C is the Erlang C probability of waiting
and a = lambda / mu (Kleinrock, Queueing Systems vol. 1, sections 3.2 and 3.5;
sim.analysis.queueing implements both). The simulation's mean time in system
(ok operations' invoke-to-complete time with zero network delay) should lie
inside its 95% confidence interval over replications at every utilisation.

    python experiments/queueing.py [--quick] [--out DIR] [--workers N]
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

import sim
from sim.analysis import mmc
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.sweeps import summarize, sweep

MU = 1.0  # service rate per ms (mean service 1 ms)


def base(servers: int, duration: str) -> sim.Scenario:
    return sim.Scenario.from_dict({
        "name": f"mm{servers}",
        "cluster": {"nodes": ["server"]},
        "network": {"latency": 0},
        "workload": {"clients": 4, "rate": 100, "timeout": "inf", "target": "fixed", "target_node": "server"},
        "protocol": {"name": "fifo_queue", "servers": servers, "service_time": {"dist": "exponential", "mean": 1 / MU}},
        "run": {"duration": duration, "warmup": "1s"},
    })


def experiment(quick: bool, workers: int | None, executor: str) -> pd.DataFrame:
    utilisations = [0.3, 0.6, 0.8] if quick else [0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    reps = 5 if quick else 20
    duration = "4s" if quick else "30s"
    frames = []
    for servers in (1, 2):
        rates = [rho * servers * MU * 1000 / 4 for rho in utilisations]  # per client, per second
        df = sweep(base(servers, duration), {"workload.rate": rates}, reps, seed=11, executor=executor,
                   workers=workers, progress=False)
        ok = df["latency.read.count"] + df["latency.write.count"]
        df["time_in_system"] = (df["latency.read.mean"] * df["latency.read.count"]
                               + df["latency.write.mean"] * df["latency.write.count"]) / ok
        s = summarize(df, ["time_in_system"])
        s["servers"] = servers
        s["utilisation"] = [r * 4 / 1000 / (servers * MU) for r in s["workload.rate"]]
        s["formula"] = [mmc(rho * servers * MU, MU, servers).mean_time_in_system for rho in s["utilisation"]]
        s["inside_ci"] = (s["ci_low"] <= s["formula"]) & (s["formula"] <= s["ci_high"])
        frames.append(s)
    return pd.concat(frames, ignore_index=True)


def figure(table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for servers, g in table.groupby("servers"):
        line = ax.plot(g["utilisation"], g["formula"], lw=1, label=f"M/M/{servers} formula")[0]
        ax.errorbar(g["utilisation"], g["mean"], yerr=[g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]],
                    fmt="o", ms=4, capsize=3, color=line.get_color(), label=f"M/M/{servers} simulated (95% CI)")
    ax.set_xlabel("utilisation rho = lambda / (c mu)")
    ax.set_ylabel("mean time in system (ms)")
    ax.set_title("FIFO queue: simulation vs steady-state formulas")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = experiment_parser(__doc__, out="out/queueing",
                           quick="few utilisations, short runs")
    args = parse_experiment_args(ap, argv)
    table = experiment(args.quick, args.workers, args.executor)
    table.to_csv(args.out / "queueing.csv", index=False)
    figure(table, args.out / "queueing.png")
    cols = ["servers", "utilisation", "formula", "mean", "ci_low", "ci_high", "inside_ci"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{int(table['inside_ci'].sum())}/{len(table)} formula values inside the simulated 95% CI -> {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
