"""Staleness of reads: k-staleness per read, stale-read counts and t-visibility.

A key's committed versions are its ``ok`` writes; a write *commits* when its
client sees it complete. For a read that started at ``s`` and returned the value
of write ``v``, the read is *k versions stale* where ``k`` counts the writes that
committed before ``s`` and were invoked after ``v`` completed: writes that
certainly superseded ``v`` in real time before the read began. Concurrent writes
never make each other stale (either order is a valid history), so for writes that
do not overlap this is exactly "how many versions behind the newest committed
version" (the PBS definition). The initial value (``None``) is superseded by every
write committed before ``s``; a value from a write that did not complete ``ok``
(``info``) is never counted as superseded. With siblings (a tuple or set of
values) the freshest sibling counts.

t-visibility (PBS): the probability that a read starting ``t`` ms after a write
committed returns that write or a newer one, estimated from every ok read paired
with the newest write committed before it started.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["read_staleness", "staleness_summary", "t_visibility"]


def read_staleness(history: pd.DataFrame) -> pd.DataFrame:
    """One row per ok read: ``op_id, key, invoke, value, k, stale, since_commit``.

    ``since_commit`` is ``invoke`` minus the commit time of the newest write
    committed before the read started (NaN when there was none).
    """
    h = history
    writes = h[h["op"] == "write"]
    reads = h[(h["op"] == "read") & (h["outcome"] == "ok")]
    rows: list[tuple] = []
    for key, kreads in reads.groupby("key", sort=True):
        kw = writes[writes["key"] == key]
        ok = kw[kw["outcome"] == "ok"]
        w_inv = ok["invoke"].to_numpy(dtype=float)
        w_done = ok["complete"].to_numpy(dtype=float)
        commits = np.sort(w_done)
        # the time after which a write certainly had taken effect (inf: unknown)
        settled: dict[Any, float] = dict.fromkeys(kw["value"], math.inf)
        settled.update(zip(ok["value"], w_done))
        for op_id, s, v in zip(kreads["op_id"], kreads["invoke"].to_numpy(dtype=float), kreads["value"]):
            committed = w_done < s
            n = int(np.searchsorted(commits, s, side="left"))
            done = _settled_time(v, settled)
            k = int(committed.sum()) if done is None else int((committed & (w_inv > done)).sum())
            since = s - commits[n - 1] if n > 0 else math.nan
            rows.append((op_id, key, s, v, k, k > 0, since))
    out = pd.DataFrame(rows, columns=["op_id", "key", "invoke", "value", "k", "stale", "since_commit"])
    return out.sort_values("invoke", kind="stable").reset_index(drop=True)


def _settled_time(value: Any, settled: dict[Any, float]) -> float | None:
    """When the write of ``value`` had certainly taken effect (None: the initial value or unknown)."""
    if isinstance(value, (tuple, list, frozenset, set)):
        times = [settled[v] for v in value if _hashable(v) and v in settled]
        return max(times) if times else None
    if not _hashable(value):
        return None
    return settled.get(value)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def staleness_summary(history: pd.DataFrame, warmup: float = 0.0, duration: float = math.inf) -> dict[str, Any]:
    """Flat staleness numbers for reads invoked in ``[warmup, duration)``."""
    st = read_staleness(history)
    st = st[(st["invoke"] >= warmup) & (st["invoke"] < duration)]
    n = len(st)
    return {
        "staleness.reads": n,
        "staleness.stale_reads": int(st["stale"].sum()),
        "staleness.stale_fraction": float(st["stale"].mean()) if n else math.nan,
        "staleness.k_mean": float(st["k"].mean()) if n else math.nan,
        "staleness.k_max": int(st["k"].max()) if n else 0,
    }


def t_visibility(history: pd.DataFrame, edges: np.ndarray | list[float], confidence: float = 0.95) -> pd.DataFrame:
    """P(consistent read) by time since the newest commit, per bin ``[edges[i], edges[i+1])``.

    Columns: ``t_low, t_high, reads, consistent, p_consistent, ci_low, ci_high``
    (Clopper-Pearson interval; NaN for empty bins).
    """
    from scipy import stats  # only here: every run imports this module, few ask for intervals

    st = read_staleness(history)
    st = st[st["since_commit"].notna()]
    edges = np.asarray(edges, dtype=float)
    idx = np.searchsorted(edges, st["since_commit"].to_numpy(), side="right") - 1
    rows = []
    fresh = (~st["stale"]).to_numpy()
    for i in range(len(edges) - 1):
        mask = idx == i
        n, c = int(mask.sum()), int(fresh[mask].sum())
        if n:
            ci = stats.binomtest(c, n).proportion_ci(confidence)
            rows.append((edges[i], edges[i + 1], n, c, c / n, ci.low, ci.high))
        else:
            rows.append((edges[i], edges[i + 1], 0, 0, math.nan, math.nan, math.nan))
    return pd.DataFrame(rows, columns=["t_low", "t_high", "reads", "consistent", "p_consistent", "ci_low", "ci_high"])
