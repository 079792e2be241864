"""Argument checks shared by the analytic functions.

Every check raises :class:`~sim.errors.ScenarioError` (a ``ValueError``) whose
path is the argument's name, so a caller sees ``r: must be an integer in
[1, n=3], got 4`` whether the value came from a scenario or a notebook cell.
"""

from __future__ import annotations

import math
import numbers

from ..errors import ScenarioError

__all__ = ["check_int", "check_probability", "check_rate"]


def check_int(value: object, name: str, low: int, high: int | None = None, *, high_name: str = "") -> int:
    """``value`` as an int in ``[low, high]`` (``high=None``: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ScenarioError(name, f"must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if high is None and value < low:
        raise ScenarioError(name, f"must be an integer >= {low}, got {value}")
    if high is not None and not low <= value <= high:
        upper = f"{high_name}={high}" if high_name else str(high)
        raise ScenarioError(name, f"must be an integer in [{low}, {upper}], got {value}")
    return value


def check_probability(value: object, name: str) -> float:
    """``value`` as a float in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ScenarioError(name, f"must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_rate(value: object, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite rate (events per millisecond), > 0 or, if allowed, >= 0."""
    rate = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(rate) and (rate >= 0.0 if allow_zero else rate > 0.0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ScenarioError(name, f"must be a finite rate {bound} (per ms), got {value!r}")
    return rate
