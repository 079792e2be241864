"""Chapter 5's exercises: fault schedules that break commit protocols, run in the simulator.

Both run the chapter's single transfer (:func:`one_transfer`, the notebook's scenario) under the
student's fault schedule and judge what the participants did.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..errors import ScenarioError
from ..scenario import Scenario
from . import Feedback, exercise
from ._judge import invalid, schedule

__all__ = ["one_transfer"]


def one_transfer(protocol: str = "two_phase_commit", faults: Any = (), *, trace: bool = False,
                 **kw: Any) -> Scenario:
    """One transfer at t = 100 ms from a single client to coordinator ``n1``, touching ``n2``, ``n3`` and
    ``n4``; links take 1 ms and forced log writes 1 ms; vote (and 3PC pre-commit-ack) timeout 25 ms,
    decision timeout 60 ms, rounds of 20 ms. ``kw``: more protocol settings."""
    return Scenario.from_dict({
        "cluster": {"count": 4},
        "workload": {"clients": 1, "mode": "closed", "think_time": 100, "target": "fixed",
                     "target_node": "n1", "timeout": 5000},
        "protocol": {"name": protocol, "min_participants": 3, "vote_timeout": 25,
                     "decision_timeout": 60, "retry_interval": 20, **kw},
        "faults": {"schedule": list(faults)},
        "run": {"duration": 150, "trace": trace},
    })


def _run(protocol: str, faults: list[dict[str, Any]], **kw: Any) -> Any:
    from ..runner import run

    return run(one_transfer(protocol, faults, **kw), seed=1)


def _states(result: Any) -> dict[str, list[str]]:
    """Every state each participant went through, in order."""
    ev = result.tables["events"]
    return {node: list(group["state"]) for node, group in ev.groupby("node", sort=True)}


def _how(result: Any) -> str:
    """How each participant ended, in words: ``n2 committed at 107 ms by commit from coordinator``."""
    ev = result.tables["events"]
    parts = result.tables["participants"]
    out = []
    for row in parts.itertuples():
        if row.outcome is None or row.outcome != row.outcome:
            out.append(f"{row.node} {row.final_state or 'never reached'} at the end")
            continue
        final = ev[(ev["node"] == row.node) & (ev["state"] == row.outcome)]
        detail = str(final["detail"].iloc[0]) if len(final) else ""
        out.append(f"{row.node} {row.outcome} at {row.outcome_time:.0f} ms" + (f" by {detail}" if detail else ""))
    return "; ".join(out)


@exercise("tpc.split_partition", chapter=5, question=(
    "Find a partition schedule (a list of faults of kind 'partition', as in a scenario's faults.schedule) "
    "under which 3PC, on the chapter's single transfer (sim.exercises.ch5.one_transfer), commits at some "
    "participant and aborts at another."))
def split_partition(answer: Any) -> Feedback:
    faults = schedule(answer, kinds=("partition",))
    if isinstance(faults, Feedback):
        return faults
    try:
        result = _run("three_phase_commit", faults)
    except ScenarioError as exc:
        return invalid(exc, {"faults.schedule": "answer"})
    if not faults:
        return Feedback(False, "without a partition every message arrives and everyone commits: add one.")
    parts = result.tables["participants"]
    outcomes = list(parts["outcome"])
    committed = [n for n, o in zip(parts["node"], outcomes) if o == "committed"]
    aborted = [n for n, o in zip(parts["node"], outcomes) if o == "aborted"]
    if committed and aborted:
        return Feedback(True, f"{', '.join(committed)} committed and {', '.join(aborted)} aborted: {_how(result)}. "
                              "Each side ran the termination rule on what it could see.")
    txn = result.tables["transactions"].iloc[0]
    states = _states(result)
    if aborted and not committed:
        if txn["decision"] == "commit":
            return Feedback(False, f"n1 committed after its pre-commit-ack timeout and told the client 'ok', but "
                                   f"every participant aborted ({_how(result)}): a split between the coordinator "
                                   "and the data. Put a participant on the coordinator's side so that it commits "
                                   "too.")
        if str(txn["decision_how"]).startswith("vote timeout"):
            return Feedback(False, f"n1 decided abort: {txn['decision_how']}. The partition began before every vote "
                                   "had reached it, so nobody was ever pre-committed and everyone aborted. Look at "
                                   "when the votes and the pre-commits are sent.")
        return Feedback(False, f"everyone aborted ({_how(result)}).")
    if committed and not aborted:
        never = [n for n, s in states.items() if "precommitted" not in s]
        if not never:
            return Feedback(False, f"every participant had its pre-commit before the partition cut it off, so "
                                   f"every side terminates with commit ({_how(result)}). Start the partition "
                                   "earlier.")
        return Feedback(False, f"{', '.join(never)} never got the pre-commit but still learned commit "
                               f"({_how(result)}): from a pre-committed peer or from n1, across the partition or "
                               "after it healed. Keep the uncertain participants away from every pre-committed "
                               "one and from n1 until they have decided.")
    return Feedback(False, f"no split: {_how(result)}.")


@exercise("tpc.cooperative_blocked", chapter=5, question=(
    "Find a fault schedule (a list of faults, as in a scenario's faults.schedule) under which 2PC with "
    "cooperative termination, on the chapter's single transfer (sim.exercises.ch5.one_transfer), leaves a "
    "participant blocked although another participant already knows the outcome."))
def cooperative_blocked(answer: Any) -> Feedback:
    faults = schedule(answer)
    if isinstance(faults, Feedback):
        return faults
    try:
        result = _run("two_phase_commit", faults, cooperative_termination=True)
    except ScenarioError as exc:
        return invalid(exc, {"faults.schedule": "answer"})
    parts: pd.DataFrame = result.tables["participants"]
    blocked = parts[parts["blocked"]]
    threshold = result.scenario.protocol.threshold
    if blocked.empty:
        voted = parts[parts["vote"] == "yes"]
        hint = ("" if len(voted) == len(parts) else
                f" ({', '.join(parts[parts['vote'] != 'yes']['node'])} never voted yes, so never was uncertain.)")
        return Feedback(False, f"nobody stayed uncertain longer than the blocking threshold ({threshold:.0f} ms): "
                               f"{_how(result)}.{hint}")
    for row in blocked.itertuples():
        knew = parts[(parts["node"] != row.node) & (parts["outcome_time"] <= row.blocked_since)]
        if len(knew):
            return Feedback(True, f"{row.node} stayed uncertain for {row.blocked_time:.0f} ms although "
                                  f"{', '.join(knew['node'])} knew the outcome since "
                                  f"{knew['outcome_time'].min():.0f} ms: asking peers helps only when a peer that "
                                  "knows can be reached.")
    return Feedback(False, f"{', '.join(blocked['node'])} blocked, but nobody knew the outcome meanwhile "
                           f"({_how(result)}): that is the blocking no protocol of peers can help (every participant "
                           "uncertain, the coordinator unreachable). Let the decision reach some participants, and "
                           "keep another blocked anyway.")
