"""The PBS paper's profiles as plain scenarios: the event simulation's t-visibility matches the WARS Monte-Carlo.

Both estimate the same quantity: P(a read that starts t ms after a write
committed returns it). The event simulation (experiments/pbs_paper.py,
``scenario`` and ``simulate``) counts only the reads that directly follow a
write of its one client, so each starts exactly t (its think time) after that
write's commit; the Monte-Carlo is evaluated at the same t. Two profiles with
W != R delays and R != W quorums: LNKD-DISK with R = 2, W = 1 and YMMR with
R = 1, W = 2, at t values where reads are often stale (where the curves
differ most between profiles and configurations). Agreement is judged by
Fisher's exact test per point at a Bonferroni-corrected level, and the same
judgement must reject the simulation against the Monte-Carlo of another
profile and of the swapped quorums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_experiments import load

P = load("pbs_paper")
CASES = [("LNKD-DISK", 2, 1), ("YMMR", 1, 2)]
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75)  # of the paper's t; 0 is the simulation's T_ZERO
OPS = 20_000
TRIALS = 200_000
ALPHA = 0.01  # family-wise, over all the points compared


def grid(profile: str, r: int, w: int) -> list[float]:
    t_paper = P.PAPER_TABLE4[profile][(r, w)][2]
    return sorted({P.T_ZERO, *(round(f * t_paper, 6) for f in FRACTIONS if f > 0)})


@pytest.fixture(scope="module")
def points() -> pd.DataFrame:
    """The event simulation's reads per (profile, configuration, t)."""
    frames = []
    for i, (profile, r, w) in enumerate(CASES):
        g = grid(profile, r, w)
        done = P.simulate({"profile": profile, "r": r, "w": w, "grid": g, "seed": 100 + i,
                           "duration": P.sim_duration(profile, g, OPS)})
        assert done["not_ok"] == 0
        frames.append(pd.DataFrame({"profile": profile, "n": P.N, "r": r, "w": w, "t": g,
                                    "reads": done["reads"], "consistent": done["fresh"]}))
    return pd.concat(frames, ignore_index=True)


def model(profile: str, r: int, w: int, seed: int) -> P.WarsTrials:
    return P.run_trials(profile, P.N, r, w, TRIALS, np.random.default_rng([7, seed]))


def judged(points: pd.DataFrame, models: dict) -> pd.DataFrame:
    cmp = P.compare_points(points, models)
    return cmp.assign(agrees=cmp["p_value"] >= ALPHA / len(cmp))


def test_event_simulation_matches_monte_carlo_for_two_profiles_with_w_not_r(points):
    """At every t, the simulation's fraction of fresh reads and the Monte-Carlo's agree (Fisher, Bonferroni)."""
    assert (points["reads"] >= 500).all(), points
    models = {case: model(*case, seed=i) for i, case in enumerate(CASES)}
    cmp = judged(points, models)
    assert cmp["agrees"].all(), cmp
    # the comparison has power: most points are far from always-consistent, and the curves rise with t
    assert (cmp["p_mc"] < 0.99).sum() >= 6, cmp
    for _, part in cmp.groupby(["profile", "r", "w"]):
        assert part["p_mc"].iloc[-1] > part["p_mc"].iloc[0] + 0.005


def test_the_same_judgement_rejects_another_profile_or_swapped_quorums(points):
    """A known-wrong model for the same runs must fail the same test."""
    other_profile = {("LNKD-DISK", 2, 1): model("LNKD-SSD", 2, 1, seed=10),
                     ("YMMR", 1, 2): model("LNKD-DISK", 1, 2, seed=11)}
    swapped = {("LNKD-DISK", 2, 1): model("LNKD-DISK", 1, 2, seed=12), ("YMMR", 1, 2): model("YMMR", 2, 1, seed=13)}
    for wrong in (other_profile, swapped):
        cmp = judged(points, wrong)
        for _, part in cmp.groupby(["profile", "r", "w"]):
            assert not part["agrees"].all(), part


def test_visibility_from_points_interpolates_and_brackets():
    """The t at 99.9% from grid points: crossing interpolated; interval from the points' Clopper-Pearson bounds."""
    t = np.array([P.T_ZERO, 10.0, 20.0, 40.0])
    reads = np.array([10_000, 10_000, 10_000, 10_000])
    fresh = np.array([9_000, 9_980, 9_995, 10_000])
    est, lo, hi = P.visibility_from_points(t, reads, fresh)
    assert est == pytest.approx(10.0 + (0.999 - 0.998) / (0.9995 - 0.998) * 10.0)
    assert lo == 10.0  # 99.80% of 10,000: the upper bound is below 99.9%
    assert hi == 40.0  # 99.95% of 10,000 does not exclude 99.9%; all 10,000 fresh does
    # never stale at t = 0: the t at 99.9% is 0, as the interval says
    assert P.visibility_from_points(np.array([P.T_ZERO]), np.array([5_000]), np.array([5_000])) == (0.0, 0.0, 0.0)
    # not reached inside the grid: no estimate, no upper bound
    est, lo, hi = P.visibility_from_points(t[:2], reads[:2], fresh[:2])
    assert np.isnan(est) and lo == 10.0 and np.isnan(hi)


def test_wan_scenario_routes_remote_messages_over_the_zone_links():
    """WAN: one node per zone; replica messages between zones take the +75 ms delays, client messages 0 ms."""
    sc = P.scenario("WAN", 1, 1, [1.0], 1000.0)
    assert sc.cluster.zones is not None and len(sc.cluster.zones.names) == P.N
    links = sc.network.zone_links
    assert len(links) == 3 and all(link.symmetric for link in links)
    for link in links:
        assert link.latency.mean == 0
        assert link.message_latency.get("write").mean == pytest.approx(
            P.parse_dist(P.LNKD_DISK_W, "w").mean + P.WAN_DELAY)
    lnkd = P.scenario("LNKD-SSD", 2, 2, [1.0], 1000.0)
    assert lnkd.cluster.zones is None and lnkd.network.self_latency is None  # the coordinator's own replica: by kind
