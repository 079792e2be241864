"""Tests of sim.analysis: closed forms against enumeration, simulation and textbook values."""

from __future__ import annotations

import doctest
import heapq
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import sim.analysis.pbs
import sim.analysis.queueing
import sim.analysis.quorum
from sim.analysis import (
    UnstableQueueError,
    erlang_c,
    k_staleness_probability,
    majority_availability,
    mm1,
    mmc,
    quorum_availability,
    stale_read_probability,
    wars_from_delays,
    wars_latencies,
    wars_t_visibility,
    wars_trials,
)
from sim.dists import Constant, Exponential, Pareto, Uniform, parse_dist
from sim.errors import ScenarioError

# Confidence level of every statistical check: a correct implementation fails
# one check with probability 1e-3, and the seeds are fixed, so runs are repeatable.
CONFIDENCE = 0.999

EXP = Exponential(1.0)
ZERO = Constant(0.0)


def _small_nrw(max_n: int):
    for n in range(1, max_n + 1):
        for r in range(1, n + 1):
            for w in range(1, n + 1):
                yield n, r, w


def _binomial_ci(successes: int, trials: int) -> tuple[float, float]:
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=CONFIDENCE)
    return ci.low, ci.high


def _batch_means_ci(samples: np.ndarray, batches: int = 25) -> tuple[float, float]:
    """CI of the mean of an autocorrelated series from the means of contiguous batches."""
    means = samples[: len(samples) // batches * batches].reshape(batches, -1).mean(axis=1)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, batches - 1) * means.std(ddof=1) / math.sqrt(batches)
    return means.mean() - half, means.mean() + half


# --- quorum closed forms --------------------------------------------------------------------


def test_stale_read_matches_subset_enumeration():
    """C(n-w,r)/C(n,r) equals the fraction of (read set, write set) pairs that are disjoint."""
    for n, r, w in _small_nrw(7):
        pairs = disjoint = 0
        for read in itertools.combinations(range(n), r):
            for write in itertools.combinations(range(n), w):
                pairs += 1
                disjoint += not set(read) & set(write)
        assert stale_read_probability(n, r, w) == pytest.approx(disjoint / pairs, rel=1e-12, abs=0), (n, r, w)


def test_stale_read_is_zero_exactly_when_quorums_must_overlap():
    """A strict quorum (r + w > n) never reads stale; a partial one sometimes does."""
    for n, r, w in _small_nrw(8):
        p = stale_read_probability(n, r, w)
        assert (p == 0.0) == (r + w > n), (n, r, w, p)


def test_k_staleness_matches_enumeration_of_independent_write_quorums():
    """(C(n-w,r)/C(n,r))^k equals the fraction of reads missing k independently chosen write quorums."""
    for n, r, w, k in [(3, 1, 1, 2), (4, 1, 2, 2), (4, 2, 1, 3), (5, 2, 2, 2), (5, 1, 1, 3)]:
        reads = list(itertools.combinations(range(n), r))
        writes = list(itertools.combinations(range(n), w))
        total = missed = 0
        for read in reads:
            for quorums in itertools.product(writes, repeat=k):
                total += 1
                missed += all(not set(read) & set(q) for q in quorums)
        assert k_staleness_probability(n, r, w, k) == pytest.approx(missed / total, rel=1e-12), (n, r, w, k)


def test_k_staleness_of_one_version_is_the_stale_read_probability():
    """With k = 1, k-staleness is the plain stale-read probability, and it shrinks as k grows."""
    for n, r, w in _small_nrw(6):
        assert k_staleness_probability(n, r, w, 1) == stale_read_probability(n, r, w)
        assert k_staleness_probability(n, r, w, 3) <= k_staleness_probability(n, r, w, 2)


def test_quorum_availability_matches_enumeration_of_up_sets():
    """The binomial tail equals the summed probability of every up/down pattern with >= q up."""
    for n in range(1, 8):
        for q in range(1, n + 1):
            for p in (0.0, 0.3, 0.9, 1.0):
                exact = sum(
                    math.prod(p if up else 1 - p for up in pattern)
                    for pattern in itertools.product((True, False), repeat=n)
                    if sum(pattern) >= q
                )
                assert quorum_availability(n, q, p) == pytest.approx(exact, abs=1e-12), (n, q, p)


def test_majority_availability_is_a_quorum_of_half_plus_one():
    """Majority availability is quorum availability with q = n // 2 + 1."""
    for n in range(1, 10):
        assert majority_availability(n, 0.8) == quorum_availability(n, n // 2 + 1, 0.8)


@pytest.mark.parametrize(("n", "p_up"), [(3, 0.9), (4, 0.7), (5, 0.95), (7, 0.6)])
def test_majority_availability_matches_monte_carlo_of_node_failures(n, p_up):
    """A simulation of independent node failures finds a majority up as often as the formula says."""
    rng = np.random.default_rng([2012, n])
    trials = 200_000
    up = rng.random((trials, n)) < p_up
    majority_up = int((up.sum(axis=1) >= n // 2 + 1).sum())
    low, high = _binomial_ci(majority_up, trials)
    assert low <= majority_availability(n, p_up) <= high


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: stale_read_probability(3, 4, 1), "r"),
        (lambda: stale_read_probability(3, 0, 1), "r"),
        (lambda: stale_read_probability(3, 1, 4), "w"),
        (lambda: stale_read_probability(0, 1, 1), "n"),
        (lambda: stale_read_probability(3, 1.5, 1), "r"),
        (lambda: stale_read_probability(3, True, 1), "r"),
        (lambda: k_staleness_probability(3, 1, 1, 0), "k"),
        (lambda: quorum_availability(3, 4, 0.9), "q"),
        (lambda: quorum_availability(3, 2, 1.1), "p_up"),
        (lambda: majority_availability(3, float("nan")), "p_up"),
    ],
)
def test_quorum_inputs_are_validated_naming_the_argument(call, arg):
    """Impossible arguments raise a ValueError whose message starts with the argument's name."""
    with pytest.raises(ValueError, match=rf"^{arg}: "):
        call()


# --- queueing ----------------------------------------------------------------------------------


def _erlang_c_textbook(c: int, a: float) -> float:
    """The textbook Erlang C sum, evaluated in log space so large c does not overflow."""
    log_terms = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    log_last = c * math.log(a) - math.lgamma(c + 1) + math.log(c / (c - a))
    top = max(log_terms + [log_last])
    below = sum(math.exp(x - top) for x in log_terms)
    last = math.exp(log_last - top)
    return last / (below + last)


def test_erlang_c_textbook_value_two_servers_one_erlang():
    """For c = 2 and a = 1 Erlang, P(wait) = (1/2 * 2) / (1 + 1 + 1) = 1/3 and W_q = C/(c mu - lambda) = 1/3."""
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)
    q = mmc(arrival_rate=1.0, service_rate=1.0, servers=2)
    assert q.p_wait == pytest.approx(1 / 3, rel=1e-12)
    assert q.mean_wait == pytest.approx((1 / 3) / (2 * 1.0 - 1.0), rel=1e-12)


def test_erlang_c_recursion_matches_textbook_sum():
    """The Erlang B recursion gives the textbook Erlang C sum, including for hundreds of servers."""
    for c in (1, 2, 3, 5, 10, 50, 500):
        for rho in (0.01, 0.3, 0.7, 0.95, 0.999):
            assert erlang_c(c, rho * c) == pytest.approx(_erlang_c_textbook(c, rho * c), rel=1e-9), (c, rho)


def test_erlang_c_single_server_is_utilisation():
    """With one server an arrival waits exactly when the server is busy: P(wait) = rho."""
    for rho in (0.0, 0.2, 0.5, 0.9):
        assert erlang_c(1, rho) == pytest.approx(rho, abs=1e-15)


def test_mm1_textbook_formulas():
    """M/M/1 at lambda = 0.5, mu = 1 per ms: W = 1/(mu-lambda), W_q = rho/(mu-lambda), L = rho/(1-rho)."""
    lam, mu = 0.5, 1.0
    rho = lam / mu
    q = mm1(lam, mu)
    assert q.utilisation == rho
    assert q.p_wait == rho
    assert q.mean_time_in_system == pytest.approx(1 / (mu - lam))
    assert q.mean_wait == pytest.approx(rho / (mu - lam))
    assert q.mean_number_in_system == pytest.approx(rho / (1 - rho))
    assert q.mean_number_in_queue == pytest.approx(rho**2 / (1 - rho))


@pytest.mark.parametrize(("lam", "mu"), [(0.0, 1.0), (0.1, 1.0), (0.5, 2.0), (0.9, 1.0), (2.0, 2.5)])
def test_mm1_is_mmc_with_one_server(lam, mu):
    """Every M/M/1 figure equals the M/M/c figure with c = 1."""
    one, general = mm1(lam, mu).to_dict(), mmc(lam, mu, 1).to_dict()
    assert one.keys() == general.keys()
    for key, value in one.items():
        assert general[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize(("lam", "mu", "c"), [(0.5, 1.0, 1), (1.0, 1.0, 2), (3.5, 0.5, 8), (0.2, 0.1, 3)])
def test_queue_metrics_obey_littles_law(lam, mu, c):
    """L = lambda W, L_q = lambda W_q and W = W_q + 1/mu hold for every result."""
    q = mmc(lam, mu, c)
    assert q.mean_number_in_system == pytest.approx(lam * q.mean_time_in_system)
    assert q.mean_number_in_queue == pytest.approx(lam * q.mean_wait)
    assert q.mean_time_in_system == pytest.approx(q.mean_wait + 1 / mu)
    assert q.utilisation == pytest.approx(lam / (c * mu))


def test_mm1_mean_wait_matches_lindley_simulation():
    """A simulated M/M/1 queue (Lindley's recursion) waits as long on average as W_q says."""
    rng = np.random.default_rng(1)
    lam, mu, customers = 0.6, 1.0, 400_000
    service = rng.exponential(1 / mu, customers)
    gaps = rng.exponential(1 / lam, customers)
    # W_k = X_k - min_{j<=k} X_j with X the partial sums of (service_j - gap_{j+1}) and X_0 = 0.
    x = np.concatenate(([0.0], np.cumsum(service[:-1] - gaps[1:])))
    waits = x - np.minimum.accumulate(x)
    low, high = _batch_means_ci(waits[10_000:])
    assert low <= mm1(lam, mu).mean_wait <= high


def test_mm2_wait_matches_event_simulation():
    """A simulated two-server FIFO queue waits as often and as long as Erlang C predicts."""
    rng = np.random.default_rng(2)
    lam, mu, c, customers = 1.5, 1.0, 2, 120_000
    arrivals = np.cumsum(rng.exponential(1 / lam, customers)).tolist()
    service = rng.exponential(1 / mu, customers).tolist()
    free_at = [0.0] * c  # a heap of the times the servers become free
    waits = np.empty(customers)
    for j, (arrive, work) in enumerate(zip(arrivals, service)):
        start = max(arrive, free_at[0])
        waits[j] = start - arrive
        heapq.heapreplace(free_at, start + work)
    expected = mmc(lam, mu, c)
    steady = waits[5_000:]
    low, high = _batch_means_ci(steady)
    assert low <= expected.mean_wait <= high
    low, high = _batch_means_ci((steady > 0).astype(float))
    assert low <= expected.p_wait <= high


@pytest.mark.parametrize(
    "call",
    [lambda: mm1(1.0, 1.0), lambda: mm1(2.0, 1.0), lambda: mmc(2.0, 1.0, 2), lambda: erlang_c(3, 3.0)],
)
def test_unstable_queue_raises(call):
    """A queue whose arrival rate reaches its total service rate has no steady state and says so."""
    with pytest.raises(UnstableQueueError, match="unstable|below servers"):
        call()
    assert issubclass(UnstableQueueError, ValueError)


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: mm1(-0.1, 1.0), "arrival_rate"),
        (lambda: mm1(0.1, 0.0), "service_rate"),
        (lambda: mmc(0.1, 1.0, 0), "servers"),
        (lambda: mmc(0.1, float("inf"), 2), "service_rate"),
        (lambda: erlang_c(2, -1.0), "offered_load"),
    ],
)
def test_queue_inputs_are_validated_naming_the_argument(call, arg):
    """Negative, zero or infinite rates and server counts raise a ValueError naming the argument."""
    with pytest.raises(ValueError, match=rf"^{arg}: "):
        call()


# --- PBS WARS Monte-Carlo ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "r", "w"), [(3, 2, 2), (3, 1, 3), (3, 3, 1), (5, 3, 3), (5, 2, 4)])
def test_wars_strict_quorum_is_always_consistent(n, r, w):
    """With r + w > n every read, at any t >= 0 after commit, sees the write (exactly, not just nearly)."""
    heavy = Pareto(1.5, 1.0)
    df = wars_t_visibility(n, r, w, [0.0, 0.01, 1.0, 10.0], heavy, EXP, heavy, EXP, 20_000, np.random.default_rng(3))
    assert (df["p_consistent"] == 1.0).all()


def test_wars_consistent_once_every_replica_has_the_write():
    """A read starting after the slowest possible propagation (or at t = inf) is always consistent."""
    longest = 10.0
    trials = wars_trials(5, 1, 1, Uniform(0.0, longest), EXP, EXP, EXP, 20_000, np.random.default_rng(4))
    # commit >= 0 and R_i >= 0, so W_i <= longest <= commit + t + R_i at t = longest.
    assert trials.p_consistent([longest, 2 * longest, np.inf]).tolist() == [1.0, 1.0, 1.0]
    assert trials.p_consistent([0.0])[0] < 1.0


@pytest.mark.parametrize(("n", "r", "w"), [(3, 1, 1), (5, 1, 2), (5, 2, 2), (6, 2, 3), (4, 1, 1)])
def test_wars_at_commit_with_instant_acks_and_reads_is_the_static_closed_form(n, r, w):
    """With A = R = 0 and t = 0 the fresh replicas are exactly the write quorum and the responders a
    uniformly random r-subset, so P(consistent) = 1 - C(n-w, r)/C(n, r)."""
    trials = 200_000
    df = wars_t_visibility(n, r, w, [0.0], EXP, ZERO, ZERO, EXP, trials, np.random.default_rng([5, n, r, w]))
    low, high = _binomial_ci(int(df["consistent"].iloc[0]), trials)
    assert low <= 1 - stale_read_probability(n, r, w) <= high


def test_wars_curve_is_non_decreasing_in_t():
    """Every t reuses the same trials, so the estimated t-visibility curve never decreases."""
    t = np.linspace(0.0, 20.0, 200)
    df = wars_t_visibility(3, 1, 1, t, Pareto(2.5, 1.0), EXP, EXP, EXP, 50_000, np.random.default_rng(6))
    p = df["p_consistent"].to_numpy()
    assert (np.diff(p) >= 0).all()
    assert p[0] < p[-1]
    assert ((df["ci_low"] <= df["p_consistent"]) & (df["p_consistent"] <= df["ci_high"])).all()


def test_wars_matches_a_literal_per_trial_simulation():
    """The vectorised computation agrees, trial by trial, with a plain loop over the model's definition."""
    rng = np.random.default_rng(7)
    n, r, w, count = 5, 2, 2, 400
    wd, ad, rd, sd = (rng.exponential(1.0, (count, n)) for _ in range(4))
    result = wars_from_delays(wd, ad, rd, sd, r=r, w=w)
    t_values = [0.0, 0.2, 0.5, 1.0, 2.0]
    consistent = np.zeros(len(t_values), dtype=int)
    for j in range(count):
        commit = sorted(wd[j] + ad[j])[w - 1]
        responders = sorted(range(n), key=lambda i: rd[j, i] + sd[j, i])[:r]
        assert result.write_latency[j] == commit
        assert result.read_latency[j] == max(rd[j, i] + sd[j, i] for i in responders)
        for k, t in enumerate(t_values):
            consistent[k] += any(commit + t + rd[j, i] >= wd[j, i] for i in responders)
    assert result.consistent_counts(t_values).tolist() == consistent.tolist()


def test_wars_same_seed_gives_identical_results():
    """Equal seeds give identical curves and latencies; a different seed gives different ones."""

    def run(seed):
        args = (3, 1, 1)
        dists = (EXP, EXP, EXP, EXP)
        curve = wars_t_visibility(*args, np.linspace(0, 5, 20), *dists, 10_000, np.random.default_rng(seed))
        lat = wars_latencies(*args, *dists, 10_000, np.random.default_rng(seed))
        return curve, lat

    (c1, l1), (c2, l2), (c3, _) = run(8), run(8), run(9)
    pd.testing.assert_frame_equal(c1, c2)
    pd.testing.assert_frame_equal(l1, l2)
    assert not c1["p_consistent"].equals(c3["p_consistent"])


def test_wars_accepts_scenario_style_distributions():
    """Distributions written as scenario tables or durations give the same result as the objects."""
    t = [0.0, 1.0, 3.0]
    table = {"dist": "pareto", "shape": 2.5, "scale": 1}
    from_tables = wars_t_visibility(3, 1, 2, t, table, "0.5ms", table, {"dist": "exponential", "mean": 1},
                                    5_000, np.random.default_rng(10))
    from_objects = wars_t_visibility(3, 1, 2, t, parse_dist(table), Constant(0.5), Pareto(2.5, 1.0), EXP,
                                     5_000, np.random.default_rng(10))
    pd.testing.assert_frame_equal(from_tables, from_objects)


@pytest.mark.parametrize(("n", "r", "w"), [(3, 1, 1), (5, 2, 2), (5, 1, 5)])
def test_wars_latency_means_are_exponential_order_statistics(n, r, w):
    """With A = R = 0 and exponential W, S, the write latency is the w-th and the read latency the r-th
    order statistic of n exponentials, whose mean is m * sum_{j<k} 1/(n-j)."""
    m = 2.0
    dist = Exponential(m)
    result = wars_trials(n, r, w, dist, ZERO, ZERO, dist, 100_000, np.random.default_rng([11, n, r, w]))
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    for samples, k in ((result.write_latency, w), (result.read_latency, r)):
        expected = m * sum(1 / (n - j) for j in range(k))
        half = z * samples.std(ddof=1) / math.sqrt(samples.size)
        assert abs(samples.mean() - expected) <= half


def test_wars_latency_percentiles_of_constant_delays():
    """Constant delays give write latency W + A and read latency R + S at every percentile."""
    w_, a_, r_, s_ = 3.0, 1.0, 0.5, 0.25
    df = wars_latencies(3, 2, 2, Constant(w_), Constant(a_), Constant(r_), Constant(s_), 100,
                        np.random.default_rng(12)).set_index("op")
    for column in ("mean", "p50", "p95", "p99", "p999"):
        assert df.loc["write", column] == w_ + a_
        assert df.loc["read", column] == r_ + s_


def test_wars_visibility_time_inverts_the_curve():
    """visibility_time(p) is the smallest t at which the estimated P(consistent) reaches p."""
    trials = wars_trials(3, 1, 1, EXP, EXP, EXP, EXP, 30_000, np.random.default_rng(13))
    assert trials.visibility_time(0.0) == 0.0
    for p in (0.5, 0.9, 0.99, 0.999, 1.0):
        t = trials.visibility_time(p)
        assert trials.p_consistent([t])[0] >= p
        if t > 0:
            assert trials.p_consistent([np.nextafter(t, 0.0)])[0] < p


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda g: wars_trials(3, 4, 1, EXP, EXP, EXP, EXP, 10, g), ValueError, "^r: "),
        (lambda g: wars_trials(3, 1, 0, EXP, EXP, EXP, EXP, 10, g), ValueError, "^w: "),
        (lambda g: wars_trials(3, 1, 1, EXP, EXP, EXP, EXP, 0, g), ValueError, "^trials: "),
        (lambda g: wars_trials(3, 1, 1, Uniform(-1.0, 0.0), EXP, EXP, EXP, 10, g), ValueError, "^w_dist: "),
        (lambda g: wars_trials(3, 1, 1, EXP, {"dist": "nope"}, EXP, EXP, 10, g), ScenarioError, r"^a_dist\.dist: "),
        (lambda g: wars_t_visibility(3, 1, 1, [-1.0], EXP, EXP, EXP, EXP, 10, g), ValueError, "^t_values: "),
        (lambda g: wars_trials(3, 1, 1, EXP, EXP, EXP, EXP, 10, 42), TypeError, "numpy.random.Generator"),
        (lambda g: wars_from_delays(np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 3)), np.ones((2, 3)), r=1, w=1),
         ValueError, "same shape"),
    ],
)
def test_wars_inputs_are_validated(call, error, match):
    """Impossible quorums, trial counts, delays, times and generators are rejected with a clear error."""
    with pytest.raises(error, match=match):
        call(np.random.default_rng(14))


def test_docstring_examples_run():
    """Every example in the analysis modules' docstrings gives the output it shows."""
    for module in (sim.analysis.quorum, sim.analysis.queueing, sim.analysis.pbs):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(sim.analysis.quorum).attempted > 0
