"""What a search returns to a person: the verdict, the trace as a table, and a scenario that replays it.

:func:`replay_scenario` turns a trace into an ordinary scenario with an explicit fault
schedule: each fault the search injected starts (and ends) at the time of its step in
the trace, moved just before (or after) the instant of that step so that the simulator
runs it between events of other instants; the workload becomes one closed-loop client per operation
of the trace, starting when the first operation was issued. With constant latency and
the bounded-delay timing the simulator then takes the same steps, up to the order of
events that fall in the same instant, which the search chose and the simulator fixes by
its own rule: the replay reproduces the fault schedule, not always the message order.
:func:`replay` runs it; whether it shows the same violation is for the caller to check
(:attr:`Replay.notes` says what the replay cannot reproduce).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..report import line, pairs
from ..scenario import Scenario
from .config import latency_bounds
from .explore import SearchResult, Step

__all__ = ["trace_table", "replay_scenario", "Replay", "Reproduction", "reproduce", "format_search"]

TRACE_COLUMNS = ("step", "time", "kind", "node", "src", "dst", "message", "detail")


def trace_table(result: SearchResult) -> pd.DataFrame:
    """The trace, one row per step (columns :data:`TRACE_COLUMNS`)."""
    rows = [(i + 1, s.time, s.kind, s.node, s.src, s.dst, s.message, s.detail) for i, s in enumerate(result.trace)]
    return pd.DataFrame(rows, columns=list(TRACE_COLUMNS))


@dataclass
class Replay:
    """The replay scenario of a trace and what it cannot reproduce."""

    scenario: Scenario
    notes: list[str] = field(default_factory=list)


def _placed(trace: list[Step], i: int, placement: str) -> float:
    """The time of step ``i`` in the replay: just before its instant (halfway from the previous
    instant) or just after it (halfway to the next), so that it falls between the same events."""
    t = trace[i].time
    if placement == "before":
        earlier = [s.time for s in trace[:i] if s.time < t]
        return (t + max(earlier)) / 2 if earlier else max(t - 0.5, 0.0)
    later = [s.time for s in trace[i + 1:] if s.time > t]
    return (t + min(later)) / 2 if later else t + 0.5


def replay_scenario(result: SearchResult, placement: str = "before") -> Replay:
    """An ordinary scenario whose fault schedule and workload follow ``result``'s trace (see the module docstring).

    Events of one instant run in the search's chosen order but in the simulator's own:
    ``placement`` puts each fault just ``"before"`` or just ``"after"`` the instant of its step.
    """
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")
    scenario, cfg = result.scenario, result.config
    if scenario is None or cfg is None:
        raise ValueError("the result carries no scenario")
    data = scenario.to_dict()
    trace = result.trace
    notes: list[str] = []
    if cfg.timing != "bounded":
        notes.append("the search used ordering-only timing: step times are step numbers, not milliseconds")
    schedule: list[dict[str, Any]] = []
    open_faults: dict[int, dict[str, Any]] = {}
    originals = data.get("faults", {}).get("schedule", [])
    for i, step in enumerate(trace):
        if step.kind in ("crash", "partition") and step.fault is not None:
            entry = dict(originals[step.fault])
            entry["start"] = _placed(trace, i, placement)
            entry["end"] = "inf"
            open_faults[step.fault] = entry
            schedule.append(entry)
        elif step.kind in ("recover", "heal") and step.fault is not None:
            entry = open_faults[step.fault]
            end = _placed(trace, i, placement)
            if end <= entry["start"]:  # started and ended in one instant: end it halfway to the instant's far side
                t = trace[i].time
                far = t if placement == "before" else min([s.time for s in trace[i + 1:] if s.time > t],
                                                           default=t + 1.0)
                end = (entry["start"] + far) / 2
            entry["end"] = end
        elif step.kind in ("drop", "duplicate"):
            notes.append(f"step {i + 1} {step.kind}s one message ({step.message}); the simulator loses or "
                         "duplicates messages at random (network.loss, network.duplicate), not this one")
    clients = [s for s in trace if s.kind == "client"]
    ops = cfg.operations[:len(clients)]
    workload = dict(data.get("workload", {}))
    start = clients[0].time if clients else 0.0
    if len({s.time for s in clients}) > 1:
        notes.append("the trace issues its operations at different times; the replay's clients all start at "
                     f"{start:g} ms")
    end = max([s.time for s in trace] + [start]) + 1.0
    workload.update({"clients": max(len(clients), 1) if clients else 0, "mode": "closed", "start": start,
                     "think_time": 0.0, "target": "fixed",
                     "target_node": cfg.target or scenario.workload.target_node or scenario.nodes[0],
                     "timeout": "inf"})
    if ops:
        keys = {op.key for op in ops}
        if keys == {0}:
            workload["keys"] = 1
        else:
            notes.append("the replay's clients draw keys at random, not the trace's keys "
                         f"{sorted(keys)}")
        kinds = {op.op for op in ops}
        if len(kinds) == 1:
            workload["read_fraction"] = 1.0 if kinds == {"read"} else 0.0
        else:
            notes.append("the replay's clients draw reads and writes at random, not the trace's")
    data["workload"] = workload
    data["faults"] = {"schedule": schedule}
    run = dict(data.get("run", {}))
    # long enough for the first request to reach its node (transactions begun later are not measured),
    # too short for a closed-loop client to see an answer and issue a second operation
    latency = latency_bounds(scenario, cfg)[1]
    run["duration"] = start + latency + 1.0 if clients else max(end, 1.0)
    data["run"] = run
    data["name"] = f"{scenario.name} (replay of a search trace)"
    return Replay(Scenario.from_dict(data), notes)


def format_search(result: SearchResult) -> list[str]:
    """The lines ``capsim search`` prints: the verdict, the effort, and the trace."""
    out = [line("search", pairs([("verdict", result.verdict), ("predicate", result.predicate or "-")])),
           f"  {result.message}",
           line("explored", pairs([("states", result.states), ("transitions", result.transitions),
                                   ("depth", result.depth), ("seconds", round(result.seconds, 2)),
                                   ("states/s", round(result.states_per_second, 1)
                                    if math.isfinite(result.states_per_second) else "-")]))]
    if result.trace:
        out.append(f"trace ({len(result.trace)} steps):")
        table = trace_table(result)
        out.extend("  " + row for row in table.to_string(index=False).splitlines())
    return out


def _shows(predicate: str | None, run: Any) -> bool | None:
    """Whether a simulator result shows what ``predicate`` found (None: no simulator check for it)."""
    if predicate == "atomicity":
        return not run.verdicts["atomicity"].atomic
    if predicate in ("blocked", "blocked_only_if_all_uncertain"):
        return bool(run.summary.get("txn.unresolved", 0) > 0)
    if predicate in ("election_safety", "state_machine_safety") and predicate in run.verdicts:
        return not run.verdicts[predicate].ok
    return None


@dataclass
class Reproduction:
    """A replay run in the simulator: its scenario, result, and whether it shows the finding (None: unknown)."""

    replay: Replay
    result: Any
    reproduced: bool | None


def reproduce(result: SearchResult) -> Reproduction:
    """Run the replay of ``result`` in the simulator, faults placed before their instants, else after.

    ``reproduced`` says whether the run shows the same finding (for the predicates the
    simulator can check: ``atomicity``, ``blocked``, ``election_safety``, ``state_machine_safety``), the
    first placement that does
    wins.
    """
    from ..runner import run

    first: Reproduction | None = None
    for placement in ("before", "after"):
        rp = replay_scenario(result, placement)
        out = Reproduction(rp, run(rp.scenario), None)
        out.reproduced = _shows(result.predicate, out.result)
        if out.reproduced is not False:
            return out
        first = first or out
    assert first is not None
    return first
