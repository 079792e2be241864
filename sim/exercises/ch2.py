"""Chapter 2's exercises: quorums and staleness.

The judges compute what they need when called: the quorum closed form
(:func:`sim.analysis.stale_read_probability`) and the PBS WARS model
(:mod:`sim.analysis.pbs`) on a fixed random stream, so a verdict never changes
from one call to the next.
"""

from __future__ import annotations

import math
from typing import Any

from . import Feedback, exercise
from ._judge import is_number, number, plain, whole

# -- predicting staleness for a configuration the chapter never printed ----------------------------------

PREDICT_N, PREDICT_R, PREDICT_W, PREDICT_READS = 7, 2, 3, 3


@exercise("quorum.three_stale_reads", chapter=2, question=(
    f"N = {PREDICT_N} replicas, R = {PREDICT_R}, W = {PREDICT_W}, right after a write commits (it is on exactly "
    f"W replicas). {PREDICT_READS} reads run one after the other, each asking R distinct replicas chosen at random, "
    "independently of the others. What is the probability that ALL of them miss the write? (A fraction.)"))
def three_stale_reads(answer: Any) -> Feedback:
    n, r, w, k = PREDICT_N, PREDICT_R, PREDICT_W, PREDICT_READS
    p = math.comb(n - w, r) / math.comb(n, r)
    with_replacement = (1 - w / n) ** r
    return number(plain(answer), p ** k, slips={
        f"that is {k} x p: the reads are independent, so the probabilities multiply (p^{k}), they do not add.":
            k * p,
        "that is the chance that ONE read misses the write; all of them must miss it.": p,
        "that is the chance that at least one of the reads misses it, not that all do.": 1 - (1 - p) ** k,
        "that is the chance that not all of them miss it: the complement.": 1 - p ** k,
        "that picks the R replicas with replacement: a read asks R distinct replicas (C(N-W, R) / C(N, R)).":
            with_replacement ** k,
    }, hint=f"one read misses the write when all R of its replicas are among the N - W without it; then "
            f"combine the {k} independent reads.")


# -- the smallest write quorum that always overlaps --------------------------------------------------------

MIN_W_N, MIN_W_R = 7, 3


@exercise("quorum.min_w", chapter=2, question=(
    f"N = {MIN_W_N} and R = {MIN_W_R}: what is the smallest W for which every read quorum meets every write "
    "quorum (no read can miss a committed write)?"))
def min_w(answer: Any) -> Feedback:
    from ..analysis import stale_read_probability

    n, r = MIN_W_N, MIN_W_R
    got = whole(answer)
    if got is None:
        return Feedback(False, f"W is a whole number of replicas, got {answer!r}.")
    if not 1 <= got <= n:
        return Feedback(False, f"W is between 1 and N = {n}, got {got}.")
    p = stale_read_probability(n, r, got)
    if p > 0:
        if got + r == n:
            return Feedback(False, f"R + W = N is not enough: a read can still ask exactly the {n - got} replicas "
                                   f"the write skipped (probability {p:.3g}). The quorums must overlap: R + W > N.")
        return Feedback(False, f"with W = {got} a read misses the write with probability {p:.3g}.")
    if got > 1 and stale_read_probability(n, r, got - 1) == 0:
        return Feedback(False, f"W = {got} works, but so does a smaller W: every extra acknowledgement makes "
                               "writes slower and less available.")
    return Feedback(True, "R + W > N: any read quorum shares at least one replica with any write quorum.")


# -- choosing R and W against a latency and staleness target -----------------------------------------------

PICK_N = 5
PICK_T_MS = 3.0
PICK_TARGET = 0.999
PICK_TRIALS = 40_000
PICK_SEED = 2012  # the judge's own stream: the same verdict on every call


def _pick_question() -> str:
    return (f"N = {PICK_N} replicas; every WARS delay (write, ack, read, response) is Pareto(shape=1.5, "
            f"scale=1/3) ms, mean 1 ms. Choose (R, W) so that a read starting {PICK_T_MS:g} ms after a write "
            f"commits sees it with probability at least {PICK_TARGET:.1%}, while writes still succeed with one "
            "replica down, with the lowest read latency; among such choices, the lowest write latency. "
            "Answer a pair (R, W).")


def _visibility(n: int, t: float) -> dict[tuple[int, int], float]:
    """P(consistent at t) for every (R, W) on one shared set of WARS delays (common random numbers)."""
    import numpy as np

    from ..analysis.pbs import wars_from_delays
    from ..dists import Pareto

    rng = np.random.default_rng(PICK_SEED)
    delays = Pareto(shape=1.5, scale=1 / 3)
    d = [np.asarray(delays.sample(rng, PICK_TRIALS * n), dtype=float).reshape(PICK_TRIALS, n) for _ in range(4)]
    out = {}
    for r in range(1, n + 1):
        for w in range(1, n + 1):
            out[(r, w)] = 1.0 if r + w > n else float(wars_from_delays(*d, r=r, w=w).p_consistent(t)[0])
    return out


@exercise("quorum.pick_rw", chapter=2, question=_pick_question())
def pick_rw(answer: Any) -> Feedback:
    pair = plain(answer)
    if isinstance(pair, dict):
        pair = (pair.get("R", pair.get("r")), pair.get("W", pair.get("w")))
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(is_number(x) for x in pair):
        return Feedback(False, f"the answer is a pair (R, W) of whole numbers, got {answer!r}.")
    r, w = whole(pair[0]), whole(pair[1])
    if r is None or w is None or not (1 <= r <= PICK_N and 1 <= w <= PICK_N):
        return Feedback(False, f"R and W are whole numbers of replicas between 1 and N = {PICK_N}, got {pair!r}.")
    if w > PICK_N - 1:
        return Feedback(False, f"W = {w} needs an acknowledgement from every replica: with one replica down no "
                               "write can complete, and the writes must stay available.")
    p = _visibility(PICK_N, PICK_T_MS)
    meets = {(rr, ww) for (rr, ww), v in p.items() if v >= PICK_TARGET and ww <= PICK_N - 1}
    if (r, w) not in meets:
        return Feedback(False, f"R = {r}, W = {w} sees the write {PICK_T_MS:g} ms after commit with probability "
                               f"{p[(r, w)]:.4f} < {PICK_TARGET}. Compute the t-visibility with "
                               "wars_t_visibility for the candidates.")
    fastest_r = min(rr for rr, _ in meets)
    if r > fastest_r:
        strict = " (R + W > N is always fresh, but not the only way to be fresh enough)" if r + w > PICK_N else ""
        return Feedback(False, f"valid{strict}, but not the fastest reads: a read waits for its R-th fastest "
                               f"replica, and R = {fastest_r} already reaches {PICK_TARGET:.1%} with a suitable W.")
    best_w = min(ww for rr, ww in meets if rr == r)
    if w > best_w:
        return Feedback(False, f"reads are as fast as they can be, but a write waits for W acks: W = {best_w} "
                               f"already reaches {PICK_TARGET:.1%} with R = {r}.")
    partial = (f" A partial quorum (R + W = {r + w} <= N) is fresh enough here because the write keeps "
               "spreading after its commit." if r + w <= PICK_N else "")
    return Feedback(True, f"R = {r}, W = {w}: P(consistent at {PICK_T_MS:g} ms) = {p[(r, w)]:.4f}, and no "
                          f"allowed choice with fewer replicas to wait for reaches the target.{partial}")
