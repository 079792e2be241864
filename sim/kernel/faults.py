"""Applies a fault schedule to a running world: the kernel's "nemesis"."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simpy.core import URGENT

from ..faultspec import (
    LEADER,
    ClockSkew,
    ClockStep,
    Crash,
    DuplicateWindow,
    Fault,
    Isolate,
    LatencySpike,
    LossWindow,
    Partition,
    Split,
)

if TYPE_CHECKING:
    import numpy as np

    from ..rng import Streams
    from ..scenario import Scenario
    from .world import World

__all__ = ["FaultInjector", "resolve_schedule", "fault_schedule"]


def fault_schedule(scenario: Scenario, streams: Streams) -> list[Fault]:
    """The run's concrete faults: the scheduled ones and those drawn from ``faults.random``.

    Deterministic for the seed of ``streams``: only the ``faults`` stream is used, so
    the schedule of a run can be rebuilt from its scenario and seed alone.
    """
    rng = streams["faults"]
    schedule: list[Fault] = list(scenario.faults.schedule)
    if scenario.faults.random is not None:
        schedule += scenario.faults.random.generate(scenario.nodes, scenario.run.duration, rng)
    return resolve_schedule(schedule, scenario.nodes, rng)


def resolve_schedule(faults: list[Fault], nodes: tuple[str, ...], rng: np.random.Generator) -> list[Fault]:
    """Turn every fault into a concrete one: splits become partitions with named groups."""
    out: list[Fault] = []
    for fault in faults:
        if isinstance(fault, Split):
            k = fault.minority if fault.minority is not None else max((len(nodes) - 1) // 2, 1)
            k = min(k, len(nodes))
            if fault.pick == "first":
                minority = nodes[:k]
            elif fault.pick == "last":
                minority = nodes[len(nodes) - k :]
            else:
                idx = sorted(rng.choice(len(nodes), size=k, replace=False).tolist())
                minority = tuple(nodes[i] for i in idx)
            out.append(Partition(start=fault.start, end=fault.end, groups=(tuple(minority),)))
        elif isinstance(fault, Isolate) and fault.node != LEADER:
            out.append(Partition(start=fault.start, end=fault.end, groups=((fault.node,),)))
        else:
            out.append(fault)
    return out


class FaultInjector:
    """Schedules each fault's start and end as urgent events (before same-time messages)."""

    def __init__(self, world: World, faults: list[Fault]) -> None:
        self.world = world
        self.faults = faults
        self._down: dict[str, int] = {}
        self._target: dict[int, str | None] = {}

    def _node_for(self, key: int, fault: Fault) -> str | None:
        """The node a fault acts on; ``@leader`` is resolved when the fault starts."""
        node = fault.node  # type: ignore[attr-defined]
        if node == LEADER:
            node = self.world.leader()
        self._target[key] = node
        return node

    def start(self) -> None:
        for i, fault in enumerate(self.faults):
            self._at(fault.start, self._apply, i, fault)
            if math.isfinite(fault.end):
                self._at(fault.end, self._revert, i, fault)

    def _at(self, t: float, fn, *args) -> None:
        env = self.world.env
        ev = env.event()
        ev._ok = True
        ev._value = None
        ev.callbacks.append(lambda _e: fn(*args))
        env.schedule(ev, URGENT, max(t - env.now, 0.0))

    def _apply(self, key: int, fault: Fault) -> None:
        net = self.world.network
        if isinstance(fault, Partition):
            net.add_partition(key, fault.groups, fault.one_way)
        elif isinstance(fault, Isolate):
            node = self._node_for(key, fault)
            if node is None:
                self.world.record_fault_event(fault, "skipped: no leader")
                return
            net.add_partition(key, ((node,),))
        elif isinstance(fault, Crash):
            node = self._node_for(key, fault)
            if node is None:
                self.world.record_fault_event(fault, "skipped: no leader")
                return
            self._down[node] = self._down.get(node, 0) + 1
            if self._down[node] == 1:
                self.world.nodes[node].crash(clean=fault.clean)
        elif isinstance(fault, (LossWindow, DuplicateWindow, LatencySpike)):
            net.add_overlay(key, fault)
        elif isinstance(fault, ClockSkew):
            self.world.nodes[fault.node].set_clock_skew(fault.offset, fault.drift)
        elif isinstance(fault, ClockStep):
            self.world.nodes[fault.node].step_clock(fault.by)
        else:  # pragma: no cover - every concrete kind is handled above
            raise TypeError(f"cannot apply fault {fault!r}")
        self.world.record_fault_event(fault, "start")

    def _revert(self, key: int, fault: Fault) -> None:
        net = self.world.network
        if isinstance(fault, (Partition, Isolate)):
            net.remove_partition(key)
        elif isinstance(fault, Crash):
            node = self._target.get(key)
            if node is None:
                return
            self._down[node] -= 1
            if self._down[node] == 0:
                self.world.nodes[node].recover()
        elif isinstance(fault, (LossWindow, DuplicateWindow, LatencySpike)):
            net.remove_overlay(key)
        elif isinstance(fault, ClockSkew):
            self.world.nodes[fault.node].set_clock_skew(0.0, 0.0)
        self.world.record_fault_event(fault, "end")
