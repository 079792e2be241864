"""Staleness checker: k-staleness per read, concurrent writes, t-visibility."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.checkers.staleness import read_staleness, staleness_summary, t_visibility


def _h(rows):
    """History rows: (op, key, value, invoke, complete, outcome)."""
    return pd.DataFrame(
        [{"op_id": i, "client": "c", "op": op, "key": key, "value": val, "invoke": a, "complete": b, "outcome": o}
         for i, (op, key, val, a, b, o) in enumerate(rows)])


def test_sequential_writes_give_version_distance():
    """A read returning the value two sequential versions back is 2-stale; the newest is fresh."""
    h = _h([
        ("write", 0, 1, 0, 1, "ok"), ("write", 0, 2, 2, 3, "ok"), ("write", 0, 3, 4, 5, "ok"),
        ("read", 0, 1, 10, 11, "ok"), ("read", 0, 3, 10, 11, "ok"), ("read", 0, None, 10, 11, "ok"),
    ])
    st = read_staleness(h)
    assert list(st["k"]) == [2, 0, 3]
    assert list(st["since_commit"]) == [5.0, 5.0, 5.0]


def test_concurrent_writes_never_make_each_other_stale():
    """Either of two overlapping writes is an acceptable read result."""
    h = _h([("write", 0, 1, 0, 9, "ok"), ("write", 0, 2, 1, 5, "ok"),
            ("read", 0, 1, 10, 11, "ok"), ("read", 0, 2, 10, 11, "ok")])
    assert list(read_staleness(h)["k"]) == [0, 0]


def test_in_flight_and_info_writes_count_as_fresh():
    """A value from a write that had not committed (or is info) is not stale."""
    h = _h([("write", 0, 1, 0, 1, "ok"), ("write", 0, 2, 5, 50, "ok"), ("write", 0, 3, 6, 100, "info"),
            ("read", 0, 2, 10, 11, "ok"), ("read", 0, 3, 10, 11, "ok"), ("read", 0, 1, 10, 11, "ok")])
    assert list(read_staleness(h)["k"]) == [0, 0, 0]


def test_keys_are_independent_and_siblings_use_the_freshest():
    """Writes to one key do not make reads of another stale; a sibling set counts its freshest value."""
    h = _h([("write", 0, 1, 0, 1, "ok"), ("write", 0, 2, 2, 3, "ok"), ("write", 1, 7, 4, 5, "ok"),
            ("read", 1, 7, 10, 11, "ok"), ("read", 0, (1, 2), 10, 11, "ok"), ("read", 0, (1,), 10, 11, "ok")])
    st = read_staleness(h).set_index("op_id")
    assert st.loc[3, "k"] == 0 and st.loc[4, "k"] == 0 and st.loc[5, "k"] == 1


def test_summary_counts_only_measured_reads():
    """staleness_summary counts stale reads invoked inside the measurement window."""
    h = _h([("write", 0, 1, 0, 1, "ok"), ("write", 0, 2, 2, 3, "ok"),
            ("read", 0, 1, 4, 5, "ok"), ("read", 0, 1, 20, 21, "ok"), ("read", 0, 2, 20, 21, "ok")])
    s = staleness_summary(h, warmup=10, duration=100)
    assert s["staleness.reads"] == 2 and s["staleness.stale_reads"] == 1 and s["staleness.k_max"] == 1


def test_t_visibility_bins_match_a_known_mixture():
    """t-visibility bins reads by time since the newest commit and estimates P(fresh) per bin."""
    rng = np.random.default_rng(0)
    rows, t = [], 0.0
    # write v, then a read after d ms that is fresh with probability min(1, d / 10)
    for v in range(1, 2001):
        rows.append(("write", 0, v, t, t + 1, "ok"))
        d = float(rng.uniform(0, 20))
        fresh = rng.random() < min(1.0, d / 10)
        rows.append(("read", 0, v if fresh else v - 1 if v > 1 else None, t + 1 + d, t + 2 + d, "ok"))
        t += 30
    tv = t_visibility(_h(rows), [0, 5, 10, 20], confidence=0.999)
    assert list(tv["reads"]) == [int(x) for x in tv["reads"]] and tv["reads"].sum() == 2000
    assert tv.loc[0, "ci_low"] <= 0.25 <= tv.loc[0, "ci_high"]
    assert tv.loc[1, "ci_low"] <= 0.75 <= tv.loc[1, "ci_high"]
    assert tv.loc[2, "p_consistent"] == 1.0
    assert math.isnan(t_visibility(_h(rows), [100, 200])["p_consistent"].iloc[0])
