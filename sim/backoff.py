"""Backoff delays and jitter, shared by message consumers and workload clients.

The three jitters of AWS's "Exponential Backoff and Jitter" (Marc Brooker,
2015), with ``d`` the capped exponential delay ``min(cap, base * multiplier**(n-1))``
before retry ``n`` and ``u`` a uniform draw in [0, 1):

``full``          ``u * d``: anywhere in ``[0, d)``;
``equal``         ``d/2 + u * d/2``: in ``[d/2, d)``, never shorter than half;
``decorrelated``  ``min(cap, base + u * (3 * previous - base))``: in ``[base, 3 * previous)``,
                  where ``previous`` is the delay drawn before the last retry (``base``
                  before the first). It does not use the attempt number: each delay grows
                  from the one before it.

Callers pass the uniform draw, so each decides where its randomness comes from
(a hash of the message id for consumers, a named stream for clients).
"""

from __future__ import annotations

__all__ = ["JITTERS", "capped_exponential", "jittered", "decorrelated"]

JITTERS = ("none", "full", "equal", "decorrelated")


def capped_exponential(base: float, multiplier: float, cap: float, attempt: int) -> float:
    """``min(cap, base * multiplier**(attempt-1))``: the delay after failed attempt ``attempt`` (1 = the first)."""
    try:
        return min(cap, base * multiplier ** (attempt - 1))
    except OverflowError:  # a huge attempt number: far past the cap
        return cap


def jittered(delay: float, jitter: str, u: float) -> float:
    """``delay`` with ``none``, ``full`` or ``equal`` jitter, ``u`` a uniform [0, 1) draw."""
    if jitter == "full":
        return u * delay
    if jitter == "equal":
        return delay / 2 + u * delay / 2
    if jitter == "none":
        return delay
    raise ValueError(f"jitter {jitter!r} needs the previous delay (use decorrelated()) or is unknown")


def decorrelated(base: float, cap: float, previous: float, u: float) -> float:
    """The decorrelated-jitter delay after a delay of ``previous`` (``base`` before the first retry)."""
    high = max(base, 3.0 * previous)
    return min(cap, base + u * (high - base))
