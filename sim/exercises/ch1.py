"""Chapter 1's exercises: CAP under a partition, and BASE.

Every judge here runs the student's schedule, partition or configuration in the
simulator (small scenarios: five nodes, ten clients, a few seconds) and judges
what happened.
"""

from __future__ import annotations

import math
from typing import Any

from . import Feedback, exercise
from ._judge import plain

NODES = ("n1", "n2", "n3", "n4", "n5")
#: a read counts as clearly stale when the write it missed committed this long before it began
STALE_AFTER_MS = 100.0


def _scenario(protocol: dict[str, Any], schedule: list[Any], *, duration: float = 2500.0, settle: float = 0.0,
              seed: int = 1) -> Any:
    import sim

    return sim.Scenario.from_dict({
        "cluster": {"count": len(NODES)},
        "faults": {"schedule": schedule},
        "workload": {"clients": 10, "rate": 20, "keys": 4, "timeout": "300ms"},
        "protocol": protocol,
        "run": {"duration": duration, "settle": settle, "seed": seed},
    })


def _build(protocol: dict[str, Any], schedule: list[Any], **run: Any) -> tuple[Any, str | None]:
    """The scenario, or None and what is wrong with the student's part of it."""
    from ..errors import ScenarioError

    try:
        return _scenario(protocol, schedule, **run), None
    except ScenarioError as e:
        return None, str(e)


# -- a schedule that separates AP from CP --------------------------------------------------------------


def clearly_stale_reads(history: Any, gap: float) -> Any:
    """The ok reads that missed a write completed at least ``gap`` ms before they began.

    A read of value ``v`` missed write ``w`` (same key, ``ok``) when ``w`` was invoked
    after ``v``'s write completed (so ``w`` is newer in real time) and completed at least
    ``gap`` ms before the read was invoked. A read of a value whose write has no
    completion time (``info``) is skipped: its write's place in time is unknown. Adds the
    column ``missed_by``: how long before the read the newest missed write completed.
    """
    import pandas as pd

    ok = history[history["outcome"] == "ok"]
    rows = []
    for _key, group in ok.groupby("key", sort=True):
        writes = group[group["op"] == "write"]
        done = dict(zip(writes["value"], writes["complete"]))
        for label, read in group[group["op"] == "read"].iterrows():
            if read["value"] is None:
                after = -math.inf
            elif read["value"] in done:
                after = done[read["value"]]
            else:
                continue
            missed = writes[(writes["invoke"] > after) & (writes["complete"] <= read["invoke"] - gap)]
            if len(missed):
                rows.append((label, read["invoke"] - missed["complete"].max()))
    out = ok.loc[[label for label, _ in rows]].copy()
    out["missed_by"] = pd.Series([m for _, m in rows], index=out.index, dtype=float)
    return out


@exercise("cap.stale_schedule", chapter=1, question=(
    "Write a fault schedule (a list of fault dicts, times in ms, within a 2.5 s run of 5 nodes n1..n5 with "
    "10 clients) under which the eventual store (LWW) returns a clearly stale read -- a value older than a write "
    f"that completed at least {STALE_AFTER_MS:g} ms before the read began -- while Raft, under the same "
    "schedule, stays linearizable."))
def stale_schedule(answer: Any) -> Feedback:
    from ..checkers import check_linearizable
    from ..runner import run

    schedule = plain(answer)
    if isinstance(schedule, dict):
        schedule = [schedule]
    if not isinstance(schedule, (list, tuple)) or not all(isinstance(f, dict) for f in schedule):
        return Feedback(False, "the answer is a list of fault dicts, e.g. [{'kind': 'partition', 'start': 0, "
                               "'end': 10, 'groups': [['n1']]}]; got " + repr(answer)[:80] + ".")
    eventual, error = _build({"name": "eventual", "conflict": "lww"}, list(schedule))
    if eventual is None:
        return Feedback(False, f"that schedule is not valid: {error}")
    clearly = clearly_stale_reads(run(eventual).history, STALE_AFTER_MS)
    if clearly.empty:
        why = ("with no fault every push arrives within milliseconds" if not schedule else
               "no read missed a write that old")
        return Feedback(False, f"the eventual store gave no clearly stale read: {why}. A read goes clearly stale "
                               "when the node it asks cannot hear about a write for a while: a node (and its "
                               "clients) cut off from the writers, or a node that was down while writes were "
                               "pushed, for a few hundred ms.")
    raft = run(_scenario({"name": "raft"}, list(schedule)))
    verdict = check_linearizable(raft.history, time_limit=1.0)
    if verdict.linearizable is not True:
        why = "the check ran out of time" if verdict.linearizable is None else verdict.explanation
        return Feedback(False, f"the eventual store went stale ({len(clearly)} reads), but Raft's history is not "
                               f"linearizable under this schedule ({why}). Keep to partitions and crashes.")
    worst = clearly.iloc[int(clearly["missed_by"].to_numpy().argmax())]
    return Feedback(True, f"{len(clearly)} eventual reads were clearly stale (the worst began {worst['missed_by']:.0f} "
                          f"ms after a write to key {worst['key']} it missed had completed); Raft answered "
                          f"{raft.summary['availability']:.0%} of requests and stayed linearizable: "
                          "it refused instead of answering from a replica that could not know.")


# -- which nodes to cut off -----------------------------------------------------------------------------

CUT_START, CUT_END = 1000.0, 2000.0


def _leader_at(world: Any, t: float) -> str | None:
    """The Raft node that was leader at time ``t`` (from the nodes' role histories)."""
    for name in world.scenario.nodes:
        role = None
        for change in world.nodes[name].roles:
            if change.time > t:
                break
            role = change.role.name
        if role == "LEADER":
            return name
    return None


@exercise("cap.keep_majority", chapter=1, question=(
    f"Raft runs on 5 nodes n1..n5 with 10 clients for 2.5 s (seed 1); from {CUT_START:g} to {CUT_END:g} ms a "
    "partition cuts TWO nodes off from the other three. Which two (a list of node names) should be cut off so "
    "that the clients on the majority side keep more than 90% availability during the partition?"))
def keep_majority(answer: Any) -> Feedback:
    from ..runner import run

    cut = plain(answer)
    if isinstance(cut, str):
        cut = [cut]
    if not isinstance(cut, (list, tuple)) or not all(isinstance(n, str) for n in cut):
        return Feedback(False, f"the answer is a list of node names such as ['n1', 'n2']; got {answer!r}.")
    unknown = [n for n in cut if n not in NODES]
    if unknown:
        return Feedback(False, f"unknown node {unknown[0]!r}: the nodes are {', '.join(NODES)}.")
    cut = list(dict.fromkeys(cut))
    if len(cut) != 2:
        more = "three nodes cut off leave a minority of two behind: no side has a majority" if len(cut) > 2 else \
            "a single node cut off is the easy case"
        return Feedback(False, f"cut off exactly two nodes ({more}).")
    fault = {"kind": "partition", "start": CUT_START, "end": CUT_END, "groups": [cut]}
    result = run(_scenario({"name": "raft"}, [fault]), keep_world=True)
    majority = result.summary["availability.majority"]
    leader = _leader_at(result.world, CUT_START)
    if majority > 0.9:
        return Feedback(True, f"the majority side kept {majority:.1%} availability: its leader ({leader}) was "
                              "on the majority side, so nothing had to be re-elected.")
    if leader in cut:
        return Feedback(False, f"the majority side fell to {majority:.1%}: {leader} was the leader when the "
                               "partition began, so the three remaining nodes had to notice its silence "
                               "(an election timeout) and elect a new one before serving again. A space-time "
                               "diagram of the run shows who sends the heartbeats.")
    return Feedback(False, f"the majority side got {majority:.1%}; look at who leads at {CUT_START:g} ms.")


# -- BASE: make the soft state converge -------------------------------------------------------------------

BASE_SEEDS = (1, 2, 3)
BASE_WITHIN_MS = 500.0
BASE_BUDGET = 100
BASE_FIELDS = ("conflict", "push", "anti_entropy_interval", "fanout")


@exercise("base.converge", chapter=1, question=(
    "BASE: the eventual store runs 5 nodes; {n4, n5} are cut off from 1 s until the clients stop at 2 s, then "
    "the run goes on 1.5 s without clients. Give the store's configuration (a dict of eventual's fields: "
    "conflict, push, anti_entropy_interval, fanout) so that, with seeds 1, 2 and 3, every replica agrees again "
    f"within {BASE_WITHIN_MS:g} ms of the heal while the nodes start at most {BASE_BUDGET} anti-entropy "
    "exchanges in the whole run."))
def base_converge(answer: Any) -> Feedback:
    from ..runner import run

    config = plain(answer)
    if not isinstance(config, dict):
        return Feedback(False, "the answer is a dict of the eventual store's fields, e.g. {'push': True, "
                               f"'anti_entropy_interval': '1s'}}; got {answer!r}.")
    config = dict(config)
    if config.pop("name", "eventual") != "eventual":
        return Feedback(False, "this exercise is about the eventual store: leave 'name' out (or 'eventual').")
    extra = [k for k in config if k not in BASE_FIELDS]
    if extra:
        return Feedback(False, f"unknown field {extra[0]!r}: the eventual store's fields are {', '.join(BASE_FIELDS)}.")
    cut = {"kind": "partition", "start": 1000, "end": 2000, "groups": [["n4", "n5"]]}
    times = []
    for seed in BASE_SEEDS:
        scenario, error = _build({"name": "eventual", **config}, [cut], duration=2000, settle=1500, seed=seed)
        if scenario is None:
            return Feedback(False, f"that configuration is not valid: {error}")
        s = run(scenario).summary
        if s["protocol.anti_entropy_rounds"] > BASE_BUDGET:
            return Feedback(False, f"it converges, but the nodes started {s['protocol.anti_entropy_rounds']} "
                                   f"anti-entropy exchanges (budget {BASE_BUDGET}): repair does not have to run "
                                   "that often to meet the deadline.")
        if not s["convergence.healed"]:
            return Feedback(False, f"with seed {seed} the replicas never agreed again: the soft state stays "
                                   "diverged. A push blocked by the partition is never retried; only "
                                   "anti-entropy repairs it (the E of BASE).")
        if s["convergence.after_heal"] > BASE_WITHIN_MS:
            return Feedback(False, f"with seed {seed} the replicas agreed only {s['convergence.after_heal']:.0f} ms "
                                   f"after the heal (deadline {BASE_WITHIN_MS:g} ms): repair runs too rarely.")
        times.append((s["convergence.after_heal"], s["protocol.anti_entropy_rounds"], s["availability"]))
    slowest = max(t for t, _r, _a in times)
    return Feedback(True, f"basically available ({min(a for _t, _r, a in times):.0%} of requests answered, both "
                          f"sides), soft state (replicas diverged while cut off), eventually consistent (agreed "
                          f"at most {slowest:.0f} ms after the heal, with {max(r for _t, r, _a in times)} "
                          "exchanges).")
