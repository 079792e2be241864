"""Distributions: parsing, sampling (scalar and vectorised) and means."""

import math

import numpy as np
import pytest
from scipy import stats

from sim.dists import (
    Constant,
    Empirical,
    Exponential,
    LogNormal,
    Mixture,
    Pareto,
    Uniform,
    buffered_sampler,
    parse_dist,
)
from sim.errors import ScenarioError

CASES = [
    {"dist": "constant", "value": "3ms"},
    {"dist": "uniform", "low": 1, "high": "3ms"},
    {"dist": "exponential", "mean": "2ms"},
    {"dist": "lognormal", "mu": 0.5, "sigma": 0.4},
    {"dist": "pareto", "shape": 3.0, "scale": 1.0},
    {"dist": "mixture", "components": [{"weight": 3, "dist": "constant", "value": 1},
                                       {"weight": 1, "dist": "exponential", "mean": 8}]},
    {"dist": "empirical", "samples": [1, 2, 2, 7]},
]


@pytest.mark.parametrize("spec", CASES, ids=lambda s: s["dist"])
def test_sample_mean_matches_known_mean(spec):
    """The sample mean of 200k draws lies within 5 standard errors of the exact mean."""
    d = parse_dist(spec)
    x = d.sample(np.random.default_rng(3), 200_000)
    assert x.shape == (200_000,) and (x >= 0).all()
    se = x.std() / math.sqrt(len(x))
    assert abs(x.mean() - d.mean) <= 5 * se + 1e-12


@pytest.mark.parametrize("spec", CASES, ids=lambda s: s["dist"])
def test_round_trip_and_scalar_sampling(spec):
    """to_dict parses back to an equal object; scalar sampling returns a float."""
    d = parse_dist(spec)
    assert parse_dist(d.to_dict()) == d
    assert isinstance(d.sample(np.random.default_rng(1)), float)


def test_exponential_shape_ks():
    """Exponential samples pass a KS test against scipy's exponential."""
    x = Exponential(4.0).sample(np.random.default_rng(2), 20_000)
    assert stats.kstest(x, stats.expon(scale=4.0).cdf).pvalue > 0.001


def test_pareto_tail_and_infinite_mean():
    """Pareto has P(X > x) = (scale/x)^shape and an infinite mean when shape <= 1."""
    x = Pareto(2.0, 1.0).sample(np.random.default_rng(4), 200_000)
    assert x.min() >= 1.0
    assert (x > 10).mean() == pytest.approx(0.01, abs=0.002)
    assert Pareto(1.0, 1.0).mean == math.inf


def test_mixture_weights_are_relative():
    """Mixture weights need not sum to 1; the component frequencies follow them."""
    m = parse_dist({"dist": "mixture", "components": [{"weight": 1, "dist": "constant", "value": 0},
                                                      {"weight": 3, "dist": "constant", "value": 1}]})
    assert isinstance(m, Mixture)
    x = m.sample(np.random.default_rng(0), 40_000)
    assert x.mean() == pytest.approx(0.75, abs=0.01)


def test_bare_number_is_constant():
    """A number or duration string is a constant distribution."""
    assert parse_dist("5ms") == Constant(5.0)
    assert parse_dist(2) == Constant(2.0)


@pytest.mark.parametrize(
    "spec, path",
    [
        ({"dist": "gaussian"}, "lat.dist"),
        ({"dist": "exponential"}, "lat"),
        ({"dist": "exponential", "mean": -1}, "lat.mean"),
        ({"dist": "uniform", "low": 5, "high": 1}, "lat.high"),
        ({"dist": "exponential", "mean": 1, "rate": 2}, "lat.rate"),
        ({"dist": "mixture", "components": []}, "lat.components"),
        ({"dist": "mixture", "components": [{"weight": -1, "dist": "constant", "value": 1}]},
            "lat.components[0].weight"),
        ({"dist": "empirical", "samples": [1, "x"]}, "lat.samples[1]"),
        ({"dist": "lognormal", "mu": "a", "sigma": 1}, "lat.mu"),
        ([1, 2], "lat"),
    ],
)
def test_bad_specs_name_the_field(spec, path):
    """Malformed distributions raise ScenarioError naming the parameter."""
    with pytest.raises(ScenarioError) as err:
        parse_dist(spec, "lat")
    assert err.value.path == path


def test_buffered_sampler_matches_vectorised_draws():
    """One-at-a-time buffered sampling yields exactly the vectorised draws, in order."""
    d = LogNormal(0.0, 1.0)
    draw = buffered_sampler(d, np.random.default_rng(8), block=64)
    got = [draw() for _ in range(200)]
    rng = np.random.default_rng(8)
    want = np.concatenate([d.sample(rng, 64) for _ in range(4)])[:200]
    assert np.allclose(got, want)


def test_uniform_and_empirical_support():
    """Uniform stays in [low, high]; empirical only returns observed values."""
    u = Uniform(2.0, 3.0).sample(np.random.default_rng(1), 1000)
    assert u.min() >= 2.0 and u.max() <= 3.0
    e = Empirical((1.0, 5.0)).sample(np.random.default_rng(1), 1000)
    assert set(np.unique(e)) == {1.0, 5.0}
