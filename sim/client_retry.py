"""Client retry policies: when a workload client tries an operation again, and how long it waits.

An operation's *attempt* is one request to a node. An attempt ends ``ok``,
``fail`` (the node refused) or ``info`` (timed out after ``workload.timeout``).
When it ends in an outcome listed in ``retry_on`` and attempts remain, the
client waits the policy's delay and sends the operation again, to a node picked
as the first one was (``workload.target``):

``none``         one attempt (the default: nothing changes).
``immediate``    retry at once.
``fixed``        wait ``delay`` (with ``jitter``: ``full`` or ``equal``).
``exponential``  wait ``min(max_delay, delay * multiplier**(n-1))`` after failed attempt ``n``,
                 with ``jitter`` ``none``, ``full``, ``equal`` or ``decorrelated``
                 (:mod:`sim.backoff`).

``max_attempts`` counts the first attempt (default 3 when retrying). A *retry
budget* (``budget_ratio``) is a token bucket per client, as gRPC's retry
throttling and Finagle's RetryBudget do: the bucket starts with
``budget_burst`` tokens, every first attempt adds ``budget_ratio`` tokens (never
above ``budget_burst``), and every retry takes one token; a retry finding less
than one token is not sent and the operation ends with its last attempt's
outcome. Over any stretch of time a client's retries are then at most
``budget_burst + budget_ratio * (first attempts)``.

Without ``idempotency_keys`` a retry is a new request (new request id) carrying
the same value: a server that applied the first attempt, whose answer was lost
or late, applies the write again. With them every attempt carries the
operation's key (the first attempt's request id) and a server that honours keys
answers a repeated key from its duplicate table instead of applying it again.

The operation's outcome: ``ok`` if its last attempt was ``ok``; otherwise
``info`` if any attempt ended ``info`` (that attempt may have taken effect),
else ``fail``. A late answer to an attempt that already timed out is ignored:
the client stopped waiting for it, as a client library that gave up on a
connection does. The history's ``node``, ``side`` and ``node_up`` describe the
first attempt; each attempt's node is in the attempts table.

A compare-and-set is retried like a write, except that a precondition failure
(``error = "precondition failed"``: the server decided the cas and found another
value) ends the operation: retrying cannot change that decision. Without
idempotency keys a retry of a cas whose first attempt applied but timed out
finds its own new value, so fails its precondition, and the operation ends
``info`` (it may have applied). With keys the server answers the retry with the
decision it made for the key, so the operation ends ``ok`` if some attempt
applied it and ``fail`` if the server found another value (then no attempt of
it ever applies), even after a timed-out attempt. A client's memory of a key's
value for its next cas follows the operation's outcome, not each attempt's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from .backoff import capped_exponential, decorrelated, jittered
from .config import Duration, at_least, fld, nonneg
from .errors import ScenarioError

__all__ = ["ClientRetry", "RetryBudget", "RETRY_OUTCOMES"]

RETRY_OUTCOMES = ("info", "fail")
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, kw_only=True)
class ClientRetry:
    """A client's retry policy (``[workload.retry]``; see the module docstring)."""

    policy: Literal["none", "immediate", "fixed", "exponential"] = fld("none")
    delay: Duration = fld(100.0, check=nonneg, doc="fixed delay, or the exponential base")
    multiplier: float = fld(2.0, check=at_least(1.0))
    max_delay: Duration = fld(10_000.0, check=nonneg, doc="cap of exponential delays")
    jitter: Literal["none", "full", "equal", "decorrelated"] = fld("none")
    max_attempts: int | None = fld(None, check=at_least(1), doc="attempts per operation, the first included "
                                                                  "(default 3 when retrying)")
    retry_on: tuple[str, ...] = fld(RETRY_OUTCOMES, doc="attempt outcomes that are retried: info, fail")
    budget_ratio: float | None = fld(None, check=nonneg, doc="retry tokens earned per first attempt")
    budget_burst: float = fld(10.0, check=at_least(1.0), doc="tokens at start and at most")
    idempotency_keys: bool = fld(False, doc="every attempt carries the operation's key")

    def _validate(self, path: str) -> None:
        policy = self.policy
        if policy == "none":
            if self.max_attempts not in (None, 1):
                raise ScenarioError(f"{path}.max_attempts",
                                    "policy 'none' makes exactly one attempt; pick policy 'immediate', 'fixed' "
                                    "or 'exponential'")
            if self.budget_ratio is not None:
                raise ScenarioError(f"{path}.budget_ratio", "policy 'none' never retries; a budget needs a policy")
        if self.jitter != "none" and policy in ("none", "immediate"):
            raise ScenarioError(f"{path}.jitter", f"needs a delay: set policy = 'fixed' or 'exponential', "
                                                  f"not {policy!r}")
        if self.jitter == "decorrelated" and policy != "exponential":
            raise ScenarioError(f"{path}.jitter", "'decorrelated' grows each delay from the last: needs "
                                                  "policy = 'exponential'")
        if policy == "exponential" and self.max_delay < self.delay:
            raise ScenarioError(f"{path}.max_delay", f"must be >= delay ({self.delay} ms), got {self.max_delay}")
        uses = {"delay": ("fixed", "exponential"), "multiplier": ("exponential",), "max_delay": ("exponential",)}
        for name, policies in uses.items():
            if policy not in policies and getattr(self, name) != _DEFAULTS[name]:
                raise ScenarioError(f"{path}.{name}", f"only for policy {' or '.join(map(repr, policies))}; "
                                                      f"policy {policy!r} does not use it")
        if self.budget_ratio is None and self.budget_burst != _DEFAULTS["budget_burst"]:
            raise ScenarioError(f"{path}.budget_burst", "needs budget_ratio (the budget is off without it)")
        if not self.retry_on:
            raise ScenarioError(f"{path}.retry_on", "must name at least one of: info, fail")
        for i, outcome in enumerate(self.retry_on):
            if outcome not in RETRY_OUTCOMES:
                raise ScenarioError(f"{path}.retry_on[{i}]", f"must be 'info' or 'fail', got {outcome!r}")
        if len(set(self.retry_on)) != len(self.retry_on):
            raise ScenarioError(f"{path}.retry_on", f"lists an outcome twice: {list(self.retry_on)}")

    @property
    def retries(self) -> bool:
        return self.policy != "none"

    @property
    def attempts_allowed(self) -> int:
        if self.policy == "none":
            return 1
        return DEFAULT_MAX_ATTEMPTS if self.max_attempts is None else self.max_attempts

    def delay_after(self, attempt: int, previous: float, u: float) -> float:
        """The wait before the next attempt after failed attempt ``attempt`` (1 = the first).

        ``previous`` is the wait drawn before ``attempt`` (0 after the first),
        used by decorrelated jitter; ``u`` is a uniform [0, 1) draw.
        """
        if self.policy == "immediate":
            return 0.0
        if self.policy == "fixed":
            return jittered(self.delay, self.jitter, u)
        if self.jitter == "decorrelated":
            return decorrelated(self.delay, self.max_delay, previous if attempt > 1 else self.delay, u)
        return jittered(capped_exponential(self.delay, self.multiplier, self.max_delay, attempt), self.jitter, u)

    def needs_draw(self) -> bool:
        return self.jitter != "none"


class RetryBudget:
    """A client's retry token bucket (unlimited when ``ratio`` is None)."""

    __slots__ = ("ratio", "burst", "tokens", "denied")

    def __init__(self, ratio: float | None, burst: float) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = burst
        self.denied = 0

    def first_attempt(self) -> None:
        if self.ratio is not None:
            self.tokens = min(self.burst, self.tokens + self.ratio)

    def take(self) -> bool:
        """Whether a retry may be sent now (taking its token)."""
        if self.ratio is None:
            return True
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.denied += 1
        return False


_DEFAULTS = {f.name: f.default for f in fields(ClientRetry)}
