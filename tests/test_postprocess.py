"""Post-processing at scale: staleness, t-visibility, convergence and lost writes equal simple references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from sim.checkers.convergence import convergence_summary
from sim.checkers.lost_writes import lost_writes
from sim.checkers.staleness import count_greater, read_staleness, staleness_summary, t_visibility
from sim.history import History

# -- references: the straightforward (quadratic) implementations the fast ones replaced -----------------


def old_read_staleness(history: pd.DataFrame) -> pd.DataFrame:
    """capsim's earlier read_staleness, reads x writes per key: the oracle for the fast one."""
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
        settled: dict[Any, float] = dict.fromkeys(kw["value"], math.inf)
        settled.update(zip(ok["value"], w_done))
        for op_id, s, v in zip(kreads["op_id"], kreads["invoke"].to_numpy(dtype=float), kreads["value"]):
            committed = w_done < s
            n = int(np.searchsorted(commits, s, side="left"))
            done = _old_settled_time(v, settled)
            k = int(committed.sum()) if done is None else int((committed & (w_inv > done)).sum())
            since = s - commits[n - 1] if n > 0 else math.nan
            rows.append((op_id, key, s, v, k, k > 0, since))
    out = pd.DataFrame(rows, columns=["op_id", "key", "invoke", "value", "k", "stale", "since_commit"])
    return out.sort_values("invoke", kind="stable").reset_index(drop=True)


def _old_settled_time(value: Any, settled: dict[Any, float]) -> float | None:
    if isinstance(value, (tuple, list, frozenset, set)):
        times = [settled[v] for v in value if v in settled]
        return max(times) if times else None
    return settled.get(value)


def old_by_order(writes: pd.DataFrame, order: dict[Any, Any]) -> dict[Any, Any]:
    """capsim's earlier lost-writes-by-order scan (a Python loop per key): the oracle."""
    out: dict[Any, Any] = {}
    for _key, group in writes.groupby("key", sort=True):
        labels = [lab for lab, v in zip(group.index, group["value"]) if v in order]
        if len(labels) < 2:
            continue
        g = group.loc[labels]
        by_complete = sorted(zip(g["complete"], g.index, g["value"]), key=lambda t: (t[0], t[1]))
        by_invoke = sorted(zip(g["invoke"], g.index, g["value"]), key=lambda t: (t[0], t[1]))
        best: tuple[Any, Any] | None = None
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


def reference_convergence(samples: pd.DataFrame, heal: float, last_write: float) -> tuple[float, float]:
    """after_heal and after_quiesce by their definitions, one sample at a time."""
    times, keys, div = list(samples["time"]), list(samples["keys"]), list(samples["divergent"])
    after_heal = math.nan
    later = [i for i, t in enumerate(times) if t >= heal] if math.isfinite(heal) else []
    if later:
        first = later[0]
        for i in later:
            if all(any(k not in keys[j] for j in later if first <= j <= i) for k in keys[first]):
                after_heal = times[i] - heal
                break
    ref = max([x for x in (heal, last_write) if math.isfinite(x)], default=math.nan)
    after_quiesce = math.nan
    if math.isfinite(ref):
        for t in times:
            if t >= ref and all(d == 0 for tt, d in zip(times, div) if tt >= t):
                after_quiesce = t - ref
                break
    return after_heal, after_quiesce


# -- histories ------------------------------------------------------------------------------------------


def random_history(n: int, keys: int, seed: int, *, siblings: bool = True) -> pd.DataFrame:
    """Overlapping writes and reads on a few keys; info and fail outcomes; reads of old, unknown,
    initial (None) and sibling values; ties in times (rounded)."""
    rng = np.random.default_rng(seed)
    invoke = np.round(np.sort(rng.uniform(0, n, n)), 1)
    complete = invoke + np.round(rng.exponential(3.0, n), 1)
    is_write = rng.random(n) < 0.5
    outcome = rng.choice(np.array(["ok", "ok", "ok", "ok", "info", "fail"], dtype=object), n)
    values: list[Any] = []
    written = 0
    for i in range(n):
        if is_write[i]:
            written += 1
            values.append(written)
        elif rng.random() < 0.1:
            values.append(None)
        elif siblings and rng.random() < 0.05:
            values.append((int(rng.integers(0, written + 2)), int(rng.integers(0, written + 2))))
        else:
            values.append(int(max(0, written - rng.geometric(0.3) + 1)))
    complete = np.where(is_write & (outcome == "info"), np.nan, complete)
    return pd.DataFrame({
        "op_id": np.arange(n, dtype=np.int64),
        "op": np.where(is_write, "write", "read").astype(object),
        "key": pd.Series(rng.integers(0, keys, n).tolist(), dtype=object),
        "value": pd.Series(values, dtype=object),
        "invoke": invoke,
        "complete": complete,
        "outcome": outcome,
    })


# -- staleness ------------------------------------------------------------------------------------------


def test_staleness_equals_the_quadratic_oracle_on_20k_operations():
    """On a 20,000-operation history with overlapping writes the fast staleness equals the old one exactly."""
    h = random_history(20_000, 3, seed=1)
    expected = old_read_staleness(h)
    assert expected["k"].max() > 20 and expected["stale"].any()  # deep staleness: the tree path runs too
    assert_frame_equal(read_staleness(h), expected)


def test_staleness_equals_the_oracle_on_many_small_histories():
    """Across seeds and key counts, with and without siblings, every column matches."""
    for seed in range(12):
        h = random_history(800, 1 + seed % 5, seed, siblings=seed % 2 == 0)
        assert_frame_equal(read_staleness(h), old_read_staleness(h))


op_rows = st.lists(st.tuples(
    st.sampled_from(["read", "write"]), st.integers(0, 2), st.integers(0, 6) | st.none(),
    st.integers(0, 30), st.integers(0, 10), st.sampled_from(["ok", "ok", "info", "fail"])), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op_rows)
def test_staleness_equals_the_oracle_on_generated_histories(rows):
    """Hand-sized histories with equal times, repeated values and values never written."""
    h = pd.DataFrame({
        "op_id": np.arange(len(rows), dtype=np.int64),
        "op": pd.Series([r[0] for r in rows], dtype=object),
        "key": pd.Series([r[1] for r in rows], dtype=object),
        "value": pd.Series([r[2] for r in rows], dtype=object),
        "invoke": [float(r[3]) for r in rows],
        "complete": [float(r[3] + r[4]) for r in rows],
        "outcome": pd.Series([r[5] for r in rows], dtype=object),
    })
    assert_frame_equal(read_staleness(h), old_read_staleness(h))


def test_staleness_of_a_million_operations_is_computed():
    """A million operations on 4 keys (the old way: 125,000 x 125,000 comparisons per key, hours).
    Timing targets live in benchmarks/bench_postprocess.py, not here; a quadratic regression would
    make this test run for hours instead of seconds."""
    h = random_history(1_000_000, 4, seed=1_000_000)
    st_ = read_staleness(h)
    assert len(st_) > 1_000_000 // 3
    assert st_["stale"].dtype == bool and 0 < st_["stale"].sum() < len(st_)


def test_staleness_summary_equals_the_oracle_table():
    """The summary, computed without building the table, equals the numbers read off the oracle's table."""
    h = random_history(6_000, 3, seed=11)
    ref = old_read_staleness(h)
    ref = ref[(ref["invoke"] >= 500.0) & (ref["invoke"] < 5_000.0)]
    s = staleness_summary(h, warmup=500.0, duration=5_000.0)
    assert s == {"staleness.reads": len(ref), "staleness.stale_reads": int(ref["stale"].sum()),
                 "staleness.stale_fraction": float(ref["stale"].mean()), "staleness.k_mean": float(ref["k"].mean()),
                 "staleness.k_max": int(ref["k"].max())}
    assert s["staleness.stale_reads"] > 0
    empty = staleness_summary(h[h["op"] == "write"])
    assert empty["staleness.reads"] == 0 and empty["staleness.k_max"] == 0 and math.isnan(empty["staleness.k_mean"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(-5, 5), max_size=60), st.data())
def test_count_greater_equals_counting_by_hand(ys, data):
    """Range counts equal a direct count, through the element-by-element path and the tree."""
    n = len(ys)
    q = data.draw(st.integers(0, 20))
    lo = [data.draw(st.integers(0, n)) for _ in range(q)]
    hi = [data.draw(st.integers(0, n)) for _ in range(q)]
    bounds = [data.draw(st.floats(-6, 6) | st.just(math.nan) | st.just(math.inf)) for _ in range(q)]
    expected = [sum(1 for y in ys[a:b] if y > c) for a, b, c in zip(lo, hi, bounds)]
    arr = np.array(ys, dtype=float)
    for direct in (0, 3, 100):
        got = count_greater(arr, np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64),
                            np.array(bounds, dtype=float), direct=direct)
        assert got.tolist() == expected, direct


def test_long_overlapping_writes_match_the_oracle():
    """Writes invoked long before they complete: many span each read's value, so the counts come from
    the merge-sort tree, and they still match."""
    h = random_history(4_000, 2, seed=3)
    h.loc[h["op"] == "write", "invoke"] -= 200.0
    expected = old_read_staleness(h)
    assert expected["k"].max() > 16
    assert_frame_equal(read_staleness(h), expected)


# -- t-visibility ---------------------------------------------------------------------------------------


def test_t_visibility_equals_binning_by_hand():
    """Reads and consistent reads per bin equal a per-read loop over the oracle's staleness."""
    h = random_history(5_000, 2, seed=7)
    edges = [0.0, 0.5, 1.0, 2.0, 5.0, 20.0, 1e9]
    tv = t_visibility(h, edges)
    ref = old_read_staleness(h)
    for i in range(len(edges) - 1):
        inside = [(not stale) for since, stale in zip(ref["since_commit"], ref["stale"])
                  if not math.isnan(since) and edges[i] <= since < edges[i + 1]]
        assert tv.loc[i, "reads"] == len(inside) and tv.loc[i, "consistent"] == sum(inside), i
    assert tv["reads"].sum() > 1000


# -- convergence ----------------------------------------------------------------------------------------

samples_st = st.lists(st.lists(st.sampled_from("abcd"), unique=True, max_size=3), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(samples_st, st.integers(0, 12), st.integers(-1, 12))
def test_convergence_equals_the_definitions(keysets, heal_at, last_at):
    """after_heal / after_quiesce equal a sample-by-sample reading of their definitions."""
    samples = pd.DataFrame([(100.0 * i, len(ks), 3, ks) for i, ks in enumerate(keysets)],
                           columns=["time", "divergent", "live", "keys"])
    heal = 100.0 * heal_at - 50.0
    faults = pd.DataFrame({"kind": ["partition"], "start": [0.0], "end": [heal]})
    last_write = 100.0 * last_at if last_at >= 0 else math.nan
    s = convergence_summary(samples, faults, last_write)
    after_heal, after_quiesce = reference_convergence(samples, heal, last_write)
    assert (s["convergence.after_heal"] == after_heal) or (math.isnan(after_heal)
                                                           and math.isnan(s["convergence.after_heal"]))
    assert (s["convergence.after_quiesce"] == after_quiesce) or (math.isnan(after_quiesce)
                                                                 and math.isnan(s["convergence.after_quiesce"]))
    assert s["convergence.healed"] == (not math.isnan(after_heal))


# -- lost writes ----------------------------------------------------------------------------------------


def test_lost_writes_by_order_equals_the_loop_on_random_histories():
    """With ties in times and in the order's ranks, the same writes are lost to the same winners."""
    for seed in range(15):
        rng = np.random.default_rng(seed)
        h = random_history(1_500, 1 + seed % 4, seed)
        ok = h[h["outcome"] == "ok"]
        writes = ok[ok["op"] == "write"]
        order = {v: (float(rng.integers(0, 300)), str(rng.integers(0, 3)))
                 for v in writes["value"] if rng.random() < 0.9}
        expected = old_by_order(writes, order)
        got = lost_writes(h, order=order)
        assert got.count == len(expected) and got.count > 0
        assert dict(zip(got.lost.index, got.lost["beaten_by"])) == expected


# -- the history table ----------------------------------------------------------------------------------


def test_history_frame_keeps_types_and_is_not_shared():
    """Columns keep their dtypes (names as Python objects), tuples stay one value, and a caller's
    changes to the frame never reach the next caller."""
    h = History()
    a = h.invoke(1, "c0", "write", 3, 10, 0.0, "n1", "none", True)
    b = h.invoke(2, "c1", "read", "k", None, 0.5, "n2", "minority", False)
    h.complete(a, 2.0, "ok")
    h.complete(b, 1.0, "ok", (10, 11))
    df = h.to_frame()
    assert df["client"].dtype == object and df["op_id"].dtype == np.int64 and df["node_up"].dtype == bool
    assert df["value"].tolist() == [10, (10, 11)] and df["key"].tolist() == [3, "k"]
    assert df["node_up"].tolist() == [True, False] and df["error"].tolist() == [None, None]
    df.loc[0, "value"] = 99
    assert h.to_frame()["value"].tolist() == [10, (10, 11)]
    c = h.invoke(3, "c0", "write", 3, 12, 3.0, "n1", "none", True)
    h.complete(c, 1003.0, "info", error="timeout")
    assert h.to_frame()["error"].tolist() == [None, None, "timeout"] and len(h) == 3
