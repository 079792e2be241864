"""Durations: numbers are milliseconds, strings carry units."""

import math

import pytest

from sim.errors import ScenarioError
from sim.units import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, ms",
    [("250us", 0.25), ("5ms", 5.0), ("2s", 2000.0), ("1min", 60000.0), ("1.5s", 1500.0), ("1h", 3.6e6), (7, 7.0),
     (0.5, 0.5), ("12", 12.0)],
)
def test_parse_duration_units(text, ms):
    """Every accepted unit converts to milliseconds."""
    assert parse_duration(text) == pytest.approx(ms)


@pytest.mark.parametrize("bad", ["5 parsecs", "fast", "", "-3ms", -1, True, None, [1], {"a": 1}, float("nan"),
                                     "1e400s"])
def test_parse_duration_rejects_with_path(bad):
    """Malformed durations raise ScenarioError naming the field."""
    with pytest.raises(ScenarioError) as err:
        parse_duration(bad, "run.duration")
    assert str(err.value).startswith("run.duration: ")


def test_infinite_only_when_allowed():
    """'inf' is a duration only where the field allows it."""
    assert parse_duration("inf", "x", allow_inf=True) == math.inf
    with pytest.raises(ScenarioError):
        parse_duration("inf", "x")


def test_format_duration_reads_back():
    """The short form parses back to the same number."""
    for ms in (0.25, 3.0, 1500.0, 120000.0):
        assert parse_duration(format_duration(ms)) == pytest.approx(ms)
