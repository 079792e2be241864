"""CAP under a partition: availability, latency, staleness and convergence vs partition length.

Five nodes n1..n5; n4 and n5 (a minority of 2) are cut off from n1..n3 for L
seconds, L = 0.5, 1, 2, 4, 8 (the partition always starts at the same time).
Ten open-loop clients, two next to each node, read and write 10 keys. Each
replication protocol runs on the same workload and fault (common random numbers):

* ``raft``: leader election and log replication, read-index reads;
* ``quorum``: N = 5 replicas, R = W = 3, the ABD algorithm (linearizable);
* ``eventual``: write to one replica, push to the others, anti-entropy, LWW;
* ``primary_backup``: synchronous, fixed primary n1 (on the majority side),
  refusing writes while a backup is unreachable.

What it reproduces (DESIGN.md section 6; the CAP theorem as Gilbert and Lynch
prove it, "Brewer's conjecture and the feasibility of consistent, available,
partition-tolerant web services", SIGACT News 33(2), 2002): during a partition a
consistent (CP) protocol must refuse the side that cannot reach a majority (or the
primary), while an available (AP) one
answers everywhere with possibly stale data. The expected results:

* CP protocols (raft, quorum, primary_backup): minority-side availability is 0
  while the partition lasts, so their overall availability falls linearly with
  the partition's share of the measured run. With a share ``s`` of the clients
  on the minority side (s = 4/10 here) and T the measured span, quorum's
  prediction is ``A = 1 - s L / T``: the majority side keeps a quorum. Raft's is
  the same minus the re-election time (about an election timeout) in the runs
  where the leader was on the minority side. Synchronous primary-backup with
  ``refuse`` also refuses writes on the majority side (the primary cannot reach
  its backups), so ``A ~= 1 - (L / T) (s + (1 - s)(1 - read_fraction))``;
* eventual: availability stays near 1 on both sides, while its stale-read
  fraction grows with L, roughly in proportion (reads on each side miss the
  other side's writes for as long as the partition lasts, at a steady rate once
  the sides have diverged); after the heal, anti-entropy (each node starts
  an exchange with one random peer every 250 ms) makes the replicas converge
  within a few anti-entropy periods, whatever L was;
* linearizable protocols (raft, ABD quorum, fixed primary) never return a
  stale read.

Read and write p99 latency of ``ok`` operations are reported with no tested
prediction. What to look for: on the majority side a quorum operation (and a
Raft commit or read-index round) must wait for every reachable replica
instead of the fastest majority of five, so its tail grows with the
partitioned share of the run; synchronous primary-backup writes applied just
before the primary noticed the partition wait for the heal (or time out).

Clients sit next to their home node behind a constant 0.5 ms link, so one
client's requests cannot overtake each other on the way (the quorum
coordinator drops a request whose id is not above the last one it took from
that client as a duplicate). The run keeps going for ``run.settle`` after the
load stops, so convergence after the heal is measured even for the longest
partition (``convergence.after_heal``, sampled every 20 ms).

    python experiments/partition_duration.py [--quick] [--out DIR] [--workers N] [--executor E]

writes partition_duration.csv (mean and 95% CI per protocol, duration and
metric, with the prediction for overall availability), partition_runs.csv (one
row per run) and partition_duration.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

import sim
from sim.experiment_cli import experiment_parser, parse_experiment_args
from sim.plots import metric_vs_factor
from sim.sweeps import summarize, sweep

PROTOCOLS = {
    "raft": {"name": "raft"},
    "quorum": {"name": "quorum", "replicas": 5, "r": 3, "w": 3, "mode": "abd"},
    "eventual": {"name": "eventual", "conflict": "lww"},
    "primary_backup": {"name": "primary_backup", "replication": "sync", "primary": "fixed", "primary_node": "n1"},
}
CP = ("raft", "quorum", "primary_backup")
MINORITY = ["n4", "n5"]
CLIENTS = 10  # c0..c9, homed on n1..n5 in turn: c3, c4, c8, c9 are on the minority side
MINORITY_SHARE = sum(1 for i in range(CLIENTS) if f"n{i % 5 + 1}" in MINORITY) / CLIENTS
READ_FRACTION = 0.5
METRICS = ["availability", "availability.majority", "availability.minority", "latency.read.p99",
           "latency.write.p99", "staleness.stale_fraction", "convergence.after_heal"]


def settings(quick: bool) -> dict:
    """Partition lengths and run timing (ms); the longest partition must end before the load stops."""
    if quick:
        return {"lengths": [500.0, 1000.0, 2000.0], "start": 1000.0, "duration": 3500.0, "warmup": 600.0,
                "settle": 2000.0, "replications": 3}
    return {"lengths": [500.0, 1000.0, 2000.0, 4000.0, 8000.0], "start": 2000.0, "duration": 12000.0,
            "warmup": 1000.0, "settle": 3000.0, "replications": 10}


def base(protocol: str, cfg: dict) -> sim.Scenario:
    start = cfg["start"]
    return sim.Scenario.from_dict({
        "name": f"partition-{protocol}",
        "cluster": {"count": 5},
        "network": {"latency": {"dist": "lognormal", "mu": 0.0, "sigma": 0.5}, "client_latency": 0.5},
        "faults": {"schedule": [{"kind": "partition", "start": start, "end": start + cfg["lengths"][0],
                                "groups": [MINORITY]}]},
        "workload": {"clients": CLIENTS, "mode": "open", "rate": 20, "keys": 10,
                     "read_fraction": READ_FRACTION, "timeout": "1s"},
        "protocol": PROTOCOLS[protocol],
        "run": {"duration": cfg["duration"], "warmup": cfg["warmup"], "settle": cfg["settle"],
                "sample_interval": 20},
    })


def predicted_availability(protocol: str, length: float, span: float) -> float:
    """Overall availability predicted from the partition's share of the measured span (docstring)."""
    share = length / span
    if protocol in ("raft", "quorum"):
        return 1.0 - MINORITY_SHARE * share
    if protocol == "primary_backup":
        return 1.0 - share * (MINORITY_SHARE + (1.0 - MINORITY_SHARE) * (1.0 - READ_FRACTION))
    return 1.0


def experiment(quick: bool, workers: int | None, executor: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = settings(quick)
    span = cfg["duration"] - cfg["warmup"]
    runs, tables = [], []
    for protocol in PROTOCOLS:
        ends = [cfg["start"] + length for length in cfg["lengths"]]
        df = sweep(base(protocol, cfg), {"faults.schedule[0].end": ends}, cfg["replications"], seed=2024,
                   executor=executor, workers=workers, progress=False)
        failed = df[df["error"].notna()]
        if len(failed):
            raise RuntimeError(f"{protocol}: {len(failed)} runs failed, first: {failed['error'].iloc[0]}")
        df.insert(0, "protocol", protocol)
        df.insert(1, "partition_s", (df["faults.schedule[0].end"] - cfg["start"]) / 1000.0)
        runs.append(df)
        s = summarize(df.drop(columns=["protocol", "partition_s"]), METRICS)
        s.insert(0, "protocol", protocol)
        s.insert(1, "partition_s", (s["faults.schedule[0].end"] - cfg["start"]) / 1000.0)
        s["predicted"] = [predicted_availability(protocol, p * 1000.0, span) if m == "availability" else float("nan")
                          for p, m in zip(s["partition_s"], s["metric"])]
        tables.append(s)
    table = pd.concat(tables, ignore_index=True).drop(columns=["faults.schedule[0].end"])
    return table, pd.concat(runs, ignore_index=True)


def figure(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5), constrained_layout=True)
    titles = {"availability": "overall availability", "availability.majority": "majority side (n1-n3)",
              "availability.minority": "minority side (n4, n5)", "latency.read.p99": "read p99",
              "latency.write.p99": "write p99", "staleness.stale_fraction": "stale-read fraction",
              "convergence.after_heal": "convergence after heal"}
    for ax, metric in zip(axes.flat, METRICS):
        metric_vs_factor(table, "partition_s", metric, hue="protocol", ax=ax)
        ax.set_title(titles[metric])
        ax.set_xlabel("partition duration (s)")
        ax.set_xlim(0, table["partition_s"].max() * 1.05)  # linear axis from 0: a linear fall shows as a line
        if metric.startswith("availability"):
            ax.set_ylim(-0.05, 1.05)
        if metric.startswith("latency"):
            ax.set_yscale("log")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    ax = axes.flat[0]
    pred = table[table["metric"] == "availability"]
    for protocol, g in pred.groupby("protocol", sort=True):
        if protocol in CP:
            ax.plot(g["partition_s"], g["predicted"], ls="--", lw=0.9, color="0.4")
    ax.plot([], [], ls="--", color="0.4", label="prediction (CP)")
    handles, labels = axes.flat[1].get_legend_handles_labels()
    h0, l0 = ax.get_legend_handles_labels()
    legend_ax = axes.flat[-1]
    legend_ax.axis("off")
    legend_ax.legend(handles + h0[-1:], [lab.replace("protocol = ", "") for lab in labels] + l0[-1:],
                     loc="center", title="mean, 95% CI band")
    fig.suptitle("Minority (2 of 5 nodes) cut off for L seconds")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = experiment_parser(__doc__, out="out/partition_duration",
                           quick="3 partition lengths, 3 short runs each")
    args = parse_experiment_args(ap, argv)
    t0 = time.perf_counter()
    table, runs = experiment(args.quick, args.workers, args.executor)
    table.to_csv(args.out / "partition_duration.csv", index=False)
    runs.to_csv(args.out / "partition_runs.csv", index=False)
    figure(table, args.out / "partition_duration.png")
    wide = table.pivot_table(index=["protocol", "partition_s"], columns="metric", values="mean", sort=False)
    wide = wide[METRICS].rename(columns=lambda c: c.replace("availability", "avail").replace("latency.", "")
                               .replace("staleness.", "").replace("convergence.", "conv."))
    pred = table[table["metric"] == "availability"].set_index(["protocol", "partition_s"])["predicted"]
    wide.insert(1, "predicted", pred)
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(runs)} runs in {time.perf_counter() - t0:.1f} s -> {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
