"""Testing a protocol's handlers alone: the nodes of a scenario on a recording outbox.

A :class:`Harness` builds a scenario's protocol nodes exactly as a run does (same
config, per-run state and random streams) but puts a recorder where the network
would be and a manual clock where SimPy would be: what a handler sends is recorded
and never delivered, and timers wait until the test fires them. A test feeds a node
a message and asserts what it sent and which timers it set::

    h = Harness(scenario)                      # every node built and booted
    h.deliver("n2", AppendEntries(...), src="n1")
    assert h.sent[-1].msg.success              # what n2 answered, to whom, when
    h.timers_of("n2")                          # pending timers: time, callback, arguments
    h.advance(300)                             # fire what falls due, in time order

Nothing runs unless the test says so: no clients, no faults, no other node reacts.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from simpy.events import NORMAL

from .kernel.events import EventLog
from .kernel.node import Node, Timer
from .rng import Streams
from .runner import with_seed
from .scenario import Scenario

__all__ = ["Harness", "StepHost", "Sent", "PendingTimer", "ManualClock"]


class Sent(NamedTuple):
    """One message a node handed to the network: when, from, to, what."""

    time: float
    src: str
    dst: str
    msg: Any


@dataclass(frozen=True)
class PendingTimer:
    """A timer a node set and that has neither fired nor been cancelled."""

    node: str
    at: float
    callback: str
    args: tuple[Any, ...]
    timer: Timer

    def __repr__(self) -> str:
        return f"PendingTimer({self.node!r}, at={self.at:g}, {self.callback}{self.args!r})"


class ManualClock:
    """A scheduler that only moves when told to; events run in (time, priority, order) like SimPy's."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, int, Any]] = []
        self._order = 0

    def schedule(self, event: Any, priority: int = NORMAL, delay: float = 0.0) -> None:
        self._order += 1
        heapq.heappush(self._queue, (self.now + delay, priority, self._order, event))

    def pending(self) -> list[tuple[float, Any]]:
        """(time, event) of everything scheduled, in the order it would run."""
        return [(t, ev) for t, _, _, ev in sorted(self._queue)]

    def pop(self, event: Any) -> None:
        self._queue = [entry for entry in self._queue if entry[3] is not event]
        heapq.heapify(self._queue)

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def step(self) -> None:
        """Run the next event (moving the clock to its time)."""
        t, _, _, event = heapq.heappop(self._queue)
        self.now = max(self.now, t)
        callbacks, event.callbacks = event.callbacks, None
        for callback in callbacks:
            callback(event)


class _Outbox:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sent: list[Sent] = []

    def send(self, src: str, dst: str, msg: Any) -> None:
        self.sent.append(Sent(self.clock.now, src, dst, msg))

    def disconnect(self, src: str, dst: str) -> None:
        """A node closing a connection: nothing to record (connections are the network's)."""


class StepHost:
    """What the two hosts that drive nodes step by step share (:class:`Harness`, the search's
    ``SearchWorld``): the time of their clock, the node-event log, and building the protocol's nodes."""

    scenario: Scenario
    seed: int
    streams: Streams
    events: EventLog
    env: Any
    network: Any
    node_events: list[tuple[float, str, str]]
    nodes: dict[str, Node]
    state: Any

    @property
    def now(self) -> float:
        return self.env.now

    def record_node_event(self, node: str, event: str) -> None:
        self.node_events.append((self.env.now, node, event))

    def _build_nodes(self, scenario: Scenario, boot: bool = True) -> None:
        """The protocol's run state and nodes (``self.nodes`` exists, empty, while they are built); booted."""
        self.nodes = {}
        protocol = scenario.protocol
        self.state = protocol.new_state(self)
        self.nodes = dict(protocol.build_nodes(self, self.state))
        if boot:
            for node in self.nodes.values():
                node.start()


class Harness(StepHost):
    """The nodes of ``scenario``'s protocol with sends and timers captured (see the module docstring).

    ``boot=False`` builds the nodes without booting them (call ``node.start()``
    yourself). ``seed`` overrides ``run.seed`` for the nodes' random streams.
    """

    def __init__(self, scenario: Scenario | Mapping[str, Any], seed: int | None = None, *, boot: bool = True) -> None:
        if not isinstance(scenario, Scenario):
            scenario = Scenario.from_dict(scenario)
        self.scenario = scenario = with_seed(scenario, seed)
        self.seed = scenario.run.seed
        self.streams = Streams(self.seed)
        self.events = EventLog()
        self.env = ManualClock()
        self.network = _Outbox(self.env)
        self.node_events: list[tuple[float, str, str]] = []
        self._taken = 0
        self._build_nodes(scenario, boot)

    # -- driving -----------------------------------------------------------------------------
    def deliver(self, dst: str, msg: Any, src: str) -> list[Sent]:
        """Hand ``msg`` from ``src`` to node ``dst``'s handler now; returns what that made it send.

        A crashed node receives nothing (the message is lost, as on the network).
        """
        node = self.nodes[dst]
        before = len(self.sent)
        if node.alive:
            node.receive(src, msg)
        return self.sent[before:]

    def fire(self, timer: PendingTimer | Timer) -> list[Sent]:
        """Fire one pending timer now (the clock moves to its time if that is later); returns the sends."""
        target = timer.timer if isinstance(timer, PendingTimer) else timer
        entry = target.heap_entry()  # itself, or its new entry if its node's clock rate changed
        before = len(self.sent)
        self.env.pop(entry)
        self.env.now = max(self.env.now, target.at)
        callbacks, entry.callbacks = entry.callbacks or [], None
        for callback in callbacks:
            callback(entry)
        return self.sent[before:]

    def advance(self, ms: float) -> list[Sent]:
        """Move the clock ``ms`` forward, firing every timer that falls due, in order; returns the sends."""
        if ms < 0:
            raise ValueError(f"cannot move the clock back ({ms} ms)")
        before = len(self.sent)
        until = self.env.now + ms
        while (t := self.env.next_time()) is not None and t <= until:
            self.env.step()
        self.env.now = until
        return self.sent[before:]

    def crash(self, name: str) -> None:
        self.nodes[name].crash()

    def recover(self, name: str) -> None:
        self.nodes[name].recover()

    # -- looking -------------------------------------------------------------------------------
    @property
    def sent(self) -> list[Sent]:
        """Every message sent so far, in order."""
        return self.network.sent

    def take(self) -> list[Sent]:
        """The messages sent since the last ``take`` (a test's 'what happened since')."""
        out = self.network.sent[self._taken:]
        self._taken = len(self.network.sent)
        return out

    def sent_to(self, dst: str, kind: type | None = None) -> list[Any]:
        """The messages sent to ``dst`` (of class ``kind``), oldest first."""
        return [s.msg for s in self.sent if s.dst == dst and (kind is None or isinstance(s.msg, kind))]

    @property
    def timers(self) -> list[PendingTimer]:
        """Every timer still pending (not fired, not cancelled, its node not crashed since), by due time."""
        out = []
        for at, event in self.env.pending():
            timer = getattr(event, "timer", event)  # a retimed timer's entry names its timer
            if isinstance(timer, Timer) and timer.heap_entry() is event and timer.pending:
                name = getattr(timer.fn, "__name__", repr(timer.fn))
                out.append(PendingTimer(timer.owner.name, at, name, timer.args, timer))
        return out

    def timers_of(self, node: str) -> list[PendingTimer]:
        return [t for t in self.timers if t.node == node]
