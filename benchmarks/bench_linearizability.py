"""Linearizability checker speed on histories of a real concurrent register.

The histories come from capsim itself: a single-copy key-value store (one
owner node, the other nodes forward to it) under open-loop clients whose
operations overlap, over a lossy network so that some operations time out and
end ``info``. Each history is checked as recorded (it must pass) and with one
read made stale (it must fail, with a small counterexample). Two workloads:
10 keys (the target case: 10,000 operations in well under a few seconds) and
a single hot key where every client contends.

    python benchmarks/bench_linearizability.py [--quick] [--seed N] [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd

from sim import Scenario, run
from sim.checkers import check_linearizable


def register_history(ops: int, keys: int, seed: int) -> pd.DataFrame:
    """About ``ops`` operations of 10 open-loop clients on capsim's single-copy store."""
    clients, rate = 10, 200.0  # operations per second per client
    scenario = Scenario.from_dict({
        "cluster": {"count": 3},
        "network": {"latency": {"dist": "exponential", "mean": 2.0}, "loss": 0.005},
        "workload": {"clients": clients, "rate": rate, "keys": keys, "read_fraction": 0.5,
                     "timeout": 25.0, "target": "random"},
        "protocol": {"name": "single_copy"},
        "run": {"duration": 1000.0 * ops / (clients * rate)},
    })
    return run(scenario, seed=seed).history


def inject_stale_read(df: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """Give one ok read a value overwritten (by a write completed before the read began) earlier."""
    writes: dict[Any, tuple[np.ndarray, np.ndarray, list[Any]]] = {}
    ok_writes = df[(df["op"] == "write") & (df["outcome"] == "ok")].sort_values("complete")
    for key, g in ok_writes.groupby("key"):
        writes[key] = (g["complete"].to_numpy(), np.maximum.accumulate(g["invoke"].to_numpy()), g["value"].tolist())
    candidates: list[tuple[int, list[Any]]] = []
    reads = df[(df["op"] == "read") & (df["outcome"] == "ok")]
    for idx, key, invoke, value in zip(reads.index, reads["key"], reads["invoke"], reads["value"]):
        if key not in writes:
            continue
        complete, latest_invoke, values = writes[key]
        before = int(np.searchsorted(complete, invoke, side="left"))
        if before == 0:
            continue
        overwritten = int(np.searchsorted(complete, latest_invoke[before - 1], side="left"))
        stale = [v for v in values[:overwritten] if v != value]
        if stale:
            candidates.append((idx, stale))
    # the latest half of candidate reads: the search has the most history behind them
    idx, stale = candidates[int(rng.integers(len(candidates) // 2, len(candidates)))]
    out = df.copy()
    out.at[idx, "value"] = stale[int(rng.integers(len(stale)))]
    return out, idx


def overlap(df: pd.DataFrame) -> float:
    """Mean number of operations in flight on the same key when an operation is invoked."""
    total = 0
    for _, g in df.groupby("key"):
        inv = np.sort(g["invoke"].to_numpy())
        done = np.sort(g["complete"].fillna(np.inf).to_numpy())
        total += int((np.arange(len(inv)) - np.searchsorted(done, inv, side="right")).sum())
    return total / max(1, len(df))


def timed(df: pd.DataFrame, repeat: int):
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = check_linearizable(df)
        best = min(best, time.perf_counter() - t0)
    return best, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 operations instead of 10,000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (best is shown)")
    args = ap.parse_args()
    ops = 2_000 if args.quick else 10_000
    rng = np.random.default_rng(args.seed)
    print(f"{'case':<28} {'ops':>7} {'keys':>4} {'overlap':>7} {'info':>5} {'verdict':>8} {'seconds':>8} "
          f"{'ops/s':>10} {'cex':>4}")
    ok = True
    for keys in (10, 1):
        good = register_history(ops, keys, args.seed)
        bad, idx = inject_stale_read(good, rng)
        cases = ((f"recorded, {keys} key(s)", good, True), (f"one stale read, {keys} key(s)", bad, False))
        for name, df, expect in cases:
            seconds, res = timed(df, args.repeat)
            cex = "-" if res.counterexample is None else str(len(res.counterexample))
            print(f"{name:<28} {len(df):>7} {keys:>4} {overlap(df):>7.2f} {int((df['outcome'] == 'info').sum()):>5} "
                  f"{str(res.linearizable):>8} {seconds:>8.3f} {len(df) / seconds:>10,.0f} {cex:>4}")
            if res.linearizable is not expect or (not expect and idx not in res.counterexample.index):
                ok = False
                print(f"  UNEXPECTED: {res.explanation}")
            elif not expect:
                print(f"  {res.explanation}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
