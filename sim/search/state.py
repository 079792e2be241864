"""One global state of the search: every node, the messages in flight, the pending timers.

A :class:`SearchWorld` is the host (:class:`~sim.kernel.node.Host`) the protocol's
nodes are built on, exactly as :class:`~sim.harness.Harness` builds them, with two
recorders in place of SimPy and the network: :class:`SearchClock` keeps every timer a
node sets (nothing fires unless the explorer says so) and :class:`SearchNet` keeps every
message a node sends in an in-flight list (nothing arrives unless the explorer delivers
it). Replies to clients are recorded in the search's history at once.

Cloning a state is a pickle round trip of the whole world (nodes, timers, in-flight
messages, the protocol's per-run state, random streams): one C-speed copy that keeps the
objects' sharing (a timer's arguments are the same object as the node's transaction
record). Closures and lambdas (a reply callback, a sampler) are copied with their cells,
so a sampler's buffer and generator move with the state. The scenario is shared, not
copied.

:func:`canonical` turns a state into a hashable value for the visited set: the nodes'
protocol state (host references, counters of crashes and epochs left out), the
multiset of messages in flight and the live timers, times relative to now.
"""

from __future__ import annotations

import enum
import io
import pickle
import sys
import types
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..harness import StepHost
from ..kernel.disk import Disk
from ..kernel.events import Channel, EventLog
from ..kernel.messages import ClientReply
from ..kernel.node import Endpoint, Node, Timer
from ..rng import Streams
from ..scenario import Scenario

__all__ = ["SearchWorld", "SearchClock", "SearchNet", "Scheduled", "InFlight", "Op", "clone", "freeze", "thaw",
           "canonical"]


class Scheduled:
    """A timer (or a supervisor's wake-up) a node set: when it was set, its delay, when it is due."""

    __slots__ = ("order", "set_at", "delay", "at", "event")

    def __init__(self, order: int, set_at: float, delay: float, event: Any) -> None:
        self.order = order
        self.set_at = set_at
        self.delay = delay
        self.at = set_at + delay
        self.event = event

    @property
    def owner(self) -> str:
        """The node whose timer this is ('' for a wake-up no crash cancels)."""
        return self.event.owner.name if isinstance(self.event, Timer) else ""

    @property
    def live(self) -> bool:
        ev = self.event
        if isinstance(ev, Timer):
            return not ev.cancelled and ev.owner.alive and ev.owner.epoch == ev.epoch
        return ev.callbacks is not None

    @property
    def name(self) -> str:
        ev = self.event
        if isinstance(ev, Timer):
            return getattr(ev.fn, "__name__", repr(ev.fn))
        return "restart"


class SearchClock:
    """A scheduler that only records: timers wait until the explorer fires them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Scheduled] = []
        self._order = 0

    def schedule(self, event: Any, priority: Any = None, delay: Any = 0.0) -> None:
        self._order += 1
        self.timers.append(Scheduled(self._order, self.now, float(delay), event))

    def live(self) -> list[Scheduled]:
        """The timers that can still fire (dropping the cancelled and those of crashed incarnations)."""
        self.timers = [t for t in self.timers if t.live]
        return self.timers

    def fire(self, timer: Scheduled) -> None:
        self.timers.remove(timer)
        event = timer.event
        callbacks, event.callbacks = event.callbacks or [], None
        for callback in callbacks:
            callback(event)


class InFlight:
    """A message on its way: sent at ``sent`` to ``dst`` in incarnation ``epoch`` (lost if it crashed since)."""

    __slots__ = ("src", "dst", "msg", "sent", "epoch", "step")

    def __init__(self, src: str, dst: str, msg: Any, sent: float, epoch: int, step: int = 0) -> None:
        self.src = src
        self.dst = dst
        self.msg = msg
        self.sent = sent
        self.epoch = epoch
        self.step = step  # the step of the execution that sent it (for the space-time diagram)

    def __repr__(self) -> str:
        return f"{self.src}->{self.dst} {self.msg!r}"


class SearchNet:
    """The outbox: messages to nodes go in flight; a partition drops them at send (as the simulator's)."""

    def __init__(self, world: SearchWorld) -> None:
        self.world = world
        self.flight: list[InFlight] = []
        self.partitions: dict[int, tuple[tuple[frozenset[str], ...], bool]] = {}
        self.blocked: dict[str, frozenset[str]] = {}
        self.dropped: list[tuple[float, str, str, Any, str]] = []

    def disconnect(self, src: str, dst: str) -> None:
        """A node closing a connection: nothing to do, the search treats every message as a datagram."""

    def send(self, src: str, dst: str, msg: Any) -> None:
        w = self.world
        if dst not in w.nodes:
            w.client_message(dst, msg)
            return
        if src in self.blocked.get(dst, ()):
            self.dropped.append((w.now, src, dst, msg, "partition"))
            return
        self.flight.append(InFlight(src, dst, msg, w.now, w.nodes[dst].epoch, w.steps))

    def add_partition(self, key: int, groups: tuple[tuple[str, ...], ...], one_way: bool,
                      nodes: tuple[str, ...]) -> None:
        named = {n for g in groups for n in g}
        rest = tuple(n for n in nodes if n not in named)
        full = tuple(frozenset(g) for g in groups) + ((frozenset(rest),) if rest else ())
        self.partitions[key] = (full, one_way)
        self._recompute()

    def remove_partition(self, key: int) -> None:
        self.partitions.pop(key, None)
        self._recompute()

    def _recompute(self) -> None:
        blocked: dict[str, set[str]] = {}
        for groups, one_way in self.partitions.values():
            for i, a in enumerate(groups):
                for j, b in enumerate(groups):
                    if i == j or (one_way and i != 0):
                        continue
                    for dst in b:
                        blocked.setdefault(dst, set()).update(a)
        self.blocked = {dst: frozenset(srcs) for dst, srcs in blocked.items()}


@dataclass
class Op:
    """A client operation of the search's workload and what became of it."""

    client: str
    op_id: int
    op: str
    key: Any
    value: Any
    node: str
    invoke: float
    invoke_step: int
    complete: float | None = None
    complete_step: int | None = None
    outcome: str = "info"
    result: Any = None
    error: str | None = None


class SearchWorld(StepHost):
    """The host of one search state (see the module docstring)."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.run.seed if seed is None else seed
        self.streams = Streams(self.seed)
        self.events = EventLog()
        self.env = SearchClock()
        self.network = SearchNet(self)
        self.node_events: list[tuple[float, str, str]] = []
        self.ops: list[Op] = []
        self.steps = 0
        self.fault_state: list[str] = []  # per fault of the budget: ready, active or done
        self.drops = 0
        self.duplicates = 0
        self.failure: str | None = None  # a handler raised: the execution ends here
        #: what predicates remember of the execution so far (e.g. every entry any Raft node applied); its
        #: part that matters goes into the state's key through the predicate's fingerprint
        self.memory: dict[str, Any] = {}
        self._build_nodes(scenario)

    def client_message(self, client: str, msg: Any) -> None:
        """A node answered a client: the operation completes now (the client never times out)."""
        if not isinstance(msg, ClientReply):
            return
        for op in self.ops:
            if op.client == client and op.op_id == msg.op_id and op.complete is None:
                op.complete, op.complete_step = self.now, self.steps
                op.outcome = "ok" if msg.ok else "fail"
                op.result, op.error = msg.value, msg.error
                return


# -- cloning ---------------------------------------------------------------------------------
_SHARED: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()  # id -> object, while it lives
_SHARED_IDS: set[int] = set()  # a fast first test (ids of objects that may since have gone)


def _shared(key: int) -> Any:
    return _SHARED[key]


def _function(module: str, code: types.CodeType, name: str, defaults: Any, kwdefaults: Any,
              cells: tuple[Any, ...]) -> types.FunctionType:
    closure = tuple(types.CellType(c) for c in cells) if cells else None
    f = types.FunctionType(code, sys.modules[module].__dict__, name, defaults, closure)
    f.__kwdefaults__ = kwdefaults
    return f


def _generator(name: str, state: dict[str, Any]) -> np.random.Generator:
    bits = getattr(np.random, name)(0)
    bits.state = state
    return np.random.Generator(bits)


def _disk(policy: Any, items: dict[str, Any], image: dict[str, Any] | None, syncs: int,
          rollbacks: int) -> Disk:
    disk = Disk(policy)
    disk.update(items)
    disk._image = image
    disk.syncs, disk.rollbacks = syncs, rollbacks
    return disk


def _code(key: tuple[str, str, int]) -> types.CodeType:
    return _CODES[key]


_CODES: dict[tuple[str, str, int], types.CodeType] = {}


class _Pickler(pickle.Pickler):
    """Pickles closures and lambdas by their cells; shares the scenario and code objects."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.FunctionType and (obj.__closure__ is not None or obj.__name__ == "<lambda>"):
            cells = tuple(c.cell_contents for c in obj.__closure__) if obj.__closure__ else ()
            return _function, (obj.__module__, obj.__code__, obj.__name__, obj.__defaults__, obj.__kwdefaults__,
                               cells)
        if type(obj) is types.CodeType:
            key = (obj.co_filename, obj.co_qualname, obj.co_firstlineno)
            _CODES.setdefault(key, obj)
            return _code, (key,)
        if type(obj) is Disk:  # without its cache of known values: keyed by id, it would not survive the copy
            return _disk, (obj.policy, dict(obj), obj._image, obj.syncs, obj.rollbacks)
        if type(obj) is np.random.Generator:
            bits = obj.bit_generator
            return _generator, (type(bits).__name__, bits.state)
        if id(obj) in _SHARED_IDS and _SHARED.get(id(obj)) is obj:
            return _shared, (id(obj),)
        return NotImplemented


def share(obj: Any) -> None:
    """Let clones refer to ``obj`` instead of copying it (for immutable objects: the scenario).

    Held weakly: once nothing else refers to ``obj`` its entry goes, so a later object
    with the same id is never mistaken for it.
    """
    _SHARED[id(obj)] = obj
    _SHARED_IDS.add(id(obj))


def freeze(world: SearchWorld) -> bytes:
    """``world`` as bytes (a stored state costs this much); :func:`thaw` makes a fresh copy each time."""
    buf = io.BytesIO()
    _Pickler(buf, pickle.HIGHEST_PROTOCOL).dump(world)
    return buf.getvalue()


def thaw(blob: bytes) -> SearchWorld:
    return pickle.loads(blob)


def clone(world: SearchWorld) -> SearchWorld:
    """An independent copy of ``world`` (see the module docstring)."""
    return thaw(freeze(world))


def size_of(world: SearchWorld) -> int:
    """Bytes of a pickled state: what one state waiting in the search's frontier costs."""
    return len(freeze(world))


# -- canonical form ----------------------------------------------------------------------------
_SKIP_NODE_ATTRS = frozenset({"world", "env", "net", "_handlers", "crashes", "epoch", "cfg", "rec"})
_ATOMS = (type(None), bool, int, float, str, bytes, enum.Enum)


def _kind(t: type) -> str:
    """How :func:`_canon` treats instances of ``t`` (decided once per type)."""
    if issubclass(t, _ATOMS):
        return "atom"
    if issubclass(t, (tuple, list, deque)):  # a deque's contents are its state (it has no attributes)
        return "seq"
    if issubclass(t, Disk):
        return "disk"
    if issubclass(t, dict):
        return "dict"
    if issubclass(t, (set, frozenset)):
        return "set"
    if issubclass(t, Endpoint):
        return "node"
    if issubclass(t, Timer):
        return "timer"
    if issubclass(t, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return "fn"
    if issubclass(t, (np.random.Generator, Streams, EventLog, Channel, SearchWorld, SearchClock, SearchNet)):
        return "host"
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return "frozen"
    return "obj"


_KINDS: dict[type, str] = {}
_SLOTS: dict[type, tuple[str, ...]] = {}


def _slots(t: type) -> tuple[str, ...]:
    names = _SLOTS.get(t)
    if names is None:
        names = _SLOTS[t] = tuple(slot for cls in t.__mro__ for slot in getattr(cls, "__slots__", ())
                                  if slot != "__dict__")
    return names


def _canon(obj: Any, stack: set[int]) -> Any:
    t = type(obj)
    kind = _KINDS.get(t)
    if kind is None:
        kind = _KINDS[t] = _kind(t)
    if kind == "atom":
        return obj
    if kind == "seq":
        return tuple([_canon(x, stack) for x in obj])
    if kind == "dict":
        items = [(_canon(k, stack), _canon(v, stack)) for k, v in obj.items()]
        try:
            return ("dict", tuple(sorted(items)))
        except TypeError:
            return ("dict", tuple(sorted(items, key=repr)))
    if kind == "disk":  # its contents and what a power loss would leave
        image = obj._image
        return ("disk", _canon(dict(obj), stack), None if image is None else _canon(image, stack))
    if kind == "set":
        return frozenset([_canon(x, stack) for x in obj])
    if kind == "node":
        return ("node", obj.name)
    if kind == "timer":
        live = not obj.cancelled and obj.owner.alive and obj.owner.epoch == obj.epoch
        return ("timer", getattr(obj.fn, "__name__", "?"), live)
    if kind == "fn":
        return ("fn", getattr(obj, "__qualname__", "?"))
    if kind == "host":
        return ("host",)
    if id(obj) in _SHARED_IDS and _SHARED.get(id(obj)) is obj:
        return ("shared", id(obj))
    if kind == "frozen":
        try:
            hash(obj)
            return obj
        except TypeError:
            pass
    if id(obj) in stack:
        return ("cycle", t.__qualname__)
    stack.add(id(obj))
    try:
        attrs: list[tuple[str, Any]] = []
        d = getattr(obj, "__dict__", None)
        if d is not None:
            attrs.extend(d.items())
        for slot in _slots(t):
            if hasattr(obj, slot):
                attrs.append((slot, getattr(obj, slot)))
        return (t.__qualname__, tuple(sorted([(k, _canon(v, stack)) for k, v in attrs])))
    finally:
        stack.discard(id(obj))


def _ignored(cls: type) -> frozenset[str]:
    names = set(_SKIP_NODE_ATTRS)
    for c in cls.__mro__:
        names.update(getattr(c, "search_ignore", ()))
    return frozenset(names)


_IGNORED: dict[type, frozenset[str]] = {}


def node_state(node: Node) -> Any:
    """A hashable form of one node's protocol state (host references and counters left out).

    A node class leaves more attributes out with a class variable ``search_ignore`` (names of
    counters and histories that do not change what the node does next).
    """
    skip = _IGNORED.get(type(node))
    if skip is None:
        skip = _IGNORED[type(node)] = _ignored(type(node))
    stack = {id(node)}
    items = [(k, _canon(v, stack)) for k, v in node.__dict__.items() if k not in skip]
    return (type(node).__qualname__, tuple(sorted(items)))


def flight_key(world: SearchWorld, m: InFlight, relative: bool) -> Any:
    sent = m.sent - world.now if relative else 0.0
    return (m.src, m.dst, _canon(m.msg, set()), sent, m.epoch == world.nodes[m.dst].epoch)


def timer_key(world: SearchWorld, t: Scheduled, relative: bool) -> Any:
    ev = t.event
    args = _canon(ev.args, set()) if isinstance(ev, Timer) else ()
    when = (t.at - world.now) if relative else t.delay
    return (t.owner, t.name, args, when)


def canonical(world: SearchWorld, relative_time: bool, extra: Any = ()) -> Any:
    """The hashable key of a state: node states, the in-flight multiset, live timers, and ``extra``.

    With ``relative_time`` times are kept relative to now (the bounded-delay model);
    otherwise only each node's timer order and delays count (the ordering model).
    """
    nodes = tuple((name, node.alive, node_state(node)) for name, node in world.nodes.items())
    flight = frozenset(Counter(flight_key(world, m, relative_time) for m in world.network.flight).items())
    timers = world.env.live()
    if relative_time:
        tkeys: Any = frozenset(Counter(timer_key(world, t, True) for t in timers).items())
    else:
        tkeys = tuple(timer_key(world, t, False) for t in timers)
    return (nodes, flight, tkeys, extra)
