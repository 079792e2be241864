"""Closed forms for quorum systems: stale-read probability and availability.

Replicas are numbered ``1..n``; a write is acknowledged by a write quorum of
``w`` replicas and a read asks a read quorum of ``r`` replicas. These are the
static, "no propagation after commit" bounds: a replica outside the write
quorum is assumed not to have the write yet, which is the worst case the PBS
paper starts from before adding time (see :mod:`sim.analysis.pbs` for the
time-dependent WARS model).

Reference: P. Bailis, S. Venkataraman, M. J. Franklin, J. M. Hellerstein,
I. Stoica, "Probabilistically Bounded Staleness for Practical Partial
Quorums", PVLDB 5(8), 2012 (section 3).
"""

from __future__ import annotations

from math import comb

from scipy import stats

from ._checks import check_int, check_probability

__all__ = [
    "stale_read_probability",
    "k_staleness_probability",
    "quorum_availability",
    "majority_availability",
]


def _check_nrw(n: int, r: int, w: int) -> tuple[int, int, int]:
    n = check_int(n, "n", 1)
    r = check_int(r, "r", 1, n, high_name="n")
    w = check_int(w, "w", 1, n, high_name="n")
    return n, r, w


def stale_read_probability(n: int, r: int, w: int) -> float:
    """Probability that a uniformly chosen read quorum misses the latest write.

    The read quorum is ``r`` of the ``n`` replicas chosen uniformly at random;
    exactly ``w`` replicas hold the latest write. The read is stale iff all
    ``r`` replicas it asks are among the ``n - w`` others::

        p_s = C(n - w, r) / C(n, r)        (0 when r + w > n)

    >>> stale_read_probability(3, 1, 1)   # 2 of the 3 replicas are stale
    0.6666666666666666
    >>> stale_read_probability(3, 2, 2)   # strict quorum: always overlaps
    0.0
    """
    n, r, w = _check_nrw(n, r, w)
    # math.comb(k, r) is 0 for r > k, which covers r + w > n exactly.
    return comb(n - w, r) / comb(n, r)


def k_staleness_probability(n: int, r: int, w: int, k: int) -> float:
    """PBS k-staleness: probability that a read misses each of the last ``k`` writes.

    A read that misses all of the ``k`` most recent committed writes returns a
    value at least ``k`` versions behind the newest (for ``k = 1``, any stale
    read). Following the PBS paper (Bailis et al., VLDB 2012, section 3.2), the
    write quorums of the ``k`` writes are assumed to be chosen independently
    and uniformly, and no write propagates beyond its quorum before the read,
    so the read quorum misses each of them independently::

        p_sk = (C(n - w, r) / C(n, r)) ** k

    Real systems send every write to the same replicas and keep propagating
    after commit, so this is an upper bound rather than an exact value.

    >>> k_staleness_probability(3, 1, 1, 2) == stale_read_probability(3, 1, 1) ** 2
    True
    """
    n, r, w = _check_nrw(n, r, w)
    k = check_int(k, "k", 1)
    return stale_read_probability(n, r, w) ** k


def quorum_availability(n: int, q: int, p_up: float) -> float:
    """Probability that at least ``q`` of ``n`` independent nodes are up.

    Each node is up independently with probability ``p_up``, so the number
    up is Binomial(n, p_up) and::

        A = sum_{k=q}^{n} C(n, k) p_up^k (1 - p_up)^(n - k)

    >>> round(quorum_availability(3, 2, 0.9), 6)
    0.972
    """
    n = check_int(n, "n", 1)
    q = check_int(q, "q", 1, n, high_name="n")
    p_up = check_probability(p_up, "p_up")
    # sf(q - 1) = P(X > q - 1) = P(X >= q), computed without cancellation.
    return float(stats.binom.sf(q - 1, n, p_up))


def majority_availability(n: int, p_up: float) -> float:
    """Probability that a majority, ``n // 2 + 1`` of ``n`` independent nodes, is up.

    This is the fraction of time a majority-quorum system (Raft, Paxos,
    R = W = n // 2 + 1) can serve requests when nodes fail independently.

    >>> round(majority_availability(5, 0.9), 6)
    0.99144
    """
    n = check_int(n, "n", 1)
    return quorum_availability(n, n // 2 + 1, p_up)
