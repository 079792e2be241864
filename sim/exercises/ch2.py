"""Chapter 2's exercises: quorums and staleness."""

from __future__ import annotations

from typing import Any

from . import Feedback, exercise
from ._judge import is_number, number


@exercise("quorum.stale_probability", chapter=2, question=(
    "N = 5 replicas, R = 2, W = 2, reads and writes picking their quorums at random: what is the "
    "probability that a read quorum misses every replica of the latest write?"))
def stale_probability(answer: Any) -> Feedback:
    from ..analysis import stale_read_probability

    return number(answer, stale_read_probability(5, 2, 2))


@exercise("quorum.min_w", chapter=2, question=(
    "N = 5 and R = 3: what is the smallest W for which every read quorum meets every write quorum?"))
def min_w(answer: Any) -> Feedback:
    from ..analysis import stale_read_probability

    want = next(w for w in range(1, 6) if stale_read_probability(5, 3, w) == 0.0)
    if not is_number(answer) or float(answer) != int(float(answer)):
        return Feedback(False, f"W is a whole number of replicas, got {answer!r}.")
    if int(answer) == want:
        return Feedback(True, "R + W > N: any read quorum overlaps any write quorum.")
    return Feedback(False, "count how many replicas a read quorum can miss.")
