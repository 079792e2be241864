"""Retry policies for consumers, the seeded per-message decisions, and the retry oracle.

A consumer whose processing attempt fails applies its :class:`RetryPolicy`
(``mode``):

``none``            reject without requeue: the queue's dead-letter exchange (if any) gets it.
``requeue``         consumer-side: wait ``delay(attempt)`` (0 with ``backoff = "immediate"``)
                    holding the message, then ``basic.nack(requeue=true)``; after
                    ``max_attempts`` reject it to the queue's DLX.
``delivery_limit``  broker-side: always nack with requeue; the quorum queue's
                    ``x-delivery-limit`` dead-letters it (reason ``delivery_limit``).
``republish``       consumer-side: publish a copy carrying ``x-retry-count`` and ack the
                    original once the copy is confirmed. Without ``via_exchange`` the consumer
                    first waits ``delay(attempt)`` holding the original; with it the copy goes
                    to ``via_exchange`` at once with a per-message ``expiration`` of
                    ``delay(attempt)``, and a TTL wait queue bound there dead-letters it back
                    (per-message TTL expires only at the head: jittered delays queue up
                    behind longer ones). After ``max_attempts`` reject to the queue's DLX.
``dlx_wait``        broker-side: reject without requeue; the work queue's DLX routes to a wait
                    queue whose ``x-message-ttl`` is the delay and whose DLX routes back. The
                    attempt number is read from ``x-death``; after ``max_attempts`` the
                    consumer publishes the message to ``dead_letter_exchange`` and acks it.

Delays: ``fixed`` = ``delay``; ``exponential`` = ``min(max_delay, delay * multiplier**(attempt-1))``;
``full`` jitter draws uniformly in ``[0, d)``, ``equal`` jitter in ``[d/2, d)`` (:mod:`sim.backoff`).

Decisions (does attempt *n* of message *m* fail? does the consumer crash? which
jitter?) come from :func:`decision_uniform`, a hash of (run seed, purpose,
message id, attempt): not from a stream whose position depends on event order.
Any consumer facing attempt *n* of *m* decides the same, and a run against a
real broker with the same seed faces exactly the same decisions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from ..backoff import capped_exponential, jittered
from ..config import Duration, at_least, fld, nonneg
from ..errors import ScenarioError

__all__ = ["RetryPolicy", "decision_uniform", "dead_letter_fraction", "mean_attempts"]

_SCALE = float(2**64)


def decision_uniform(seed: int, purpose: str, msg_id: str, attempt: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, purpose, message id, attempt)."""
    digest = hashlib.blake2b(f"{seed}/{purpose}/{msg_id}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / _SCALE


def dead_letter_fraction(p: float, k: int) -> float:
    """Fraction of messages dead-lettered when each of at most ``k`` attempts fails with probability ``p``."""
    return p**k


def mean_attempts(p: float, k: int) -> float:
    """Mean attempts per message: sum of p**i for i < k = (1 - p**k) / (1 - p)."""
    return float(k) if p == 1.0 else (1.0 - p**k) / (1.0 - p)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """What a consumer does when an attempt fails (see the module docstring)."""

    mode: Literal["none", "requeue", "delivery_limit", "republish", "dlx_wait"] = fld("none")
    backoff: Literal["immediate", "fixed", "exponential"] = fld("immediate")
    delay: Duration = fld(100.0, check=nonneg)
    multiplier: float = fld(2.0, check=at_least(1.0))
    max_delay: Duration = fld(30_000.0, check=nonneg)
    jitter: Literal["none", "full", "equal"] = fld("none")
    max_attempts: int | None = fld(None, check=at_least(1))
    via_exchange: str | None = fld(None)
    dead_letter_exchange: str | None = fld(None)
    dead_letter_routing_key: str | None = fld(None)

    def _validate(self, path: str) -> None:
        mode = self.mode
        if self.max_delay < self.delay:
            raise ScenarioError(f"{path}.max_delay", f"must be >= delay ({self.delay} ms), got {self.max_delay}")
        if self.jitter != "none" and self.backoff == "immediate":
            raise ScenarioError(f"{path}.jitter", "needs a delay: set backoff = 'fixed' or 'exponential'")
        if mode == "none":
            if self.max_attempts not in (None, 1):
                raise ScenarioError(f"{path}.max_attempts", "mode 'none' makes exactly one attempt; pick a retry mode")
            if self.backoff != "immediate":
                raise ScenarioError(f"{path}.backoff", "mode 'none' never retries")
        if mode == "delivery_limit" and self.max_attempts is not None:
            raise ScenarioError(f"{path}.max_attempts",
                                "with mode 'delivery_limit' the queue's delivery_limit decides (attempts = limit + 1)")
        if mode == "dlx_wait":
            if self.backoff != "immediate":
                raise ScenarioError(f"{path}.backoff", "with mode 'dlx_wait' the wait queue's message_ttl is the delay")
            if self.max_attempts is not None and self.dead_letter_exchange is None:
                raise ScenarioError(f"{path}.dead_letter_exchange",
                                    "mode 'dlx_wait' with max_attempts needs the exchange of the final "
                                    "dead-letter queue")
        elif self.dead_letter_exchange is not None or self.dead_letter_routing_key is not None:
            raise ScenarioError(f"{path}.dead_letter_exchange",
                                "only for mode 'dlx_wait'; other modes reject to the queue's own dead-letter exchange")
        if self.via_exchange is not None:
            if mode != "republish":
                raise ScenarioError(f"{path}.via_exchange", "only for mode 'republish'")
            if self.backoff == "immediate":
                raise ScenarioError(f"{path}.backoff", "via_exchange needs a delay: 'fixed' or 'exponential'")

    # -- delays ---------------------------------------------------------------------
    def base_delay(self, attempt: int) -> float:
        """The delay before retrying after failed attempt ``attempt`` (1 = the first), without jitter."""
        if self.backoff == "immediate":
            return 0.0
        if self.backoff == "fixed":
            return self.delay
        return capped_exponential(self.delay, self.multiplier, self.max_delay, attempt)

    def delay_for(self, attempt: int, u: float) -> float:
        """The jittered delay, ``u`` being a uniform [0, 1) draw."""
        return jittered(self.base_delay(attempt), self.jitter, u)

    def exhausted(self, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` was the last one allowed."""
        return self.mode == "none" or (self.max_attempts is not None and attempt >= self.max_attempts)
