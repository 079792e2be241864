"""Steady-state M/M/1 and M/M/c queues: the oracles for simulated queues.

Units follow the project: **rates are per millisecond** (an arrival rate of
0.5 is 500 requests per second) and every time is in **milliseconds**. A
service time with mean ``m`` ms is a service rate of ``1 / m`` per ms.

Both functions return a :class:`QueueMetrics` record; an unstable queue
(arrival rate >= servers x service rate, so the queue grows without bound and
has no steady state) raises :class:`UnstableQueueError`.

Reference: L. Kleinrock, *Queueing Systems, Volume 1: Theory*, 1975, sections
3.2 (M/M/1) and 3.5 (M/M/m); or any queueing textbook.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from ..errors import ScenarioError
from ._checks import check_int, check_rate

__all__ = ["QueueMetrics", "UnstableQueueError", "mm1", "mmc", "erlang_c"]


class UnstableQueueError(ScenarioError):
    """The arrival rate is at least the total service rate: no steady state exists."""


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """Steady-state figures of one queue (rates per ms, times in ms)."""

    servers: int
    arrival_rate: float
    service_rate: float
    utilisation: float
    """Fraction of time each server is busy, ``rho = lambda / (c mu)``."""
    p_wait: float
    """Probability that an arrival has to queue (all servers busy)."""
    mean_wait: float
    """Mean time in the queue before service starts, ``W_q``."""
    mean_time_in_system: float
    """Mean time from arrival to departure, ``W = W_q + 1/mu``."""
    mean_number_in_queue: float
    """Mean number waiting, ``L_q = lambda W_q`` (Little's law)."""
    mean_number_in_system: float
    """Mean number waiting or in service, ``L = lambda W``."""

    def to_dict(self) -> dict[str, float]:
        """The record as a flat dict (one row of a DataFrame)."""
        return asdict(self)


def _check_stable(arrival_rate: float, service_rate: float, servers: int) -> None:
    capacity = servers * service_rate
    if arrival_rate >= capacity:
        raise UnstableQueueError(
            "arrival_rate",
            f"queue is unstable: arrival_rate {arrival_rate:g}/ms >= servers x service_rate "
            f"= {servers} x {service_rate:g} = {capacity:g}/ms (utilisation "
            f"{arrival_rate / capacity:g} >= 1); there is no steady state",
        )


def mm1(arrival_rate: float, service_rate: float) -> QueueMetrics:
    """The M/M/1 queue: Poisson arrivals, one server with exponential service.

    With ``rho = lambda / mu < 1``::

        W   = 1 / (mu - lambda)          W_q = rho / (mu - lambda)
        L   = rho / (1 - rho)            L_q = rho^2 / (1 - rho)
        P(wait) = rho

    >>> q = mm1(arrival_rate=0.5, service_rate=1.0)   # 500/s into a 1 ms server
    >>> q.utilisation, q.mean_time_in_system, q.mean_number_in_system
    (0.5, 2.0, 1.0)
    """
    lam = check_rate(arrival_rate, "arrival_rate", allow_zero=True)
    mu = check_rate(service_rate, "service_rate")
    _check_stable(lam, mu, 1)
    rho = lam / mu
    return QueueMetrics(
        servers=1,
        arrival_rate=lam,
        service_rate=mu,
        utilisation=rho,
        p_wait=rho,
        mean_wait=rho / (mu - lam),
        mean_time_in_system=1.0 / (mu - lam),
        mean_number_in_queue=rho * rho / (1.0 - rho),
        mean_number_in_system=rho / (1.0 - rho),
    )


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang C: probability that an arrival to an M/M/c queue must wait.

    ``offered_load`` is ``a = lambda / mu`` in Erlangs and must be below
    ``servers``. The textbook form is::

        C(c, a) = (a^c / c!) (c / (c - a)) / (sum_{k<c} a^k / k! + (a^c / c!) (c / (c - a)))

    It is computed from the Erlang B recursion ``B(0) = 1``,
    ``B(k) = a B(k-1) / (k + a B(k-1))`` and ``C = c B / (c - a (1 - B))``,
    which never forms ``a^c`` or ``c!`` and so stays accurate for large ``c``.

    >>> round(erlang_c(2, 1.0), 12)   # two servers, one Erlang offered: 1/3
    0.333333333333
    """
    c = check_int(servers, "servers", 1)
    if (
        isinstance(offered_load, bool)
        or not isinstance(offered_load, numbers.Real)
        or not 0.0 <= float(offered_load) < math.inf
    ):
        raise ScenarioError("offered_load", f"must be a finite number >= 0 (Erlangs), got {offered_load!r}")
    a = float(offered_load)
    if a >= c:
        raise UnstableQueueError(
            "offered_load", f"must be below servers={c} for a stable queue, got {a:g}"
        )
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return c * b / (c - a * (1.0 - b))


def mmc(arrival_rate: float, service_rate: float, servers: int) -> QueueMetrics:
    """The M/M/c queue: Poisson arrivals, ``c`` identical exponential servers, one FIFO queue.

    With offered load ``a = lambda / mu``, ``rho = a / c < 1`` and ``C`` the
    Erlang C probability of waiting (:func:`erlang_c`)::

        W_q = C / (c mu - lambda)        W = W_q + 1 / mu
        L_q = lambda W_q                 L = lambda W

    For ``c = 1`` this is :func:`mm1`.

    >>> q = mmc(arrival_rate=1.0, service_rate=1.0, servers=2)
    >>> round(q.p_wait, 12), round(q.mean_wait, 12)
    (0.333333333333, 0.333333333333)
    """
    lam = check_rate(arrival_rate, "arrival_rate", allow_zero=True)
    mu = check_rate(service_rate, "service_rate")
    c = check_int(servers, "servers", 1)
    _check_stable(lam, mu, c)
    p_wait = erlang_c(c, lam / mu)
    mean_wait = p_wait / (c * mu - lam)
    mean_time = mean_wait + 1.0 / mu
    return QueueMetrics(
        servers=c,
        arrival_rate=lam,
        service_rate=mu,
        utilisation=lam / (c * mu),
        p_wait=p_wait,
        mean_wait=mean_wait,
        mean_time_in_system=mean_time,
        mean_number_in_queue=lam * mean_wait,
        mean_number_in_system=lam * mean_time,
    )
