"""PBS WARS with replicas placed in datacenters: local and remote delays, coordinator positions."""

import math

import numpy as np
import pytest
from scipy import stats

from sim.analysis import WarsDelays, quantile_interval, wars_placement_trials, wars_trials
from sim.dists import Constant, Exponential, Shifted
from sim.errors import ScenarioError

LOCAL = WarsDelays.of(1.0)  # every local one-way delay 1 ms
REMOTE = WarsDelays.of({"dist": "shifted", "base": 1.0, "offset": "75ms"})  # 76 ms


def test_coordinators_in_different_datacenters_give_the_exact_constant_answer():
    """Constant delays: the read's nearest replica got the write 76 ms after it started, 2 ms commit: stale 73 ms."""
    rng = np.random.default_rng(1)
    same = wars_placement_trials(3, 1, 1, LOCAL, REMOTE, 1000, rng, write_coordinator=0, read_coordinator=0)
    assert (same.write_latency == 2.0).all() and (same.read_latency == 2.0).all()
    assert (same.visible_after == 1.0 - 1.0 - 2.0).all()  # the local replica acked: fresh at t = 0
    other = wars_placement_trials(3, 1, 1, LOCAL, REMOTE, 1000, rng, write_coordinator=0, read_coordinator=1)
    assert (other.visible_after == 76.0 - 1.0 - 2.0).all()
    assert other.visibility_time(0.5) == 73.0 and other.p_consistent([72.9, 73.0]).tolist() == [0.0, 1.0]
    # W = 2 waits for a remote ack (76 + 76); R = 2 for a remote response
    both = wars_placement_trials(3, 2, 2, LOCAL, REMOTE, 10, rng, write_coordinator=0, read_coordinator=1)
    assert (both.write_latency == 152.0).all() and (both.read_latency == 152.0).all()


def test_zones_group_replicas_with_the_coordinator():
    """Replicas sharing the coordinator's zone are local: W = 2 commits on two local acks in the same datacenter."""
    rng = np.random.default_rng(2)
    t = wars_placement_trials(3, 1, 2, LOCAL, REMOTE, 100, rng, zones=("east", "east", "west"),
                              write_coordinator=1, read_coordinator=0)
    assert (t.write_latency == 2.0).all()
    t = wars_placement_trials(3, 1, 3, LOCAL, REMOTE, 100, rng, zones=("east", "east", "west"),
                              write_coordinator=1, read_coordinator=2)
    assert (t.write_latency == 152.0).all()
    # the read, next to the west replica, answers from it; the west replica got the write at 76 ms, commit at 152
    assert (t.visible_after == 76.0 - 1.0 - 152.0).all()


def test_random_coordinators_meet_one_time_in_n():
    """Random write and read datacenters (the paper's WAN): consistent at t = 0 iff they coincide, probability 1/N."""
    trials = 60_000
    t = wars_placement_trials(3, 1, 1, LOCAL, REMOTE, trials, np.random.default_rng(3))
    k = int((t.visible_after <= 0).sum())
    assert stats.binomtest(k, trials, 1 / 3).pvalue > 0.001
    assert t.p_consistent(73.0)[0] == 1.0
    # a wrong rule (the read coordinator fixed next to the write's) would be consistent every time: rejected
    assert stats.binomtest(trials, trials, 1 / 3).pvalue < 1e-6


def test_equal_local_and_remote_delays_reduce_to_plain_wars():
    """With remote == local the placement does not matter: D has the distribution of wars_trials' D (KS test)."""
    d = Exponential(1.0)
    placed = wars_placement_trials(3, 1, 1, d, d, 40_000, np.random.default_rng(4))
    plain = wars_trials(3, 1, 1, d, d, d, d, 40_000, np.random.default_rng(5))
    assert stats.ks_2samp(placed.visible_after, plain.visible_after).pvalue > 0.001
    shifted = wars_placement_trials(3, 1, 1, d, Shifted(d, 1.0), 40_000, np.random.default_rng(4))
    assert stats.ks_2samp(shifted.visible_after, plain.visible_after).pvalue < 1e-6  # a real difference is seen


def test_per_kind_delays_and_determinism():
    """A table of w, a, r, s delays applies each kind; the same seed gives identical trials."""
    local = {"w": 5.0, "a": 1.0, "r": 1.0, "s": 1.0}
    t = wars_placement_trials(2, 1, 1, local, local, 10, np.random.default_rng(0), write_coordinator=0)
    assert (t.write_latency == 6.0).all() and (t.read_latency == 2.0).all()
    assert WarsDelays.of(local) == WarsDelays(Constant(5.0), Constant(1.0), Constant(1.0), Constant(1.0))
    exp = {"dist": "exponential", "rate": 0.5}
    a = wars_placement_trials(3, 1, 2, exp, REMOTE, 500, np.random.default_rng(9))
    b = wars_placement_trials(3, 1, 2, exp, REMOTE, 500, np.random.default_rng(9))
    assert np.array_equal(a.visible_after, b.visible_after) and np.array_equal(a.write_latency, b.write_latency)


@pytest.mark.parametrize("kwargs, path", [
    ({"zones": ("a", "b")}, "zones"),
    ({"zones": "abc"}, "zones"),
    ({"write_coordinator": 3}, "write_coordinator"),
    ({"read_coordinator": "nearest"}, "read_coordinator"),
    ({"local": {"w": 1, "a": 1, "r": 1}}, "local.s"),
    ({"remote": {"w": 1, "a": 1, "r": 1, "s": 1, "x": 1}}, "remote.x"),
    ({"remote": {"w": 1, "a": 1, "r": 1, "s": {"dist": "gaussian"}}}, "remote.s.dist"),
])
def test_placement_inputs_are_validated(kwargs, path):
    """Bad zones, coordinators or delay tables raise ScenarioError naming the argument."""
    args = {"local": LOCAL, "remote": REMOTE, **kwargs}
    with pytest.raises(ScenarioError) as err:
        wars_placement_trials(3, 1, 1, trials=10, rng=np.random.default_rng(0), **args)
    assert err.value.path == path


def test_quantile_interval_covers_the_true_quantile():
    """The order-statistic interval for the 99.9th percentile of Exp(1) covers -ln(0.001) in ~95% of samples."""
    rng = np.random.default_rng(10)
    truth = -math.log(0.001)
    covered = 0
    for _ in range(200):
        est, lo, hi = quantile_interval(rng.exponential(1.0, 20_000), 0.999, 0.95)
        assert lo <= est <= hi
        covered += lo <= truth <= hi
    # at least 95% coverage (distribution-free bound), within binomial noise of 200 repetitions
    assert covered >= 180
    with pytest.raises(ScenarioError):
        quantile_interval([], 0.5)
