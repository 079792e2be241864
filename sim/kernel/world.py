"""The world: one SimPy environment, its random streams, network, nodes, clients and faults."""

from __future__ import annotations

from typing import Any

import simpy

from ..faultspec import Fault
from ..history import History
from ..rng import Streams
from ..scenario import Scenario
from .faults import FaultInjector, resolve_schedule
from .network import Network

__all__ = ["World"]


class World:
    """Builds everything a scenario describes; :meth:`run` runs it to the end."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        from ..workload.clients import make_clients

        self.scenario = scenario
        self.seed = scenario.run.seed if seed is None else seed
        self.env = simpy.Environment()
        self.streams = Streams(self.seed)
        self.network = Network(self.env, scenario.network, self.streams, trace=scenario.run.trace)
        self.history = History()
        self.node_events: list[tuple[float, str, str]] = []
        self.fault_events: list[tuple[float, str, str, str]] = []
        self._op_id = 0
        self._value = 0
        self._drained: simpy.Event | None = None
        self.samples: list[tuple[float, int, int, list[Any]]] = []
        self._started = False
        self.replicated = False
        self.nodes = scenario.protocol.build_nodes(self)
        for node in self.nodes.values():
            self.network.attach(node)
        self.clients = make_clients(self)
        for client in self.clients:
            self.network.attach(client)
        rng = self.streams["faults"]
        schedule: list[Fault] = list(scenario.faults.schedule)
        if scenario.faults.random is not None:
            schedule += scenario.faults.random.generate(scenario.nodes, scenario.run.duration, rng)
        self.faults = resolve_schedule(schedule, scenario.nodes, rng)
        self.injector = FaultInjector(self, self.faults)

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

    # -- running --------------------------------------------------------------
    def start(self) -> None:
        """Boot the nodes, start the clients, the fault schedule and divergence sampling.

        :meth:`run` calls it; call it yourself to step the world by hand with
        ``world.env.run(until=t)`` and look at the nodes in between.
        """
        if self._started:
            return
        self._started = True
        cfg = self.scenario.run
        for node in self.nodes.values():
            node.start()
        for client in self.clients:
            client.start()
        self.injector.start()
        self.replicated = any(node.replica_state() is not None for node in self.nodes.values())
        if self.replicated:
            self._sample_every = cfg.sample_interval or cfg.duration / 200
            self._sample()

    def run(self) -> None:
        """Run to the end: the load, the drain of operations in flight, then ``run.settle``."""
        env = self.env
        cfg = self.scenario.run
        self.start()
        env.run(until=cfg.duration)
        if self.history.pending:
            self._drained = env.event()
            end = env.timeout(self.scenario.end_time - cfg.settle - cfg.duration)
            end.callbacks.append(lambda _e: None if self._drained.triggered else self._drained.succeed())
            env.run(until=self._drained)
        if cfg.settle:
            env.run(until=env.now + cfg.settle)
        if self.replicated:
            self._take_sample()

    # -- divergence sampling ----------------------------------------------------
    def _sample(self, _event: object = None) -> None:
        self._take_sample()
        self.env.timeout(self._sample_every).callbacks.append(self._sample)

    def _take_sample(self) -> None:
        from ..checkers.convergence import divergent_keys

        states = {}
        for name, node in self.nodes.items():
            state = node.replica_state() if node.alive else None
            if state is not None:
                states[name] = state
        nodes = self.scenario.nodes
        protocol = self.scenario.protocol
        keys = divergent_keys(states, lambda key: protocol.replicas_for(key, nodes))
        if self.samples and self.samples[-1][0] == self.env.now:
            self.samples.pop()
        self.samples.append((self.env.now, len(keys), len(states), keys))

    @property
    def now(self) -> float:
        return self.env.now

    def protocol_summary(self) -> dict[str, Any]:
        return self.scenario.protocol.summary(self)
