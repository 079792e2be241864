"""Small helpers the chapter judges share: comparing numbers and words, spotting common slips."""

from __future__ import annotations

import math
from typing import Any

from . import Feedback

__all__ = ["is_number", "number", "word", "plain", "whole"]


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def number(got: Any, want: float, *, rel: float = 1e-3, slips: dict[str, float] | None = None,
           hint: str = "") -> Feedback:
    """Feedback for a numeric answer: right within ``rel``; percent instead of a fraction and the
    named ``slips`` (label -> the value that slip gives) get their own message."""
    if not is_number(got) or not math.isfinite(float(got)):
        return Feedback(False, f"the answer is a number, got {got!r}.")
    got = float(got)
    if math.isclose(got, want, rel_tol=rel, abs_tol=1e-12):
        return Feedback(True, f"{got:.6g}.")
    if want and math.isclose(got, 100 * want, rel_tol=rel):
        return Feedback(False, "that looks like a percentage: give the fraction (between 0 and 1).")
    for label, value in (slips or {}).items():
        if math.isclose(got, value, rel_tol=rel, abs_tol=1e-12):
            return Feedback(False, label)
    return Feedback(False, hint or "recompute it from the mechanism above.")


def word(got: Any, want: str, choices: tuple[str, ...], *, why: str = "") -> Feedback:
    if not isinstance(got, str) or got.strip().lower() not in choices:
        return Feedback(False, f"answer one of {', '.join(repr(c) for c in choices)}; got {got!r}.")
    if got.strip().lower() == want:
        return Feedback(True, why)
    return Feedback(False, "look at which side keeps answering in the runs above and why.")


# -- helpers for answers that are structures (configurations, schedules, pairs) ----------------------


def plain(value: Any) -> Any:
    """``value`` with every numpy scalar or array inside lists, tuples and dicts turned into Python values."""
    from ..config import python_value

    value = python_value(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def whole(got: Any) -> int | None:
    """``got`` as an int when it is a whole number (``3``, ``3.0``, ``np.int64(3)``), else None."""
    got = plain(got)
    if not is_number(got) or not math.isfinite(float(got)) or float(got) != int(float(got)):
        return None
    return int(got)
