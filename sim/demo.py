"""``capsim demo``: the CAP trade-off in numbers and pictures.

Five nodes; from 3 s to 7 s a partition cuts n4 and n5 (a minority) off from
n1..n3. The same clients, the same workload and the same partition run against
four protocols:

- Raft and a majority quorum (N=5, R=W=3, ABD) stay consistent (linearizable) and
  refuse service on the minority side: CP;
- eventual consistency (last-writer-wins, anti-entropy) answers everyone and
  serves stale reads, then converges after the heal: AP;
- synchronous primary-backup with a fixed primary (n1) refuses writes while a
  backup is unreachable and everything on the side without the primary.

It prints one comparison table and writes it (``comparison.csv``) with figures
to the output folder: availability over time with the partition shaded, latency
CDFs, staleness (t-visibility), replica divergence, and a space-time diagram of
the messages around the moment the partition starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .outdir import check_out, staged, wrote
from .scenario import Scenario

__all__ = ["DEMO_BASE", "DEMO_PROTOCOLS", "demo_scenarios", "compare", "run_demo"]

DEMO_BASE: dict[str, Any] = {
    "name": "cap-demo",
    "description": "5 nodes; {n4, n5} cut off from 3 s to 7 s",
    "cluster": {"count": 5},
    "network": {"latency": {"dist": "lognormal", "mu": 0.0, "sigma": 0.5}, "client_latency": "0.2ms"},
    "faults": {"schedule": [{"kind": "partition", "start": "3s", "end": "7s", "groups": [["n4", "n5"]]}]},
    "workload": {"clients": 10, "rate": 25, "keys": 8, "read_fraction": 0.5, "timeout": "300ms"},
    "run": {"duration": "10s", "warmup": "1s", "settle": "1s", "seed": 42, "timeline_window": "250ms"},
}

DEMO_PROTOCOLS: dict[str, dict[str, Any]] = {
    "raft": {"name": "raft"},
    "quorum N=5 R=W=3": {"name": "quorum", "replicas": 5, "r": 3, "w": 3, "mode": "abd"},
    "eventual (LWW)": {"name": "eventual", "conflict": "lww"},
    "primary-backup (sync)": {"name": "primary_backup", "replication": "sync", "primary": "fixed"},
}


def demo_scenarios(protocols: dict[str, dict[str, Any]] | None = None,
                   base: dict[str, Any] | None = None) -> dict[str, Scenario]:
    """One scenario per protocol: the same cluster, network, faults and workload."""
    base = base or DEMO_BASE
    return {label: Scenario.from_dict({**base, "name": label, "protocol": proto})
            for label, proto in (protocols or DEMO_PROTOCOLS).items()}


def compare(results: dict[str, Any], *, linearizability_limit: float = 20.0) -> pd.DataFrame:
    """The comparison table: one row per protocol."""
    from .checkers import check_linearizable

    rows = []
    for label, r in results.items():
        s = r.summary
        lin = check_linearizable(r.history, time_limit=linearizability_limit)
        verdict = {True: "yes", False: "no", None: "timeout"}[lin.linearizable]
        rows.append({
            "protocol": label,
            "availability": s["availability"],
            "majority side": s["availability.majority"],
            "minority side": s["availability.minority"],
            "read p50 ms": s["latency.read.p50"],
            "read p99 ms": s["latency.read.p99"],
            "write p50 ms": s["latency.write.p50"],
            "write p99 ms": s["latency.write.p99"],
            "stale reads": s.get("staleness.stale_reads", math.nan),
            "linearizable": verdict,
            "converged after heal ms": s.get("convergence.after_heal", math.nan),
            "msgs/op": s["messages.per_op"],
        })
    return pd.DataFrame(rows)


def _format_table(table: pd.DataFrame) -> str:
    fmt = table.copy()
    for col in ("availability", "majority side", "minority side"):
        fmt[col] = fmt[col].map(lambda v: "-" if pd.isna(v) else f"{100 * v:.1f}%")
    for col in ("read p50 ms", "read p99 ms", "write p50 ms", "write p99 ms", "converged after heal ms", "msgs/op"):
        fmt[col] = fmt[col].map(lambda v: "-" if pd.isna(v) else f"{v:.1f}")
    fmt["stale reads"] = fmt["stale reads"].map(lambda v: "-" if pd.isna(v) else f"{int(v)}")
    return fmt.to_string(index=False)


def run_demo(out: str | Path = "out/demo", seed: int | None = None,
             protocols: dict[str, dict[str, Any]] | None = None) -> int:
    from .runner import run

    target = check_out(out, kind="demo")
    scenarios = demo_scenarios(protocols)
    first = next(iter(scenarios))
    results = {}
    for label, scenario in scenarios.items():
        if label == first:  # keep a message trace of one run for the space-time diagram
            scenario = scenario.variant({"run.trace": True})
        results[label] = run(scenario, seed=seed)
        print(f"  ran {label:<24} {results[label].runtime:5.2f} s", flush=True)
    table = compare(results)
    print()
    print(_format_table(table))
    with staged(target, "demo") as stage:
        _write(stage.path, table, results, scenarios[first])
    print(f"\n{wrote(target, 'demo')}")
    return 0


def _write(out: Path, table: pd.DataFrame, results: dict[str, Any], traced: Scenario) -> None:
    """The comparison table, the figures and every run's result folder (under runs/)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .checkers.staleness import t_visibility
    from .plots import availability_timeline, divergence_timeline, lamport_diagram, latency_cdf, t_visibility_curves

    first = next(iter(results))
    table.to_csv(out / "comparison.csv", index=False)

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.3 * len(results)), sharex=True, constrained_layout=True)
    for ax, (label, r) in zip(np.atleast_1d(axes), results.items()):
        availability_timeline(r, ax=ax, title=label)
        if ax is not np.atleast_1d(axes)[-1]:
            ax.set_xlabel("")
    fig.savefig(out / "availability.png", dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    latency_cdf(results, "read", ax=a1)
    latency_cdf(results, "write", ax=a2)
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)

    edges: list[float] = [0, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
    curves = {label: t_visibility(r.history, edges) for label, r in results.items()}
    ax = t_visibility_curves(curves)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, edges[-1])
    ax.figure.savefig(out / "staleness.png", dpi=110)
    plt.close(ax.figure)

    ax = divergence_timeline(results)
    ax.figure.savefig(out / "divergence.png", dpi=110)
    plt.close(ax.figure)

    start = traced.faults.schedule[0].start
    ax = lamport_diagram(results[first], start - 10, start + 15, title=f"{first}: messages around the partition start")
    ax.figure.savefig(out / "spacetime.png", dpi=110)
    plt.close(ax.figure)
    for label, r in results.items():
        r.save(out / "runs" / label.split()[0].replace("(", "").replace(")", ""))
