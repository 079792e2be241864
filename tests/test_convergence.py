"""Convergence: divergent keys across live replicas and time to agree after a heal."""

from __future__ import annotations

import math

import pandas as pd

from sim.checkers.convergence import convergence_summary, divergent_keys


def test_divergent_keys_compare_live_holders_only():
    """A key diverges when its live holders disagree; a missing key counts as None."""
    states = {"a": {1: "x", 2: "y"}, "b": {1: "x", 2: "z"}, "c": {1: "x"}}
    assert divergent_keys(states, lambda k: ("a", "b", "c")) == [2]
    assert divergent_keys(states, lambda k: ("a", "c") if k == 2 else ("a", "b")) == [2]
    assert divergent_keys({"a": {2: "y"}, "b": {2: "y"}}, lambda k: ("a", "b", "dead")) == []


def _samples(rows):
    return pd.DataFrame([(t, len(keys), 3, keys) for t, keys in rows], columns=["time", "divergent", "live", "keys"])


def test_after_heal_tracks_keys_divergent_at_the_heal():
    """after_heal is when every key divergent at the heal has agreed once, even if others diverge later."""
    samples = _samples([(900, ["a"]), (1000, ["a", "b"]), (1100, ["b", "c"]), (1200, ["c"]), (1300, [])])
    faults = pd.DataFrame({"kind": ["partition"], "start": [500.0], "end": [1000.0]})
    s = convergence_summary(samples, faults, last_write=1250.0)
    assert s["convergence.after_heal"] == 200.0 and s["convergence.healed"]
    assert s["convergence.after_quiesce"] == 1300.0 - 1250.0 and s["convergence.converged"]
    assert s["convergence.divergent_keys_max"] == 2


def test_never_converging_is_nan_with_a_flag():
    """If replicas still disagree at the end, the times are NaN and the flags False."""
    samples = _samples([(1000, ["a"]), (2000, ["a"])])
    faults = pd.DataFrame({"kind": ["crash"], "start": [0.0], "end": [1000.0]})
    s = convergence_summary(samples, faults, last_write=500.0)
    assert math.isnan(s["convergence.after_heal"]) and not s["convergence.healed"]
    assert math.isnan(s["convergence.after_quiesce"]) and not s["convergence.converged"]
