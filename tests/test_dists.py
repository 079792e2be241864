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
    Shifted,
    Uniform,
    buffered_sampler,
    parse_dist,
)
from sim.errors import ScenarioError
from sim.scenario import Scenario

CASES = [
    {"dist": "constant", "value": "3ms"},
    {"dist": "uniform", "low": 1, "high": "3ms"},
    {"dist": "exponential", "mean": "2ms"},
    {"dist": "lognormal", "mu": 0.5, "sigma": 0.4},
    {"dist": "pareto", "shape": 3.0, "scale": 1.0},
    {"dist": "mixture", "components": [{"weight": 3, "dist": "constant", "value": 1},
                                       {"weight": 1, "dist": "exponential", "mean": 8}]},
    {"dist": "empirical", "samples": [1, 2, 2, 7]},
    {"dist": "exponential", "rate": 0.25},
    {"dist": "shifted", "offset": "75ms", "base": {"dist": "pareto", "shape": 3.0, "scale": 1.05}},
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
        ({"dist": "exponential", "rate": 0}, "lat.rate"),
        ({"dist": "exponential", "rate": "5/parsec"}, "lat.rate"),
        ({"dist": "exponential", "rate": "fast"}, "lat.rate"),
        ({"dist": "exponential", "rate": True}, "lat.rate"),
        ({"dist": "shifted", "offset": "75ms"}, "lat.base"),
        ({"dist": "shifted", "base": {"dist": "gaussian"}, "offset": 1}, "lat.base.dist"),
        ({"dist": "shifted", "base": 1, "offset": "-3ms"}, "lat.offset"),
        ({"dist": "shifted", "base": 1, "offset": 1, "scale": 2}, "lat.scale"),
        ({"dist": "empirical"}, "lat.samples"),
        ({"dist": "empirical", "samples": []}, "lat.samples"),
        ({"dist": "empirical", "samples": [1], "column": "x"}, "lat.column"),
        ({"dist": "empirical", "csv": 3}, "lat.csv"),
        ({"dist": "empirical", "csv": "/no/such/file.csv", "column": "x"}, "lat.csv"),
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


def test_shifted_matches_scipy_and_a_wrong_offset_is_rejected():
    """Shifted samples pass a KS test against scipy's shifted law; the same test rejects the unshifted law."""
    rng = np.random.default_rng(11)
    x = Shifted(Exponential(4.0), 75.0).sample(rng, 20_000)
    assert stats.kstest(x, stats.expon(loc=75.0, scale=4.0).cdf).pvalue > 0.001
    assert stats.kstest(x, stats.expon(loc=74.0, scale=4.0).cdf).pvalue < 1e-6  # the test can fail
    y = parse_dist({"dist": "shifted", "offset": "2ms", "base": {"dist": "pareto", "shape": 2.5, "scale": 1.5}})
    z = y.sample(rng, 20_000)
    assert stats.kstest(z, stats.pareto(b=2.5, scale=1.5, loc=2.0).cdf).pvalue > 0.001
    assert y.mean == pytest.approx(2.0 + 2.5 * 1.5 / 1.5)
    assert isinstance(y.sample(rng), float) and y.sample(rng) >= 3.5


def test_exponential_rate_is_per_ms_or_has_a_unit():
    """rate = lambda per ms gives mean 1/lambda ms; '200/s' is 0.2 per ms; samples follow scipy's expon(1/lambda)."""
    d = parse_dist({"dist": "exponential", "rate": 0.183})
    assert d == Exponential.from_rate(0.183) and d.mean == pytest.approx(1 / 0.183)
    assert parse_dist({"dist": "exponential", "rate": "200/s"}) == Exponential(5.0)
    assert parse_dist({"dist": "exponential", "rate": "0.5/us"}).mean == pytest.approx(0.002)
    x = d.sample(np.random.default_rng(5), 20_000)
    assert stats.kstest(x, stats.expon(scale=1 / 0.183).cdf).pvalue > 0.001
    assert stats.kstest(x, stats.expon(scale=0.183).cdf).pvalue < 1e-6  # rate read as a mean: rejected


def test_mixture_with_rates_matches_its_exact_mean_and_quantiles():
    """The PBS paper's LNKD-DISK write fit (Pareto + exponential by rate): moments and a quantile within their CIs."""
    d = parse_dist({"dist": "mixture", "components": [
        {"weight": 0.38, "dist": "pareto", "scale": 1.05, "shape": 1.51},
        {"weight": 0.62, "dist": "exponential", "rate": 0.183}]})
    assert d.mean == pytest.approx(0.38 * 1.51 * 1.05 / 0.51 + 0.62 / 0.183)
    x = d.sample(np.random.default_rng(6), 400_000)
    # P(X <= 5 ms) exactly, and the binomial 5-sigma band around it
    p = 0.38 * stats.pareto(b=1.51, scale=1.05).cdf(5.0) + 0.62 * stats.expon(scale=1 / 0.183).cdf(5.0)
    assert abs((x <= 5.0).mean() - p) <= 5 * math.sqrt(p * (1 - p) / len(x))


def test_empirical_from_csv_round_trip(tmp_path):
    """Values read from a CSV column (in us) come back as samples in ms; to_dict parses back to an equal object."""
    values_us = [512.0, 730.5, 1204.0, 498.25]
    lines = ["trace_id,duration_us,service"] + [f"t{i},{v},db" for i, v in enumerate(values_us)]
    (tmp_path / "spans.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = {"dist": "empirical", "csv": str(tmp_path / "spans.csv"), "column": "duration_us", "unit": "us"}
    d = parse_dist(spec)
    assert d == Empirical.from_csv(tmp_path / "spans.csv", "duration_us", "us")
    assert d.samples == pytest.approx(tuple(v / 1000 for v in values_us))
    assert parse_dist(d.to_dict()) == d
    assert set(d.sample(np.random.default_rng(0), 500)) == set(d.samples)
    (tmp_path / "one.csv").write_text("rtt_ms\n0.5\n0.7\n\n", encoding="utf-8")  # one column: no name needed
    assert parse_dist({"dist": "empirical", "csv": str(tmp_path / "one.csv")}).samples == (0.5, 0.7)
    assert Empirical.from_samples(["1ms", 2]) == Empirical((1.0, 2.0))


@pytest.mark.parametrize("text, column, path, words", [
    ("rtt_ms\n0.5\ntimeout\n", None, "lat.csv", "line 3"),
    ("rtt_ms\n0.5\n-1\n", None, "lat.csv", "line 3"),
    ("rtt_ms\n0.5\nnan\n", None, "lat.csv", "line 3"),
    ("a,b\n1\n", "b", "lat.csv", "line 2"),
    ("rtt_ms\n", None, "lat.csv", "no values"),
    ("", None, "lat.csv", "empty"),
    ("a,b\n1,2\n", None, "lat.column", "'a', 'b'"),
])
def test_bad_csv_files_name_the_line(tmp_path, text, column, path, words):
    """A blank, non-numeric or negative value, a missing column or an empty file is a ScenarioError saying where."""
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    spec = {"dist": "empirical", "csv": str(tmp_path / "m.csv")}
    if column:
        spec["column"] = column
    with pytest.raises(ScenarioError) as err:
        parse_dist(spec, "lat")
    assert err.value.path == path and words in str(err.value)
    with pytest.raises(ScenarioError) as err:
        parse_dist({**spec, "unit": "parsec"}, "lat")
    assert err.value.path == "lat.unit"


SCENARIO = """
[cluster]
count = 3

[network]
latency = {{ dist = "shifted", offset = "75ms", base = {{ dist = "exponential", rate = 0.183 }} }}

[workload]
clients = 1
think_time = {{ dist = "empirical", csv = "{csv}", column = "rtt_ms" }}

[protocol]
name = "single_copy"
"""


def test_scenario_csv_path_is_relative_to_the_toml_file(tmp_path, monkeypatch):
    """A relative csv path is read from the TOML file's folder, whatever the cwd; the scenario survives to_toml."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ping.csv").write_text("seq,rtt_ms\n1,0.41\n2,0.52\n", encoding="utf-8")
    (tmp_path / "s.toml").write_text(SCENARIO.format(csv="data/ping.csv"), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = Scenario.from_toml(tmp_path / "s.toml")
    assert s.workload.think_time == Empirical((0.41, 0.52))
    assert s.network.latency == Shifted(Exponential(1 / 0.183), 75.0)
    assert Scenario.from_toml_string(s.to_toml()) == s
    # from a string without a base folder, the same relative path is taken from the cwd, where it is missing
    with pytest.raises(ScenarioError) as err:
        Scenario.from_toml_string(SCENARIO.format(csv="data/ping.csv"))
    assert err.value.path == "workload.think_time.csv" and "not found" in str(err.value)
