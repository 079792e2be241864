"""The world: one SimPy environment with its random streams, network, nodes, clients and faults.

The kernel knows no protocol, workload or checker: :func:`sim.build_world` builds a
world from a scenario, asks the scenario's protocol for its per-run state and nodes
(:mod:`sim.protocol`), adds the workload's clients, and adds observers (probes) such
as the divergence sampler. The world then runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import simpy

from ..faultspec import Fault
from ..history import History
from ..rng import Streams
from ..scenario import Scenario
from .events import EventLog
from .faults import FaultInjector, fault_schedule
from .network import Network
from .node import Endpoint, Node

__all__ = ["World", "Probe"]


class Probe(Protocol):
    """An observer started with the world (after nodes, clients and faults) and finished at its end."""

    def start(self, world: World) -> None: ...

    def finish(self, world: World) -> None: ...


class World:
    """Everything one run of a scenario needs; :meth:`run` runs it to the end.

    ``World(scenario)`` alone has no nodes or clients: build worlds with
    :func:`sim.build_world`, which adds them, or add them with :meth:`add_nodes`
    and :meth:`add_clients`. ``state`` is the protocol's per-run state object.
    """

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.run.seed if seed is None else seed
        self.env = simpy.Environment()
        self.streams = Streams(self.seed)
        self.network = Network(self.env, scenario.network, self.streams, zones=scenario.cluster.zones,
                               trace=scenario.run.trace)
        self.history = History()
        self.events = EventLog()
        self.node_events: list[tuple[float, str, str]] = []
        self.fault_events: list[tuple[float, str, str, str]] = []
        self.nodes: dict[str, Node] = {}
        self.clients: list[Endpoint] = []
        self.state: Any = None
        self.probes: list[Probe] = []
        self._op_id = 0
        self._value = 0
        self._drained: simpy.Event | None = None
        self._started = False
        #: when the drain ended (before ``run.settle``) and whether the run was idle then (:mod:`sim.drain`)
        self.drain_end: float | None = None
        self.idle_at_drain_end: bool | None = None
        self.faults = fault_schedule(scenario, self.streams)
        self.injector = FaultInjector(self, self.faults)

    # -- populating -----------------------------------------------------------------
    def add_nodes(self, nodes: Mapping[str, Node]) -> None:
        """Attach the protocol's nodes: exactly one per cluster node, kept in the cluster's order."""
        names = self.scenario.nodes
        if set(nodes) != set(names) or len(nodes) != len(names):
            raise ValueError(f"protocol {self.scenario.protocol.tag!r} built nodes {sorted(nodes)}, "
                             f"the cluster has {list(names)}")
        for name in names:
            node = nodes[name]
            if node.name != name:
                raise ValueError(f"node built for {name!r} is named {node.name!r}")
            self.nodes[name] = node
            self.network.attach(node)

    def add_clients(self, clients: Iterable[Endpoint]) -> None:
        for client in clients:
            self.clients.append(client)
            self.network.attach(client)

    def add_probe(self, probe: Probe) -> None:
        self.probes.append(probe)

    # -- ids ------------------------------------------------------------------
    def next_op_id(self) -> int:
        self._op_id += 1
        return self._op_id

    def next_value(self) -> int:
        """A fresh value for a write: unique within the run, so checkers can tell writes apart."""
        self._value += 1
        return self._value

    # -- records --------------------------------------------------------------
    def record_node_event(self, node: str, event: str) -> None:
        self.node_events.append((self.env.now, node, event))

    def record_fault_event(self, fault: Fault, event: str) -> None:
        self.fault_events.append((self.env.now, fault.tag, event, repr(fault)))

    def op_finished(self) -> None:
        if self._drained is not None and self.history.pending == 0 and not self._drained.triggered:
            self._drained.succeed()

    def leader(self) -> str | None:
        """The node the protocol says leads now (for faults aimed at ``@leader``)."""
        return self.scenario.protocol.leader(self)

    # -- running --------------------------------------------------------------
    def start(self) -> None:
        """Boot the nodes, start the clients, the fault schedule and the probes.

        :meth:`run` calls it; call it yourself to step the world by hand with
        ``world.env.run(until=t)`` and look at the nodes in between.
        """
        if self._started:
            return
        self._started = True
        for node in self.nodes.values():
            node.start()
        for client in self.clients:
            client.start()
        self.injector.start()
        for probe in self.probes:
            probe.start(self)

    def run(self, progress: Callable[[float], None] | None = None) -> None:
        """Run to the end: the load, the drain of operations in flight, then ``run.settle``.

        ``progress(now)`` is called about a hundred times along the way with the
        simulated time reached; stopping the kernel at those times changes nothing
        in the run (no model event is added or reordered).
        """
        env = self.env
        cfg = self.scenario.run
        self.start()
        self._run_until(cfg.duration, progress)
        if self.scenario.drain_policy.idle:
            self._drain_until_idle(cfg.duration + self.scenario.drain_limit)
        elif self.history.pending:
            drained = self._drained = env.event()
            end = env.timeout(self.scenario.drain_limit)
            end.callbacks.append(lambda _e: self._end_drain(drained))
            env.run(until=drained)
        self.drain_end = env.now
        self.idle_at_drain_end = self.idle()
        if cfg.settle:
            self._run_until(env.now + cfg.settle, progress)
        if progress is not None:
            progress(env.now)
        for probe in self.probes:
            probe.finish(self)

    def idle(self) -> bool:
        """No client operation in flight and nothing of the protocol's own (:meth:`ProtocolConfig.idle`)."""
        return self.history.pending == 0 and self.scenario.protocol.idle(self, self.state)

    def _drain_until_idle(self, limit: float) -> None:
        """Step event by event until :meth:`idle`, or run to ``limit`` (the check adds no model event)."""
        env = self.env
        while not self.idle():
            if env.peek() > limit:
                if env.now < limit:
                    env.run(until=limit)
                return
            env.step()

    def _run_until(self, until: float, progress: Callable[[float], None] | None) -> None:
        env = self.env
        if progress is not None:
            step = self.scenario.end_time / 100
            at = env.now + step
            while at < until:
                env.run(until=at)
                progress(env.now)
                at += step
        env.run(until=until)

    @staticmethod
    def _end_drain(drained: simpy.Event) -> None:
        if not drained.triggered:
            drained.succeed()

    @property
    def now(self) -> float:
        return self.env.now
