"""Lost writes: acknowledged writes that lost to a write finished before they began.

A write ``w`` to key ``k`` is *lost in real time* when some other write ``w0``
to ``k`` completed before ``w`` was invoked (so every user would call ``w`` the
newer one) and yet the system ordered ``w0`` after ``w``: wherever the two met,
``w0`` won. Last-writer-wins replication with skewed clocks does exactly this
(a node whose clock is behind stamps its writes in the past). Concurrent
writes that lose are not counted: no real-time order says which should win.

Two ways to know the system's order:

* ``order`` given: a mapping from write value to a sortable rank (e.g. the
  LWW timestamp ``(clock, node, seq)`` the protocol gave it). Exact.
* ``order`` omitted: evidence from reads. A read at node ``X`` invoked after
  an ``ok`` write ``w`` that went to ``X`` completed, returning the value of a
  write ``w0`` that completed before ``w`` was invoked, shows that ``X`` holds
  ``w0`` over ``w``. Sound for protocols whose replica at ``X`` only moves to
  newer versions and applies a write before acknowledging it (eventual LWW);
  a lower bound, since a loss nobody reads is not seen.

Only ``ok`` writes count, as losers and as winners (an ``info`` write has no
completion time). Values must identify writes (capsim's are unique integers).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["lost_writes", "LostWritesResult"]


@dataclass(frozen=True, eq=False)
class LostWritesResult:
    """``count`` lost writes; ``lost`` holds their history rows plus a ``beaten_by``
    column (the value of an earlier-completed write that won over each one);
    ``method`` is ``"order"`` or ``"reads"``."""

    count: int
    lost: pd.DataFrame
    method: str


def lost_writes(history: pd.DataFrame, order: Mapping[Any, Any] | None = None) -> LostWritesResult:
    """Count acknowledged writes overwritten by a write that completed before they were invoked."""
    ok = (history["outcome"] == "ok").to_numpy()
    op = history["op"].to_numpy()
    writes = history[ok & (op == "write")]  # one selection: the history can be millions of rows
    if order is not None:
        beaten = _by_order(writes, order)
        method = "order"
    else:
        beaten = _by_reads(writes, history[ok & (op == "read")])
        method = "reads"
    rows = list(beaten)
    lost = writes.loc[rows].copy() if rows else writes.iloc[0:0].copy()
    lost["beaten_by"] = [beaten[pos] for pos in rows]
    lost = lost.sort_values("invoke", kind="stable")
    return LostWritesResult(len(lost), lost, method)


def _by_order(writes: pd.DataFrame, order: Mapping[Any, Any]) -> dict[Any, Any]:
    """{row label of a lost write: value of the write that beat it}, using the system's order.

    Per key, in order of completion (ties: row label), the running highest-ranked
    write; each write is compared with the highest one completed before it was
    invoked (the first to reach that rank). Sorting and binary search over all
    keys at once: ``O(n log n)``.
    """
    values = writes["value"].to_numpy(dtype=object)
    ranked = np.fromiter((v in order for v in values), dtype=bool, count=len(values))
    key_codes, _ = pd.factorize(writes["key"], sort=True)  # key order; -1: no key
    rows = np.flatnonzero(ranked & (key_codes >= 0))
    if len(rows) < 2:
        return {}
    labels = writes.index[rows]
    tie = np.empty(len(rows), dtype=np.int64)
    tie[np.asarray(labels.argsort(kind="stable"))] = np.arange(len(rows))
    key = key_codes[rows].astype(np.int64)
    invoke = writes["invoke"].to_numpy(dtype=float)[rows]
    complete = writes["complete"].to_numpy(dtype=float)[rows]
    value = values[rows]
    rank = _dense_ranks([order[v] for v in value])

    by_complete = np.lexsort((tie, complete, key))
    levels = int(rank.max()) + 1
    best = np.maximum.accumulate(key[by_complete] * levels + rank[by_complete])  # resets per key: key dominates
    times = np.unique(np.concatenate([complete, invoke]))
    span = len(times) + 1
    done_pos = key[by_complete] * span + np.searchsorted(times, complete[by_complete])
    # how many of the key's writes (and of earlier keys) completed before each write was invoked
    before = np.searchsorted(done_pos, key * span + np.searchsorted(times, invoke), side="left")
    first = np.searchsorted(key[by_complete], key, side="left")
    seen = before > first
    top = best[np.maximum(before - 1, 0)]
    lost = seen & (top - key * levels > rank)
    winner = by_complete[np.searchsorted(best, top, side="left")]
    hits = np.lexsort((tie, invoke, key))
    hits = hits[lost[hits]]
    return dict(zip(labels[hits].tolist(), value[winner[hits]].tolist()))


def _dense_ranks(ranks: list[Any]) -> np.ndarray:
    """Integer codes with the order of ``ranks`` (equal ranks share a code)."""
    idx = sorted(range(len(ranks)), key=ranks.__getitem__)
    ordered = [ranks[i] for i in idx]
    steps = np.fromiter((a < b for a, b in zip(ordered, ordered[1:])), dtype=np.int64, count=max(len(idx) - 1, 0))
    codes = np.empty(len(ranks), dtype=np.int64)
    codes[np.asarray(idx, dtype=np.int64)] = np.concatenate([[0], np.cumsum(steps)])
    return codes


def _by_reads(writes: pd.DataFrame, reads: pd.DataFrame) -> dict[Any, Any]:
    """{row label of a lost write: value of the write that beat it}, from reads at the write's node."""
    done = {v: c for v, c in zip(writes["value"], writes["complete"]) if isinstance(v, Hashable)}
    groups: dict[tuple[Any, Any], tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]] = {}
    for (key, node), g in writes.groupby(["key", "node"], sort=True):
        groups[(key, node)] = (g["invoke"].to_numpy(float), g["complete"].to_numpy(float),
                               g["value"].to_numpy(object), list(g.index))
    out: dict[Any, Any] = {}
    for key, node, invoke, value in zip(reads["key"], reads["node"], reads["invoke"], reads["value"]):
        if not isinstance(value, Hashable) or value is None or isinstance(value, tuple):
            continue  # nothing written yet, or siblings: no single winner to blame
        if isinstance(value, float) and math.isnan(value):
            continue
        won_done = done.get(value)
        group = groups.get((key, node))
        if won_done is None or group is None:
            continue
        w_inv, w_comp, w_val, labels = group
        hit = (w_inv > won_done) & (w_comp < invoke) & (w_val != value)
        for j in np.flatnonzero(hit).tolist():
            out.setdefault(labels[j], value)
    return out
