"""Chapter 1's exercises: CAP under a partition."""

from __future__ import annotations

from typing import Any

from . import Feedback, exercise
from ._judge import word


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


@exercise("cap.raft_side", chapter=1, question=(
    "A partition cuts {n1, n2} off from {n3, n4, n5} while Raft runs. Which side's clients keep getting "
    "answers: 'majority' or 'minority'?"))
def raft_side(answer: Any) -> Feedback:
    return word(answer, _raft_side(), ("majority", "minority"),
                why="only a majority can elect a leader and commit entries.")
