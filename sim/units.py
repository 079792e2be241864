"""Durations: every time in capsim is simulated milliseconds (float).

Configs accept plain numbers (milliseconds) or strings with a unit:
``"250us"``, ``"5ms"``, ``"2s"``, ``"1.5min"``, ``"1h"``.
"""

from __future__ import annotations

import math
import re

from .errors import ScenarioError

__all__ = ["parse_duration", "format_duration", "UNITS_MS"]

UNITS_MS: dict[str, float] = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,
    "ms": 1.0,
    "s": 1000.0,
    "min": 60_000.0,
    "h": 3_600_000.0,
}

_DURATION_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zµ]+)?\s*$")


def parse_duration(value: object, path: str = "", *, allow_inf: bool = False) -> float:
    """Return ``value`` in milliseconds; raise :class:`ScenarioError` naming ``path``.

    Numbers are taken as milliseconds. Negative durations are rejected.
    """
    if isinstance(value, bool):
        raise ScenarioError(path, f"must be a duration (number of ms or a string like '5ms', '2s'), got {value!r}")
    if isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if allow_inf and text.lower() in ("inf", "infinity", "forever"):
            return math.inf
        m = _DURATION_RE.match(text)
        if not m:
            raise ScenarioError(
                path,
                f"must be a duration such as 250us, 5ms, 2s or 1min, got {value!r}",
            )
        unit = m.group(2) or "ms"
        if unit not in UNITS_MS:
            raise ScenarioError(
                path, f"unknown time unit {unit!r} in {value!r}; accepted units: {', '.join(UNITS_MS)}"
            )
        ms = float(m.group(1)) * UNITS_MS[unit]
    else:
        raise ScenarioError(
            path,
            f"must be a duration (number of ms or a string like '5ms', '2s'), got {type(value).__name__} {value!r}",
        )
    if math.isnan(ms) or (math.isinf(ms) and not allow_inf):
        raise ScenarioError(path, f"must be a finite duration, got {value!r}")
    if ms < 0:
        raise ScenarioError(path, f"must not be negative, got {value!r}")
    return ms


def format_duration(ms: float) -> str:
    """A short human-readable form of a duration in milliseconds."""
    if math.isinf(ms):
        return "inf"
    if ms >= 60_000:
        return f"{ms / 60_000:g}min"
    if ms >= 1000:
        return f"{ms / 1000:g}s"
    if ms >= 1 or ms == 0:
        return f"{ms:g}ms"
    if ms >= 1e-3:
        return f"{ms * 1000:g}us"
    return f"{ms * 1e6:g}ns"
