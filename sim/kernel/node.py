"""Endpoints (clients and nodes), handler dispatch, timers, crash and recovery.

A node's protocol logic lives in deterministic handlers: ``handle_<MessageClass>
(self, msg, src)`` for messages and plain methods for timers. State the
protocol keeps in ``self.disk`` survives a crash as far as the node's fsync policy
made it durable (:mod:`sim.fsync`; by default all of it); everything set up in
:meth:`Node.boot` is volatile and is rebuilt when the node recovers.

A node talks to the world it runs in only through its :class:`Host`: the clock and
scheduler (``host.env``), the outbox (``host.network``), the run's random streams,
event log and protocol state. In a run the host is the
:class:`~sim.kernel.world.World`; in a unit test it is a
:class:`~sim.harness.Harness`, which records sends and timers instead of delivering
them, so one handler can be tested alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from simpy.core import URGENT
from simpy.events import NORMAL

from .disk import Disk

if TYPE_CHECKING:
    from ..rng import Streams
    from ..scenario import Scenario
    from .events import EventLog

__all__ = ["Endpoint", "Node", "Timer", "UnhandledMessage", "Host", "Scheduler", "Outbox"]


class Scheduler(Protocol):
    """A clock that runs events: SimPy's ``Environment``, or a harness's manual clock."""

    @property
    def now(self) -> float: ...

    def schedule(self, event: Any, priority: Any = ..., delay: Any = ...) -> None: ...


class Outbox(Protocol):
    """Where a node's messages go: the simulated network, or a harness's record."""

    def send(self, src: str, dst: str, msg: Any) -> None: ...

    def disconnect(self, src: str, dst: str) -> None: ...


class Host(Protocol):
    """What a node may use of the world it runs in (a World, or a Harness in tests)."""

    @property
    def scenario(self) -> Scenario: ...

    @property
    def seed(self) -> int: ...

    @property
    def streams(self) -> Streams: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def env(self) -> Scheduler: ...

    @property
    def network(self) -> Outbox: ...

    @property
    def state(self) -> Any: ...

    def record_node_event(self, node: str, event: str) -> None: ...


class UnhandledMessage(TypeError):
    """A node received a message type it has no handler for (a protocol bug)."""


class Timer:
    """A pending callback; :meth:`cancel` stops it. Costs one SimPy heap entry.

    A timer set before its owner crashed never fires (the owner's epoch changed).
    ``at`` is the simulated time it is due. A node's timers measure its local clock:
    when the node's clock rate changes while a timer is pending, the timer moves to
    a new heap entry (:class:`_Retimed`) and its first one no longer fires.
    """

    __slots__ = ("callbacks", "_ok", "owner", "epoch", "fn", "args", "at", "cancelled", "entry")

    callbacks: list[Callable[[object], None]] | None  # SimPy sets it to None once the event has run

    def __init__(self, owner: Endpoint, delay: float, fn: Callable[..., Any], args: tuple, urgent: bool) -> None:
        self._ok = True
        self.owner = owner
        self.epoch = owner.epoch
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.entry: _Retimed | None = None  # None: the timer is its own heap entry
        env = owner.env
        self.at = env.now + delay
        self.callbacks = [self._fire]
        env.schedule(self, URGENT if urgent else NORMAL, delay)

    def _fire(self, _event: object) -> None:
        owner = self.owner
        if not self.cancelled and owner.alive and owner.epoch == self.epoch:
            self.fn(*self.args)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def pending(self) -> bool:
        """Neither fired nor cancelled, and its owner has not crashed since it was set."""
        owner = self.owner
        return bool(self.heap_entry().callbacks) and not self.cancelled and owner.alive and owner.epoch == self.epoch

    def heap_entry(self) -> Timer | _Retimed:
        """The scheduled event that will fire this timer (itself unless it was retimed)."""
        return self if self.entry is None else self.entry

    def _retime(self, delay: float) -> None:
        """Fire ``delay`` ms from now instead (the owner's clock rate changed)."""
        self.heap_entry().callbacks = []  # the old entry still pops, and runs nothing
        self.entry = _Retimed(self, delay)
        self.at = self.owner.env.now + delay


class _Retimed:
    """A timer's heap entry after its node's clock rate changed while it was pending."""

    __slots__ = ("callbacks", "_ok", "timer")

    def __init__(self, timer: Timer, delay: float) -> None:
        self._ok = True
        self.timer = timer
        self.callbacks: list[Callable[[object], None]] | None = [timer._fire]
        timer.owner.env.schedule(self, NORMAL, delay)


class _Wakeup:
    """A callback ``delay`` ms from now that no crash cancels (a process supervisor's restart)."""

    __slots__ = ("callbacks", "_ok")

    def __init__(self, env: Scheduler, delay: float, fn: Callable[[], None]) -> None:
        self._ok = True
        self.callbacks = [lambda _event: fn()]
        env.schedule(self, NORMAL, delay)


class Endpoint:
    """Anything with a network address: a node or a client."""

    def __init__(self, world: Host, name: str, home: str | None = None) -> None:
        self.world = world
        self.env = world.env
        self.name = name
        self.home = home if home is not None else name
        self.net = world.network
        self.alive = True
        self.epoch = 0
        self._handlers: dict[type, Callable[[Any, str], None]] = {}

    @property
    def now(self) -> float:
        return self.env.now

    def send(self, dst: str, msg: Any) -> None:
        """Hand ``msg`` to the network; a crashed endpoint sends nothing."""
        if self.alive:
            self.net.send(self.name, dst, msg)

    def disconnect(self, peer: str) -> None:
        """Close this endpoint's connection with ``peer``, if any (:mod:`sim.kernel.transport`).

        Unacknowledged messages on it are dropped and the peer is told nothing: it
        learns by its timeout, its heartbeats or a reset, as from a closed socket.
        """
        if self.alive:
            self.net.disconnect(self.name, peer)

    def on_connection_broken(self, peer: str, reason: str) -> None:
        """Hook: the connection with ``peer`` broke (``reason``: ``"timeout"`` or ``"reset"``).

        What this endpoint had sent on it and not had acknowledged is lost; its
        next message to ``peer`` opens a new connection. Only messages that travel
        on connections (``network.transport``) break connections.
        """

    def set_timer(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` after ``delay`` ms unless cancelled or the owner crashes first."""
        return Timer(self, delay, fn, args, False)

    def receive(self, src: str, msg: Any) -> None:
        handler = self._handlers.get(msg.__class__)
        if handler is None:
            handler = self._resolve(msg.__class__)
        handler(msg, src)

    def _resolve(self, cls: type) -> Callable[[Any, str], None]:
        handler = getattr(self, "handle_" + cls.__name__, None)
        if handler is None:
            raise UnhandledMessage(f"{type(self).__name__} {self.name!r} has no handle_{cls.__name__}()")
        self._handlers[cls] = handler
        return handler

    def start(self) -> None:
        """Called once when the run starts."""


class Node(Endpoint):
    """A server node. Subclasses override :meth:`boot` and add ``handle_*`` methods."""

    def __init__(self, world: Host, name: str) -> None:
        super().__init__(world, name)
        policy = world.scenario.cluster.fsync_of(name)
        #: durable state; under fsync "always" (the default) a plain dict, every write durable at once
        self.disk: dict[str, Any] = {} if policy.always else Disk(policy)
        self.crashes = 0
        # the local clock (see the clock section below): both readings are
        # shift + rate * simulated time, exactly simulated time until a clock fault
        self._clock_rate = 1.0
        self._wall_shift = 0.0
        self._mono_shift = 0.0
        self._timers: list[Timer] = []  # may be pending: retimed when the clock rate changes
        self._timers_cap = 256
        self._arm_flush()

    def start(self) -> None:
        self.boot()

    def boot(self) -> None:
        """Set up volatile state (at start and after every recovery), reading ``self.disk``."""

    def on_crash(self) -> None:
        """Hook called as the node crashes (its volatile state is about to be discarded)."""

    def on_clean_stop(self) -> None:
        """Hook called as the node is stopped cleanly (a ``crash`` fault with ``clean = true``).

        By default the same as :meth:`on_crash`: a node loses its volatile state
        either way; a node whose durable state records differently what an orderly
        stop and a kill leave behind (the messaging broker) overrides it.
        """
        self.on_crash()

    def replica_state(self) -> dict[Any, Any] | None:
        """What a read served by this replica alone would return, per key it holds.

        Replicated protocols override this so convergence can be measured (values
        must be comparable with ``==``; use a frozenset for siblings). ``None``:
        this node holds no replica state.
        """
        return None

    def replica_versions(self, keys: Sequence[Any]) -> dict[Any, tuple[Mapping[Any, Any], ...]] | None:
        """The version of the value this replica holds for each of ``keys`` it holds: a tuple
        of version vectors ``{origin: counter}``, one per sibling (usually one).

        Lets the convergence sampler tell a replica that lags (an older point of the same
        history) from one that conflicts (see :mod:`sim.checkers.convergence`); called
        only for keys that diverge. ``None``: this node gives no versions.
        """
        return None

    def crash(self, clean: bool = False, *, power_loss: bool = True) -> None:
        """The node goes down: killed, or stopped cleanly with ``clean`` (:meth:`on_clean_stop`).

        A clean stop flushes the disk. A kill is a machine crash: the disk keeps only
        what its fsync policy made durable (before :meth:`on_crash` runs, so the hook
        sees what the node will find). ``power_loss=False`` is a process crash on a
        machine that stays up: the operating system still holds every write.
        """
        if not self.alive:
            return
        disk = self.disk
        if clean:
            self.on_clean_stop()
            if isinstance(disk, Disk):
                disk.sync()
        else:
            if power_loss and isinstance(disk, Disk):
                disk.lose_unsynced()
            self.on_crash()
        self.alive = False
        self.epoch += 1
        self.crashes += 1
        self.world.record_node_event(self.name, "crash")

    def recover(self) -> None:
        if self.alive:
            return
        self.alive = True
        self.epoch += 1
        self.world.record_node_event(self.name, "recover")
        self._arm_flush()
        self.boot()

    def restart_after(self, delay: float) -> None:
        """The node's process dies now and is restarted ``delay`` ms later.

        A seeded process crash (as opposed to a machine crash from the fault
        schedule): volatile state is lost at once, what it wrote to disk is kept (the
        machine's page cache survives a process). If the node crashes or recovers
        again in between (the fault schedule), that later event decides instead.
        """
        self.crash(power_loss=False)
        crashes = self.crashes
        _Wakeup(self.env, delay, lambda: self.recover() if self.crashes == crashes else None)

    # -- durability (the fsync policy, sim.fsync) ---------------------------------
    def _arm_flush(self) -> None:
        """Under ``interval``, the periodic flush; a crash stops it, recovery starts it again."""
        disk = self.disk
        if isinstance(disk, Disk) and disk.policy.interval is not None:
            self.set_timer(disk.policy.interval, self._flush, disk)

    def _flush(self, disk: Disk) -> None:
        disk.sync()
        self._arm_flush()

    # -- local clock (skew, drift and steps come from the fault schedule) -------------
    # A node has one oscillator and two readings of it, as an operating system does.
    # The oscillator runs at ``rate`` = 1 + drift times real (simulated) speed.
    # ``monotonic()`` counts its ticks: it never jumps and never goes back, and the
    # node's timers run on it (a timer of d ms fires after d / rate real ms).
    # ``clock()`` is the wall clock (time of day): the same ticks plus an offset that
    # clock faults set or step, so it can jump, backwards too. Use ``clock()`` for
    # timestamps that other nodes compare (LWW), ``monotonic()`` to measure durations
    # (leases, "heard from the leader lately"), as real systems do; a step then moves
    # timestamps but no timer or duration, and a rate error moves all of them.

    def set_timer(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` once the local clock has advanced ``delay`` ms (unless
        cancelled or the node crashes first): after ``delay / rate`` simulated ms."""
        timer = Timer(self, delay / self._clock_rate, fn, args, False)
        timers = self._timers
        timers.append(timer)
        if len(timers) > self._timers_cap:  # drop fired and cancelled ones, amortised O(1)
            self._timers = timers = [t for t in timers if (t.entry or t).callbacks and not t.cancelled]
            self._timers_cap = max(256, 2 * len(timers))
        return timer

    def clock(self) -> float:
        """This node's wall clock reading in ms (simulated time, skewed, drifting, stepped)."""
        return self._wall_shift + self._clock_rate * self.env.now

    def monotonic(self) -> float:
        """This node's monotonic clock in ms: drifts with the clock rate, never jumps.

        Equal to simulated time until a fault changes the node's clock rate.
        """
        return self._mono_shift + self._clock_rate * self.env.now

    @property
    def clock_rate(self) -> float:
        """Local ms per simulated ms (1 + drift)."""
        return self._clock_rate

    def set_clock_skew(self, offset: float, drift: float) -> None:
        """From now (``t0``) the wall clock reads ``t + offset + drift * (t - t0)``: it jumps
        by ``offset`` and then gains ``drift`` ms per ms. The monotonic clock and the
        timers run at the new rate ``1 + drift`` from now on, without a jump."""
        if not drift > -1.0:
            raise ValueError(f"clock drift must be > -1 (a clock cannot stop or run backwards), got {drift}")
        now = self.env.now
        self._wall_shift = offset - drift * now
        self._set_rate(1.0 + drift)

    def step_clock(self, by: float) -> None:
        """The wall clock jumps by ``by`` ms (backwards if negative), as when NTP steps it;
        the monotonic clock and pending timers are unaffected."""
        self._wall_shift += by

    def _set_rate(self, rate: float) -> None:
        old = self._clock_rate
        if rate == old:
            return
        now = self.env.now
        self._mono_shift += (old - rate) * now  # continuous at now: shift + rate * now unchanged
        self._clock_rate = rate
        timers = [t for t in self._timers if t.pending]
        for timer in timers:
            if timer.at > now:
                timer._retime((timer.at - now) * old / rate)
        self._timers = timers
