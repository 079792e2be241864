"""What a run will cost, estimated before it starts, and the guard that refuses the absurd.

A rate of 1e9 operations per second, a heartbeat of one nanosecond or a million
zipf keys times a million are easy to type and would run for days or exhaust
memory. :func:`estimate` works out, from the scenario alone, the client
operations, the simulation events and the memory a run needs; :func:`check_cost`
refuses a run beyond :data:`MAX_EVENTS` or :data:`MAX_MEMORY` with a message that
names the field responsible and the estimate. ``sim.run(..., allow_large=True)``
(``--allow-large`` on the command line) runs it anyway.

The estimates are deliberately rough (within a small factor, measured on the
built-in protocols: about 5-11 events per client operation on 5 nodes, about 1 kB
of memory per operation and 40 kB per client); they exist to tell a typo from an
experiment, not to predict run times.

Periodic work is found from the config classes themselves: a duration field
declared with ``fld(..., every="node")`` is an interval at which every node does
something (a heartbeat, an anti-entropy round), ``every="run"`` one at which the
run does (a divergence sample), so a new protocol's timers are counted without
changes here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ScenarioError
from .units import format_duration

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = ["Estimate", "estimate", "check_cost", "check_sweep_size", "check_sweep_events", "MAX_EVENTS",
           "MAX_MEMORY", "MAX_SWEEP_RUNS", "MAX_SWEEP_EVENTS", "EVENTS_PER_SECOND", "OVERRIDE"]

#: a run estimated to process more simulation events than this is refused (about an hour)
MAX_EVENTS = 2e8
#: a run estimated to need more memory than this (bytes) is refused
MAX_MEMORY = 8 * 2**30
#: a sweep of more runs than this is refused (each planned run holds its resolved scenario in memory)
MAX_SWEEP_RUNS = 100_000
#: a sweep estimated to process more events, over all its runs, than this is refused (days on a laptop)
MAX_SWEEP_EVENTS = 50 * MAX_EVENTS
#: what the estimate assumes a run processes per second of wall time (measured on a 2-core machine)
EVENTS_PER_SECOND = 60_000
#: how every refusal says to go ahead anyway
OVERRIDE = "--allow-large (allow_large=True in Python)"

_BYTES_PER_OP = 1_000
_EVENTS_PER_MESSAGE = 20  # publish, route, deliver, ack, over a few hops
_BYTES_PER_CLIENT = 40_000
_BYTES_PER_KEY_ZIPF = 16  # the cumulative weights the zipf key chooser keeps
_BYTES_PER_TRACED_EVENT = 150
_BYTES_PER_TABLE_ROW = 200


@dataclass(frozen=True)
class Cost:
    """One source of work: the field responsible, what it amounts to, and a sentence saying so."""

    path: str
    events: float
    memory: float
    text: str


@dataclass(frozen=True)
class Estimate:
    """The estimated work of one run: client operations, simulation events, memory (bytes)."""

    ops: float
    events: float
    memory: float
    sources: tuple[Cost, ...]

    @property
    def seconds(self) -> float:
        return self.events / EVENTS_PER_SECOND

    def describe(self) -> str:
        return (f"about {_num(self.ops)} client operations, {_num(self.events)} events "
                f"({_duration(self.seconds)}), {_bytes(self.memory)} of memory")


def estimate(scenario: Scenario) -> Estimate:
    """The work ``scenario`` will take (see the module docstring for how it is counted)."""
    nodes = max(len(scenario.cluster.nodes), 1)
    end = scenario.end_time
    sources: list[Cost] = []
    wl = scenario.workload
    span_s = max(scenario.run.duration - wl.start, 0.0) / 1000
    if wl.clients:
        per_client = wl.rate if wl.mode == "open" else 1000 / max(_mean(wl.think_time), 1.0)
        ops = wl.clients * per_client * span_s
        ratios = {"workload.rate": per_client / 10, "workload.clients": wl.clients / 10,
                  "run.duration": span_s / 10}
        culprit = max(ratios, key=lambda k: ratios[k])
        how = (f"{wl.clients} clients x {_num(per_client)} operations/s each x {_num(span_s)} s "
               f"= {_num(ops)} client operations")
        sources.append(Cost(culprit, ops * (2 * nodes + 2), ops * _BYTES_PER_OP + wl.clients * _BYTES_PER_CLIENT,
                            how))
        if wl.key_dist == "zipf":
            sources.append(Cost("workload.keys", 0.0, wl.keys * _BYTES_PER_KEY_ZIPF,
                                f"{_num(wl.keys)} zipf keys need {_bytes(wl.keys * _BYTES_PER_KEY_ZIPF)} of weights"))
    else:
        ops = 0.0
    sources += _periodic(scenario, "", nodes, end)
    if scenario.run.trace:
        traced = sum(c.events for c in sources)
        sources.append(Cost("run.trace", 0.0, traced * _BYTES_PER_TRACED_EVENT,
                            f"tracing about {_num(traced)} events"))
    return Estimate(ops=ops, events=sum(c.events for c in sources), memory=sum(c.memory for c in sources),
                    sources=tuple(sources))


def check_cost(scenario: Scenario, *, allow_large: bool = False) -> Estimate:
    """The estimate; raises :class:`~sim.errors.ScenarioError` naming the field when the run is beyond the limits."""
    est = estimate(scenario)
    if allow_large:
        return est
    if est.events > MAX_EVENTS:
        worst = max(est.sources, key=lambda c: c.events)
        raise ScenarioError(worst.path, f"{worst.text}: the run would take {est.describe()}; the limit is "
                                        f"{_num(MAX_EVENTS)} events. Pass {OVERRIDE} if you mean it")
    if est.memory > MAX_MEMORY:
        worst = max(est.sources, key=lambda c: c.memory)
        raise ScenarioError(worst.path, f"{worst.text}: the run would take {est.describe()}; the limit is "
                                        f"{_bytes(MAX_MEMORY)} of memory. Pass {OVERRIDE} if you mean it")
    return est


def check_sweep_size(runs: float, path: str, how: str, *, allow_large: bool = False) -> None:
    """Refuse a sweep of more than :data:`MAX_SWEEP_RUNS` runs (``how`` says how they add up), naming ``path``."""
    if runs > MAX_SWEEP_RUNS and not allow_large:
        raise ScenarioError(path, f"{how} = {_num(runs)} runs; the limit is {_num(MAX_SWEEP_RUNS)} runs. "
                                  f"Pass {OVERRIDE} if you mean it")


def check_sweep_events(events: float, runs: int, *, allow_large: bool = False) -> None:
    """Refuse a sweep whose runs add up to more than :data:`MAX_SWEEP_EVENTS` events."""
    if events > MAX_SWEEP_EVENTS and not allow_large:
        raise ScenarioError("factors", f"{runs} runs would take about {_num(events)} events in all "
                                       f"({_duration(events / EVENTS_PER_SECOND)} on one core); the limit is "
                                       f"{_num(MAX_SWEEP_EVENTS)}. Pass {OVERRIDE} if you mean it")


def _periodic(obj: Any, path: str, nodes: int, end: float) -> list[Cost]:
    """Costs of every ``every=`` interval field and every arrival process in ``obj`` (a config dataclass).

    An arrival process is any config with ``rate`` (per second), ``count``,
    ``start`` and ``stop``: a producer's ArrivalSpec, a messaging publisher.
    """
    out: list[Cost] = []
    if all(hasattr(obj, k) for k in ("rate", "count", "start", "stop")) and not isinstance(obj, type):
        start = obj.start
        stop = end if obj.stop is None else min(obj.stop, end)
        count = obj.rate * max(stop - start, 0.0) / 1000
        if obj.count is not None:
            count = min(count, obj.count)
        out.append(Cost(f"{path}.rate", count * _EVENTS_PER_MESSAGE, count * _BYTES_PER_OP,
                        f"{_num(obj.rate)} arrivals/s for {_num(max(stop - start, 0) / 1000)} s = {_num(count)} "
                        "messages"))
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return out
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{path}.{f.name}" if path else f.name
        every = f.metadata.get("every")
        if every is not None and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and value > 0:
            times = end / value
            holders = nodes if every == "node" else 1
            fired = times * holders
            on = f"each of {nodes} nodes" if every == "node" else "the run"
            out.append(Cost(where, fired * 2 * nodes, fired * _BYTES_PER_TABLE_ROW if every == "run" else 0.0,
                            f"every {format_duration(value)} on {on} over {_num(end / 1000)} s is {_num(fired)} times"))
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                out += _periodic(item, f"{where}[{i}]", nodes, end)
        elif dataclasses.is_dataclass(value):
            out += _periodic(value, where, nodes, end)
    return out


def _mean(dist: Any) -> float:
    try:
        return float(dist.mean())
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _num(x: float) -> str:
    """3, 0.25, 20,000, 2.5e9."""
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:,.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    mantissa, exponent = f"{x:.2g}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _bytes(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{_num(n / size)} {unit}"
    return f"{n:.0f} B"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"about {seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"about {seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"about {seconds / 3600:.0f} h"
    return f"about {_num(seconds / 86400)} days"
