"""Small helpers the chapter judges share: comparing numbers and words, spotting common slips."""

from __future__ import annotations

import math
from typing import Any

from . import Feedback

__all__ = ["is_number", "number", "word", "plain", "whole", "settings", "schedule", "invalid", "sequence"]


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


# -- answers that are structures: configurations, schedules, pairs, orders -----------------------------


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python values at every depth (dicts, lists,
    tuples), so that a configuration built with numpy numbers is judged like one typed by hand."""
    from ..config import python_value

    value = python_value(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def whole(got: Any) -> int | None:
    """``got`` as an int when it is a whole number (``3``, ``3.0``, ``np.int64(3)``), else None."""
    got = plain(got)
    if not is_number(got) or not math.isfinite(float(got)) or float(got) != int(float(got)):
        return None
    return int(got)


def settings(answer: Any, allowed: tuple[str, ...], *, required: tuple[str, ...] = (),
             what: str = "a dict") -> dict[str, Any] | Feedback:
    """A configuration answer as a plain dict, or the Feedback that says what is wrong with its shape:
    not a dict, a key that is not one of ``allowed`` (named), a ``required`` key missing."""
    answer = plain(answer)
    if not isinstance(answer, dict):
        return Feedback(False, f"the answer is {what}, got {answer!r}.")
    for key in answer:
        if key not in allowed:
            return Feedback(False, f"unknown key {key!r}; the keys are {', '.join(map(repr, allowed))}.")
    for key in required:
        if key not in answer:
            return Feedback(False, f"the answer needs the key {key!r}.")
    return answer


def schedule(answer: Any, kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]] | Feedback:
    """A fault-schedule answer (a list of fault dicts, as in a scenario's ``faults.schedule``; one dict
    counts as a list of one) as plain dicts, or the Feedback saying what is wrong with its shape.
    ``kinds`` restricts the fault kinds the exercise allows."""
    answer = plain(answer)
    if isinstance(answer, dict):
        answer = [answer]
    if not isinstance(answer, list) or not all(isinstance(f, dict) for f in answer):
        return Feedback(False, "the answer is a list of faults, each a dict such as "
                               "{'kind': 'partition', 'start': 100, 'end': 200, 'groups': [['n2']]}; "
                               f"got {answer!r}.")
    if kinds is not None:
        for i, fault in enumerate(answer):
            if fault.get("kind") not in kinds:
                return Feedback(False, f"fault {i} is a {fault.get('kind')!r}: this exercise takes only "
                                       f"{' or '.join(map(repr, kinds))} faults.")
    return answer


def invalid(exc: Exception, fields: dict[str, str] | None = None) -> Feedback:
    """The Feedback for an answer the scenario refused (a :class:`~sim.errors.ScenarioError`): its message,
    with the scenario's field path replaced by the answer's name for it where ``fields`` maps one
    (scenario path prefix -> what the student wrote, e.g. ``"faults.schedule"`` -> ``"answer"``)."""
    text = str(exc)
    for prefix, name in (fields or {}).items():
        if text.startswith(prefix):
            text = name + text[len(prefix):]
            break
    return Feedback(False, f"the scenario refused it: {text}")


def sequence(answer: Any) -> list[str] | Feedback:
    """An ordering answer (``"m3 m4 m0"``, ``"m3, m4"`` or ``["m3", "m4"]``) as a list of words, or the
    Feedback saying it is not one."""
    answer = plain(answer)
    if isinstance(answer, str):
        words = answer.replace(",", " ").split()
    elif isinstance(answer, list) and all(isinstance(w, str) for w in answer):
        words = [w.strip() for w in answer]
    else:
        return Feedback(False, f"the answer is a sequence of message ids such as 'm1 m0' or ['m1', 'm0']; "
                               f"got {answer!r}.")
    return [w for w in words if w]
