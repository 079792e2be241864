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
    ok = history[history["outcome"] == "ok"]
    writes = ok[ok["op"] == "write"]
    if order is not None:
        beaten = _by_order(writes, order)
        method = "order"
    else:
        beaten = _by_reads(writes, ok[ok["op"] == "read"])
        method = "reads"
    rows = list(beaten)
    lost = writes.loc[rows].copy() if rows else writes.iloc[0:0].copy()
    lost["beaten_by"] = [beaten[pos] for pos in rows]
    lost = lost.sort_values("invoke", kind="stable")
    return LostWritesResult(len(lost), lost, method)


def _by_order(writes: pd.DataFrame, order: Mapping[Any, Any]) -> dict[Any, Any]:
    """{row label of a lost write: value of the write that beat it}, using the system's order."""
    out: dict[Any, Any] = {}
    for _key, group in writes.groupby("key", sort=True):
        labels = [lab for lab, v in zip(group.index, group["value"]) if v in order]
        if len(labels) < 2:
            continue
        g = group.loc[labels]
        by_complete = sorted(zip(g["complete"], g.index, g["value"]), key=lambda t: (t[0], t[1]))
        by_invoke = sorted(zip(g["invoke"], g.index, g["value"]), key=lambda t: (t[0], t[1]))
        best: tuple[Any, Any] | None = None  # (rank, value) of the highest-ranked write done so far
        i = 0
        for invoke, label, value in by_invoke:
            while i < len(by_complete) and by_complete[i][0] < invoke:
                rank = order[by_complete[i][2]]
                if best is None or rank > best[0]:
                    best = (rank, by_complete[i][2])
                i += 1
            if best is not None and best[0] > order[value]:
                out[label] = best[1]
    return out


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
