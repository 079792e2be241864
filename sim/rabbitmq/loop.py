"""One run's event loop: every actor's connection on one pika IOLoop, a clock, timers, errors.

Each actor (publisher, consumer, observer) owns one ``SelectConnection``; all
of them share one :class:`pika.adapters.select_connection.IOLoop`, so the run
is single-threaded and its callbacks never race. Publisher confirms are
asynchronous callbacks, hence pipelined: a publisher never waits for a confirm
before publishing the next message.

No automatic connection recovery exists below the actors: when a connection
closes, :class:`Actor` records it (``node_events``) and opens a new one after
the scenario's ``reconnect_delay`` (unless the actor crashed, is cut off by a
partition, or the run is stopping), and records that too.

pika swallows exceptions raised in its callbacks (it logs them and aborts the
connection), so every callback the adapter hands to pika goes through
:meth:`Session.guard`, which stops the loop and re-raises the first error from
:meth:`Session.run_until`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .amqp import abort_connection, connect_error_reason, pika_module
from .errors import BrokerUnreachable
from .log import ObservedLog
from .names import RunNames
from .settings import AmqpSettings

__all__ = ["Session", "Actor", "raise_unreachable"]


def _precise_ioloop() -> Any:
    """A pika IOLoop whose poller is ``select``: its timeout has microsecond resolution.

    pika prefers epoll, whose timeout Python rounds up to whole milliseconds, so
    a 1.2 ms processing timer would fire after 2 ms or more (measured: 0.75 ms
    late at the median, up to 1.2 ms); with ``select`` timers fire about 0.3 ms
    late. The choice is a module setting of pika, restored right after the loop
    is made. A run has a handful of sockets, far below select's limit.
    """
    from pika.adapters import select_connection

    saved = select_connection.SELECT_TYPE
    select_connection.SELECT_TYPE = "select"
    try:
        return select_connection.IOLoop()
    finally:
        select_connection.SELECT_TYPE = saved


class Session:
    """The shared loop, clock (ms since the run's time 0), event log and node-event list."""

    def __init__(self, settings: AmqpSettings, names: RunNames, *, heartbeat: int, reconnect_delay: float,
                 log: ObservedLog | None = None) -> None:
        pika = pika_module()
        self.pika = pika
        self.settings = settings
        self.names = names
        self.heartbeat = heartbeat
        self.reconnect_delay = reconnect_delay
        self.log = log if log is not None else ObservedLog()
        self.ioloop = _precise_ioloop()
        self.t0 = time.monotonic()
        self.node_events: list[tuple[float, str, str]] = []
        self.actors: list[Actor] = []
        self.error: BaseException | None = None
        self.stopping = False
        self._running = False

    # -- clock and timers --------------------------------------------------------------
    def now(self) -> float:
        """Milliseconds since the run's time 0 (negative while connections are being set up)."""
        return (time.monotonic() - self.t0) * 1000.0

    def start_clock(self) -> None:
        """Time 0 is now; what was recorded while setting up moves to negative times."""
        t0 = time.monotonic()
        shift = (t0 - self.t0) * 1000.0
        self.node_events = [(t - shift, node, event) for t, node, event in self.node_events]
        self.t0 = t0

    def call_later(self, delay_ms: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` after ``delay_ms``; returns a handle for :meth:`cancel`."""
        return self.ioloop.call_later(max(delay_ms, 0.0) / 1000.0, self.guard(fn, *args))

    def call_at(self, t_ms: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self.call_later(t_ms - self.now(), fn, *args)

    def cancel(self, handle: Any) -> None:
        if handle is not None:
            self.ioloop.remove_timeout(handle)

    def guard(self, fn: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
        """``fn`` wrapped so that an exception stops the loop and is raised by :meth:`run_until`."""

        def call(*args: Any) -> Any:
            if self.error is not None:
                return None
            try:
                return fn(*bound, *args)
            except Exception as exc:
                self.error = exc
                self.ioloop.stop()
                return None

        return call

    def node_event(self, node: str, event: str) -> None:
        self.node_events.append((self.now(), node, event))

    # -- running ------------------------------------------------------------------------------
    def run_until(self, done: Callable[[], bool], timeout_s: float, *, poll_ms: float = 10.0) -> bool:
        """Run the loop until ``done()`` is true (checked every ``poll_ms``) or ``timeout_s`` passes.

        Returns whether ``done()`` became true; raises the first error of a callback.
        """
        deadline = time.monotonic() + timeout_s
        finished = [False]

        def check() -> None:
            if done():
                finished[0] = True
                self.ioloop.stop()
            elif time.monotonic() >= deadline:
                self.ioloop.stop()
            else:
                self.ioloop.call_later(poll_ms / 1000.0, self.guard(check))

        if done():
            return True
        self.ioloop.call_later(0, self.guard(check))
        self._running = True
        try:
            self.ioloop.start()
        finally:
            self._running = False
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        return finished[0]

    def close(self) -> None:
        """Close every connection (abruptly if a clean close does not finish in 3 s), then the loop."""
        self.stopping = True
        for actor in self.actors:
            actor.close()
        try:
            self.run_until(lambda: all(a.conn is None for a in self.actors), 3.0)
        except Exception:
            pass
        for actor in self.actors:
            if actor.conn is not None:
                abort_connection(actor.conn)
        try:
            self.ioloop.close()
        except Exception:
            pass


class Actor:
    """An application with one connection and one channel to the broker (see the module docstring)."""

    def __init__(self, session: Session, node: str, settings: AmqpSettings | None = None) -> None:
        self.s = session
        self.settings = settings if settings is not None else session.settings  # the broker this actor uses
        self.log = session.log
        self.names = session.names
        self.node = node
        self.conn: Any = None
        self.channel: Any = None
        self.gen = 0  # connection generation: callbacks of an older connection are ignored
        self.ready = False  # channel open and set up
        self.crashed = False
        self.cut_off = False  # a partition separates this actor from the broker
        self.connects = 0
        self.failed_connects = 0
        self._reconnect_timer: Any = None
        self._open_timer: Any = None
        session.actors.append(self)

    # -- opening ------------------------------------------------------------------------
    def connect(self) -> None:
        """Open a new connection (explicitly: there is no automatic recovery)."""
        pika = self.s.pika
        self.gen += 1
        gen = self.gen
        self.connects += 1
        self.s.node_event(self.node, "connect" if self.connects == 1 else "reconnect")
        params = self.settings.parameters(heartbeat=self.s.heartbeat)
        g = self.s.guard
        self.conn = pika.SelectConnection(
            params,
            on_open_callback=g(self._opened, gen),
            on_open_error_callback=g(self._open_failed, gen),
            on_close_callback=g(self._closed, gen),
            custom_ioloop=self.s.ioloop,
        )
        self._open_timer = self.s.call_later(self.settings.connection_timeout * 2000.0, self._open_timeout, gen)

    def _open_timeout(self, gen: int) -> None:
        if gen == self.gen and not self.ready and self.conn is not None:
            self.s.node_event(self.node, "connect_timeout")
            abort_connection(self.conn)

    def _opened(self, gen: int, conn: Any) -> None:
        if gen != self.gen:
            conn.close()
            return
        conn.channel(on_open_callback=self.s.guard(self._channel_opened, gen))

    def _channel_opened(self, gen: int, channel: Any) -> None:
        if gen != self.gen:
            return
        self.channel = channel
        channel.add_on_close_callback(self.s.guard(self._channel_closed, gen))
        self.setup(channel, gen)

    def set_ready(self, gen: int) -> None:
        """Subclasses call this when their channel is fully set up."""
        if gen == self.gen:
            self.s.cancel(self._open_timer)
            self.ready = True
            self.s.node_event(self.node, "ready")
            self.on_ready()

    def _open_failed(self, gen: int, conn: Any, error: BaseException) -> None:
        if gen != self.gen:
            return
        self.s.cancel(self._open_timer)
        self.conn = None
        self.failed_connects += 1
        self.s.node_event(self.node, f"connect_failed: {connect_error_reason(error, self.settings)}")
        self._schedule_reconnect()

    # -- losing ------------------------------------------------------------------------------
    def _closed(self, gen: int, conn: Any, reason: BaseException) -> None:
        if gen != self.gen:
            return
        self.s.cancel(self._open_timer)
        was_ready = self.ready
        self.conn = None
        self.channel = None
        self.ready = False
        self.s.node_event(self.node, f"connection_closed: {self._reason(reason)}")
        if was_ready:
            self.on_connection_lost(self._reason(reason))
        self._schedule_reconnect()

    def _channel_closed(self, gen: int, channel: Any, reason: BaseException) -> None:
        """A channel error (e.g. a queue missing while the broker restarts): give up the whole connection."""
        if gen != self.gen or self.conn is None:
            return
        self.s.node_event(self.node, f"channel_closed: {self._reason(reason)}")
        if self.conn.is_open:
            self.conn.close()

    @staticmethod
    def _reason(reason: BaseException) -> str:
        code = getattr(reason, "reply_code", None)
        text = getattr(reason, "reply_text", None)
        if code is not None:
            return f"{code} {text}"
        return f"{type(reason).__name__}{': ' + str(reason) if str(reason) else ''}"

    def _schedule_reconnect(self) -> None:
        if self.s.stopping or self.crashed or self.cut_off or self._reconnect_timer is not None:
            return
        self._reconnect_timer = self.s.call_later(self.s.reconnect_delay, self._reconnect)

    def _reconnect(self) -> None:
        self._reconnect_timer = None
        if self.conn is None and not (self.s.stopping or self.crashed or self.cut_off):
            self.connect()

    # -- faults -------------------------------------------------------------------------------
    def drop(self, reason: str) -> None:
        """Cut the connection abruptly; the close callback then records it and the actor reconnects."""
        self.s.node_event(self.node, f"drop: {reason}")
        if self.conn is not None:
            abort_connection(self.conn)

    def crash(self) -> None:
        """The process dies: volatile state is lost and its socket closes with it (no reconnect until restart)."""
        self.crashed = True
        self.s.node_event(self.node, "crash")
        self.s.cancel(self._reconnect_timer)
        self._reconnect_timer = None
        self.on_crash()
        conn, self.conn, self.channel, self.ready = self.conn, None, None, False
        self.gen += 1  # the old connection's callbacks no longer reach this actor
        if conn is not None:
            abort_connection(conn)

    def restart(self) -> None:
        self.crashed = False
        self.s.node_event(self.node, "restart")
        self.on_restart()
        self.connect()

    def cut(self) -> None:
        """A partition starts: drop the connection and do not reconnect until :meth:`heal`."""
        self.cut_off = True
        self.drop("partition")

    def heal(self) -> None:
        self.cut_off = False
        if self.conn is None and not self.crashed:
            self.connect()

    def close(self) -> None:
        """Close the connection cleanly at the end of the run."""
        self.s.cancel(self._reconnect_timer)
        self._reconnect_timer = None
        if self.conn is not None and (self.conn.is_open or self.conn.is_opening):
            try:
                self.conn.close()
            except Exception:
                pass
        elif self.conn is not None and self.conn.is_closed:
            self.conn = None

    # -- hooks ------------------------------------------------------------------------------------
    def setup(self, channel: Any, gen: int) -> None:
        """Configure the fresh channel, then call :meth:`set_ready`."""
        self.set_ready(gen)

    def on_ready(self) -> None:
        """The channel is set up (first time or after a reconnect)."""

    def on_connection_lost(self, reason: str) -> None:
        """A ready connection closed (broker restart, drop, channel error)."""

    def on_crash(self) -> None:
        """Volatile state is lost (called before the socket closes)."""

    def on_restart(self) -> None:
        """The process starts again after a crash (before it reconnects)."""


def raise_unreachable(actors: list[Actor], settings: AmqpSettings) -> None:
    """After a failed set-up: a clear error naming what did not connect."""
    failed = [a.node for a in actors if not a.ready]
    raise BrokerUnreachable(f"cannot connect to RabbitMQ at {settings.redacted_url()}: "
                            f"{', '.join(failed)} did not connect within {settings.connection_timeout * 2:g} s")

