"""Answer checkers for the exercises in the notebooks.

``check(name, answer)`` prints whether the answer is right (and why, when it is
not) and returns True or False. The expected answers are computed, not stored:
from the closed forms in :mod:`sim.analysis` or by running the simulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .config import python_value

__all__ = ["check", "EXERCISES"]


def _raft_side() -> str:
    import sim

    scenario = sim.Scenario.from_dict({
        "cluster": {"count": 5},
        "faults": {"schedule": [{"kind": "partition", "start": "1s", "end": "4s", "groups": [["n1", "n2"]]}]},
        "workload": {"clients": 10, "rate": 20, "timeout": "300ms"},
        "protocol": {"name": "raft"},
        "run": {"duration": "4s", "warmup": "2s", "seed": 1},
    })
    s = sim.run(scenario).summary
    return "majority" if s["availability.majority"] > s["availability.minority"] else "minority"


def _stale_probability() -> float:
    from .analysis import stale_read_probability

    return stale_read_probability(5, 2, 2)


def _min_w() -> int:
    from .analysis import stale_read_probability

    return next(w for w in range(1, 6) if stale_read_probability(5, 3, w) == 0.0)


def _dead_letter_fraction() -> float:
    from .messaging.retry import dead_letter_fraction

    return dead_letter_fraction(0.3, 3)


def _never_notified() -> float:
    from .messaging.notification import notification_oracle

    return notification_oracle(0.2, 4)["p_never_notified"]


def _phantom_mode() -> str:
    import sim

    phantoms = {}
    for mode in ("commit_then_publish", "publish_then_commit"):
        scenario = sim.Scenario.from_dict({
            "cluster": {"nodes": ["broker", "app", "c1"]},
            "workload": {"clients": 0},
            "protocol": {"name": "transactional_messages", "mode": mode,
                         "producers": [{"node": "app", "arrivals": {"rate": 50, "count": 100},
                                        "rollback_probability": 0.2}],
                         "consumers": [{"node": "c1", "queue": "events"}]},
            "run": {"duration": "5s", "seed": 1},
        })
        phantoms[mode] = sim.run(scenario).verdicts["transactional"].counts["phantom"]
    return max(phantoms, key=lambda mode: phantoms[mode])


EXERCISES: dict[str, tuple[str, Callable[[], Any], Callable[[Any, Any], bool]]] = {
    "cap.raft_side": (
        "A partition cuts {n1, n2} off from {n3, n4, n5} while Raft runs. Which side's clients "
        "keep getting answers: 'majority' or 'minority'?",
        _raft_side,
        lambda want, got: isinstance(got, str) and got.strip().lower() == want,
    ),
    "quorum.stale_probability": (
        "N = 5 replicas, R = 2, W = 2, reads and writes picking their quorums at random: what is the "
        "probability that a read quorum misses every replica of the latest write?",
        _stale_probability,
        lambda want, got: isinstance(got, (int, float)) and math.isclose(float(got), want, rel_tol=1e-3),
    ),
    "quorum.min_w": (
        "N = 5 and R = 3: what is the smallest W for which every read quorum meets every write quorum?",
        _min_w,
        lambda want, got: isinstance(got, int) and not isinstance(got, bool) and got == want,
    ),
    "retry.dead_letter_fraction": (
        "Each processing attempt fails independently with probability 0.3, and a message gets at most 3 "
        "attempts before it is dead-lettered: what fraction of the messages ends in the dead-letter queue?",
        _dead_letter_fraction,
        lambda want, got: isinstance(got, (int, float)) and math.isclose(float(got), want, rel_tol=1e-3),
    ),
    "notify.never_notified": (
        "The network loses each message independently with probability 0.2 and the provider makes 4 "
        "notification attempts: what fraction of the results never reaches the merchant by notification?",
        _never_notified,
        lambda want, got: isinstance(got, (int, float)) and math.isclose(float(got), want, rel_tol=1e-3),
    ),
    "txmsg.phantom_mode": (
        "With local transactions that roll back 20% of the time and no crashes at all, which naive dual write "
        "delivers messages for transactions that never committed: 'commit_then_publish' or "
        "'publish_then_commit'?",
        _phantom_mode,
        lambda want, got: isinstance(got, str) and got.strip().lower() == want,
    ),
}


def check(name: str, answer: Any) -> bool:
    """Check ``answer`` to the exercise ``name``; prints feedback and returns True if right."""
    if name not in EXERCISES:
        raise KeyError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    question, solve, same = EXERCISES[name]
    answer = python_value(answer)  # np.int64(3), np.float32(0.3) count as 3 and 0.3
    want = solve()
    ok = same(want, answer)
    print(("Right: " if ok else f"Not quite (you answered {answer!r}): ") + question)
    if not ok:
        print("Hint: look at the mechanism above and try again.")
    return ok
