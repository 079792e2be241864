"""Staleness of reads: k-staleness per read, stale-read counts and t-visibility.

A key's committed versions are its ``ok`` writes (and ``ok`` compare-and-sets,
writes of their new value; an ``info`` one counts as an ``info`` write); a write
*commits* when its client sees it complete. For a read that started at ``s`` and returned the value
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

**Cost.** Every key's ok writes are sorted once by commit time; a read finds the
writes committed before it by binary search, and counts those invoked after its
value's write completed among the ones that completed after it (usually a few;
a merge-sort tree over the writes' invoke times when many, :func:`count_greater`).
So a history of ``n`` operations costs ``O(n log n)`` whatever the number of
keys, instead of reads x writes per key.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["read_staleness", "staleness_summary", "t_visibility", "count_greater"]

#: value types looked up directly (the common case; :func:`_settled_time` does the rest)
_PLAIN = frozenset({int, str, float, type(None)})
_COLUMNS = ["op_id", "key", "invoke", "value", "k", "stale", "since_commit"]


def read_staleness(history: pd.DataFrame) -> pd.DataFrame:
    """One row per ok read: ``op_id, key, invoke, value, k, stale, since_commit``.

    ``since_commit`` is ``invoke`` minus the commit time of the newest write
    committed before the read started (NaN when there was none). Rows are in
    ``invoke`` order (ties: by key, then history order). Reads and writes without
    a key (None or NaN) are left out.
    """
    found = _staleness(history)
    if found is None:
        return pd.DataFrame([], columns=_COLUMNS)
    reads, r_key, uniques, k, since = found
    s = history["invoke"].to_numpy(dtype=float)[reads]
    values = history["value"].to_numpy(dtype=object)[reads]
    order = np.lexsort((reads, r_key, s))
    out = pd.DataFrame({
        "op_id": history["op_id"].to_numpy()[reads][order],
        "key": pd.Series(uniques[r_key[order]], dtype=object),
        "invoke": s[order],
        "value": pd.Series(values[order], dtype=object),
        "k": k[order],
        "stale": k[order] > 0,
        "since_commit": since[order],
    })
    return out.infer_objects()


def _staleness(h: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The ok reads with a key (history rows, in history order), their key codes, the keys, and
    each read's ``k`` and ``since_commit``; None when there are no such reads."""
    codes, uniques = pd.factorize(h["key"], sort=True)  # key order; -1: no key
    op = h["op"].to_numpy()
    ok = (h["outcome"] == "ok").to_numpy()
    keyed = codes >= 0
    reads = np.flatnonzero((op == "read") & ok & keyed)
    if len(reads) == 0:
        return None
    invoke = h["invoke"].to_numpy(dtype=float)
    complete = h["complete"].to_numpy(dtype=float)
    is_write = (op == "write") & keyed
    values = h["value"].to_numpy(dtype=object)
    is_cas = (op == "cas") & keyed & (h["outcome"] != "fail").to_numpy()
    if is_cas.any():  # an applied (or maybe applied) cas is a write of its new value
        values = values.copy()
        for i in np.flatnonzero(is_cas).tolist():
            values[i] = values[i][1]
        is_write = is_write | is_cas

    # the ok writes, sorted by (key, commit time)
    oks = np.flatnonzero(is_write & ok)
    oks = oks[np.lexsort((complete[oks], codes[oks]))]
    w_key, w_done, w_inv = codes[oks].astype(np.int64), complete[oks], invoke[oks]

    # reads: the first ok write of their key, and how many of the key's writes committed before them
    r_key, s = codes[reads].astype(np.int64), invoke[reads]
    first = np.searchsorted(w_key, r_key, side="left")
    times = np.unique(np.concatenate([w_done, s]))
    span = len(times) + 1
    w_pos = w_key * span + np.searchsorted(times, w_done)  # (key, commit) as one sortable integer
    committed = np.searchsorted(w_pos, r_key * span + np.searchsorted(times, s), side="left") - first
    since = s - np.append(w_done, math.nan)[np.where(committed > 0, first + committed - 1, -1)]  # NaN: none yet

    # when each read's value had certainly taken effect (None: the initial value or unknown)
    settled = _settled_by_key(codes[is_write], values[is_write], ok[is_write], complete[is_write], len(uniques))
    done = [settled[c].get(v) if type(v) in _PLAIN else _settled_time(v, settled[c])
            for c, v in zip(r_key.tolist(), values[reads].tolist())]
    del settled
    unknown = np.fromiter((d is None for d in done), dtype=bool, count=len(done))
    bound = np.fromiter((math.inf if d is None else d for d in done), dtype=float, count=len(done))
    del done
    # writes committed before the read and invoked after its value's write completed; only writes
    # that completed after it can qualify (invoke <= complete), so start the search past those
    at_or_before = np.searchsorted(times, bound, side="right") - 1  # the last time <= bound
    past = np.searchsorted(w_pos, r_key * span + at_or_before, side="right")
    end = first + committed
    later = count_greater(w_inv, np.where(np.isfinite(bound), np.minimum(past, end), end), end, bound)
    k = np.where(unknown, committed, later).astype(np.int64)
    return reads, r_key, uniques.to_numpy(dtype=object), k, since


def count_greater(ys: np.ndarray, lo: np.ndarray, hi: np.ndarray, bounds: np.ndarray, *,
                  direct: int = 16) -> np.ndarray:
    """For each query ``i``: how many of ``ys[lo[i]:hi[i]]`` are greater than ``bounds[i]``.

    Ranges of at most ``direct`` values are compared element by element (a
    staleness query's range is usually a few writes); longer ones are counted as
    the difference of two prefixes with :func:`_count_greater_in_prefix`. The
    answer does not depend on ``direct``. A NaN bound counts nothing.
    """
    ys = np.asarray(ys, dtype=float)
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=float)
    length = np.maximum(hi - lo, 0)
    out = np.zeros(len(lo), dtype=np.int64)
    todo = np.flatnonzero((length > 0) & (length <= direct))
    step = 0
    while len(todo):
        out[todo] += ys[lo[todo] + step] > bounds[todo]
        step += 1
        todo = todo[length[todo] > step]
    wide = np.flatnonzero(length > direct)
    if len(wide):
        both = _count_greater_in_prefix(ys, np.concatenate([hi[wide], lo[wide]]),
                                        np.concatenate([bounds[wide], bounds[wide]]))
        out[wide] = both[:len(wide)] - both[len(wide):]
    return out


def _count_greater_in_prefix(ys: np.ndarray, ends: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """For each query ``i``: how many of ``ys[:ends[i]]`` are greater than ``bounds[i]``.

    A merge-sort tree, built and queried level by level with numpy: at level ``l``
    the positions fall in blocks of ``2**l``, each block's values sorted; a prefix
    ``[0, end)`` is the union of one block per set bit of ``end``, and each block is
    counted with one binary search. ``O((n + q) log n)`` for ``n`` values and ``q``
    queries.
    """
    n = len(ys)
    out = np.zeros(len(ends), dtype=np.int64)
    if n == 0:
        return out
    ranked = np.sort(ys)
    rank = np.searchsorted(ranked, ys, side="left")  # y > b  <=>  rank(y) >= #(ys <= b)
    floor = np.where(np.isnan(bounds), n, np.searchsorted(ranked, bounds, side="right"))
    tree = np.arange(n, dtype=np.int64) * n + rank  # level 0: blocks of one
    level = 0
    while (1 << level) <= n:
        if level:  # merge pairs of sorted blocks (runs, so the stable sort is a merge)
            tree = np.sort(((tree // n) >> 1) * n + tree % n, kind="stable")
        use = ((ends >> level) & 1) == 1
        if use.any():
            block = (ends[use] >> level) - 1
            inside = np.searchsorted(tree, block * n + floor[use], side="left")
            out[use] += ((block + 1) << level) - inside
        level += 1
    return out


def _settled_by_key(codes: np.ndarray, values: np.ndarray, ok: np.ndarray, complete: np.ndarray,
                    nkeys: int) -> list[dict[Any, float]]:
    """Per key code, value -> when its write had certainly taken effect.

    The completion of its (last) ok write; ``inf`` for a value only written by
    writes that did not complete ok (never counted as superseded).
    """
    settled: list[dict[Any, float]] = [{} for _ in range(nkeys)]
    for c, v, good, t in zip(codes.tolist(), values.tolist(), ok.tolist(), complete.tolist()):
        if good:
            settled[c][v] = t
        else:
            settled[c].setdefault(v, math.inf)
    return settled


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
    found = _staleness(history)
    k = np.zeros(0, dtype=np.int64)
    if found is not None:
        reads, _, _, k, _ = found
        invoke = history["invoke"].to_numpy(dtype=float)[reads]
        k = k[(invoke >= warmup) & (invoke < duration)]
    n = len(k)
    stale = k > 0
    return {
        "staleness.reads": n,
        "staleness.stale_reads": int(stale.sum()),
        "staleness.stale_fraction": float(stale.mean()) if n else math.nan,
        "staleness.k_mean": float(k.mean()) if n else math.nan,
        "staleness.k_max": int(k.max()) if n else 0,
    }


def t_visibility(history: pd.DataFrame, edges: np.ndarray | list[float], confidence: float = 0.95) -> pd.DataFrame:
    """P(consistent read) by time since the newest commit, per bin ``[edges[i], edges[i+1])``.

    Columns: ``t_low, t_high, reads, consistent, p_consistent, ci_low, ci_high``
    (Clopper-Pearson interval; NaN for empty bins).
    """
    from scipy import stats  # only here: every run imports this module, few ask for intervals

    found = _staleness(history)
    since, fresh = np.zeros(0), np.zeros(0, dtype=bool)
    if found is not None:
        _, _, _, k, since = found
        fresh = (k == 0)[~np.isnan(since)]
        since = since[~np.isnan(since)]
    edges = np.asarray(edges, dtype=float)
    idx = np.searchsorted(edges, since, side="right") - 1
    rows = []
    for i in range(len(edges) - 1):
        mask = idx == i
        n, c = int(mask.sum()), int(fresh[mask].sum())
        if n:
            ci = stats.binomtest(c, n).proportion_ci(confidence)
            rows.append((edges[i], edges[i + 1], n, c, c / n, ci.low, ci.high))
        else:
            rows.append((edges[i], edges[i + 1], 0, 0, math.nan, math.nan, math.nan))
    return pd.DataFrame(rows, columns=["t_low", "t_high", "reads", "consistent", "p_consistent", "ci_low", "ci_high"])
