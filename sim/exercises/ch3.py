"""Chapter 3's exercises: retries and dead letters."""

from __future__ import annotations

from typing import Any

from . import Feedback, exercise
from ._judge import number


@exercise("retry.dead_letter_fraction", chapter=3, question=(
    "Each processing attempt fails independently with probability 0.3, and a message gets at most 3 attempts "
    "before it is dead-lettered: what fraction of the messages ends in the dead-letter queue?"))
def dead_letter_fraction(answer: Any) -> Feedback:
    from ..messaging.retry import dead_letter_fraction as fraction

    return number(answer, fraction(0.3, 3), slips={"p * k is not the chance that every attempt fails: "
                                                    "the attempts are independent.": 0.3 * 3})
