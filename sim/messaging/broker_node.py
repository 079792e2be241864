"""The broker as a simulated node: the pure :class:`~sim.messaging.broker.Broker` on the network.

Connections: a client opens one (``ConnectionOpen``) and both sides exchange
heartbeats every ``heartbeat / 2``; a side that hears nothing from the other for
``heartbeat`` ms considers the connection dead (RabbitMQ's two missed
heartbeats) and closes its socket. The broker then closes the channel, which
requeues its unacked messages (marked redelivered). The frames travel on the
network's connections (:mod:`sim.kernel.transport`, the default), so a
partition shorter than the heartbeat only delays them; when the network
connection itself breaks (its ``timeout``, or a reset) the broker closes every
channel of that client at once. A client that closes its connection, or whose
process dies (the OS closes the socket), is noticed at once. A frame on a
connection the broker does not know (e.g. with frames sent as datagrams, after a
broker restart) is answered with ``ConnectionClosed``, as a TCP reset would be.

Crash and recovery: the :class:`Broker` object lives in ``self.disk`` and
:meth:`Broker.crash` discards what a real broker loses (see
:mod:`sim.messaging.broker`); connections are volatile. A clean stop (``clean =
true``) first closes every client connection with ``320 CONNECTION_FORCED``, as
RabbitMQ does; a killed broker sends nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..kernel.node import Node, Timer
from .broker import Broker, ChannelClosed, Confirm, Delivery, Effect, Returned
from .costs import BrokerCosts
from .frames import (
    BasicAck,
    BasicConsume,
    BasicConsumeOk,
    BasicDeliver,
    BasicNack,
    BasicPublish,
    BasicReturn,
    ConnectionClose,
    ConnectionClosed,
    ConnectionOpen,
    ConnectionOpenOk,
    Heartbeat,
    PublishConfirm,
)
from .routing import route

if TYPE_CHECKING:
    from .protocol import MessagingConfig, MessagingState

__all__ = ["BrokerNode", "SHUTDOWN"]

#: what RabbitMQ 3.10 sends every client as it stops cleanly
SHUTDOWN = "320 CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


class _Conn:
    __slots__ = ("client", "last", "frames")

    def __init__(self, client: str, now: float) -> None:
        self.client = client
        self.last = now
        self.frames: set[int] = set()  # frame numbers seen (ints: membership only)


class BrokerNode(Node):
    """Runs the broker; records broker events and queue depths in the run's message log."""

    def __init__(self, world: Any, name: str, cfg: MessagingConfig, runtime: MessagingState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.log = runtime.log
        self.depth_interval = runtime.depth_interval
        self.finished = False
        self.costs: BrokerCosts | None = None if cfg.broker_costs.zero else cfg.broker_costs
        self._confirm_costs: dict[tuple[str, str], float] = {}

    @property
    def broker(self) -> Broker:
        return self.disk["broker"]

    def boot(self) -> None:
        self.conns: dict[str, _Conn] = {}
        self._armed = math.inf
        self._deadline: Timer | None = None
        broker = self.disk.get("broker")
        if broker is None:
            broker = Broker(self.cfg.topology, log=self.log, node=self.name,
                            consumer_timeout=self.cfg.consumer_timeout)
            self.disk["broker"] = broker
            effects: list[Effect] = []
        else:
            effects = broker.recover(self.now)
        self.set_timer(self.cfg.heartbeat / 2, self._heartbeat)
        self._sample()
        self._emit(effects)

    def on_crash(self) -> None:
        broker = self.disk.get("broker")
        if broker is not None:  # None: a power loss took a broker that was never flushed (sim.fsync)
            broker.crash(self.now)

    def on_clean_stop(self) -> None:
        """An orderly stop: as RabbitMQ does, every client connection is closed with ``320 CONNECTION_FORCED``
        first, so clients know at once (not only when a heartbeat or the connection times out)."""
        for conn, st in list(self.conns.items()):
            self.send(st.client, ConnectionClosed(conn, SHUTDOWN))
        self.conns.clear()
        self.broker.crash(self.now, clean=True)

    # -- connections ------------------------------------------------------------------
    def _conn(self, conn: str, src: str) -> _Conn | None:
        st = self.conns.get(conn)
        if st is None:
            self.send(src, ConnectionClosed(conn, "unknown connection"))
            return None
        st.last = self.now
        return st

    def _fresh(self, st: _Conn, frame: int) -> bool:
        """False for a frame already seen on this connection (a network duplicate)."""
        if frame in st.frames:
            return False
        st.frames.add(frame)
        return True

    def handle_ConnectionOpen(self, msg: ConnectionOpen, src: str) -> None:
        st = self.conns.get(msg.conn)
        if st is None:
            self.conns[msg.conn] = _Conn(src, self.now)
            self.broker.open_channel(msg.conn)
        else:
            st.last = self.now
        self.send(src, ConnectionOpenOk(msg.conn))

    def handle_ConnectionClose(self, msg: ConnectionClose, src: str) -> None:
        if self.conns.pop(msg.conn, None) is not None:
            self._emit(self.broker.close_channel(self.now, msg.conn, "connection"))

    def handle_Heartbeat(self, msg: Heartbeat, src: str) -> None:
        self._conn(msg.conn, src)

    def _heartbeat(self) -> None:
        now = self.now
        for conn, st in list(self.conns.items()):
            if now - st.last > self.cfg.heartbeat:
                del self.conns[conn]
                if all(other.client != st.client for other in self.conns.values()):
                    self.disconnect(st.client)  # the broker closes the socket
                self._emit(self.broker.close_channel(now, conn, "heartbeat_timeout"))
            else:
                self.send(st.client, Heartbeat(conn))
        self.set_timer(self.cfg.heartbeat / 2, self._heartbeat)

    def on_connection_broken(self, peer: str, reason: str) -> None:
        """The network connection to ``peer`` broke: every AMQP connection of that client is gone."""
        for conn, st in list(self.conns.items()):
            if st.client == peer:
                del self.conns[conn]
                self._emit(self.broker.close_channel(self.now, conn, f"connection_{reason}"))

    # -- AMQP methods -------------------------------------------------------------------
    def handle_BasicPublish(self, msg: BasicPublish, src: str) -> None:
        st = self._conn(msg.conn, src)
        if st is not None and self._fresh(st, msg.frame):
            confirm = 0.0 if self.costs is None or msg.seq is None else self._confirm_cost(msg.exchange,
                                                                                            msg.routing_key)
            self._emit(self.broker.publish(self.now, msg.conn, msg.message, exchange=msg.exchange,
                                           routing_key=msg.routing_key, mandatory=msg.mandatory, seq=msg.seq),
                       confirm=confirm)

    def handle_BasicConsume(self, msg: BasicConsume, src: str) -> None:
        if self._conn(msg.conn, src) is None:
            return
        self.send(src, BasicConsumeOk(msg.conn, msg.consumer_tag))  # before the first delivery
        if msg.consumer_tag not in self.broker.channels[msg.conn].consumers:  # not a resend
            self._emit(self.broker.consume(self.now, msg.conn, msg.queue, consumer_tag=msg.consumer_tag,
                                           prefetch=msg.prefetch, auto_ack=msg.auto_ack))

    def handle_BasicAck(self, msg: BasicAck, src: str) -> None:
        st = self._conn(msg.conn, src)
        if st is not None and self._fresh(st, msg.frame):
            self._emit(self.broker.ack(self.now, msg.conn, msg.delivery_tag, msg.multiple), cause="ack")

    def handle_BasicNack(self, msg: BasicNack, src: str) -> None:
        st = self._conn(msg.conn, src)
        if st is not None and self._fresh(st, msg.frame):
            self._emit(self.broker.nack(self.now, msg.conn, msg.delivery_tag, msg.multiple, msg.requeue),
                       cause="nack")

    # -- effects and timers ---------------------------------------------------------------
    def _emit(self, effects: list[Effect], cause: str = "", confirm: float = 0.0) -> None:
        """Send what the broker did to the clients; with costs, deliveries and confirms leave later.

        ``cause`` (``ack``, ``nack``, ``tick`` or none) picks a delivery's cost; ``confirm`` is
        the publish's confirm cost (:mod:`sim.messaging.costs`).
        """
        costs = self.costs
        for e in effects:
            st = self.conns.get(e.channel)
            if st is None:
                continue
            if isinstance(e, Delivery):
                frame: Any = BasicDeliver(e.channel, e.consumer_tag, e.delivery_tag, e.queue, e.message,
                                          e.redelivered, e.delivery_count)
                delay = 0.0 if costs is None else costs.delivery(self.broker.queues[e.queue].spec.type, cause,
                                                                 e.redelivered)
                self._send(st.client, e.channel, frame, delay)
            elif isinstance(e, Confirm):
                self._send(st.client, e.channel, PublishConfirm(e.channel, e.seq, e.ack), confirm if e.ack else 0.0)
            elif isinstance(e, Returned):
                self.send(st.client, BasicReturn(e.channel, e.seq, e.message, e.reply_code, e.reply_text))
            elif isinstance(e, ChannelClosed):
                del self.conns[e.channel]
                self.send(st.client, ConnectionClosed(e.channel, f"{e.reply_code} {e.reply_text}"))
        self._arm()

    def _send(self, client: str, conn: str, frame: Any, delay: float) -> None:
        if delay <= 0.0:
            self.send(client, frame)
        else:  # if the connection closes meanwhile the frame is never sent (its message was requeued)
            self.set_timer(delay, lambda: self._send_if_open(client, conn, frame))

    def _send_if_open(self, client: str, conn: str, frame: Any) -> None:
        if conn in self.conns:
            self.send(client, frame)

    def _confirm_cost(self, exchange: str, routing_key: str) -> float:
        key = (exchange, routing_key)
        cost = self._confirm_costs.get(key)
        if cost is None:
            assert self.costs is not None
            topo = self.cfg.topology
            queues = route(topo, exchange, routing_key) if topo.has_exchange(exchange) else []
            cost = self._confirm_costs[key] = max(
                (self.costs.of(topo.queue(q).type).confirm for q in queues), default=0.0)
        return cost

    def _arm(self) -> None:
        """Keep one timer for the broker's next deadline (TTL expiry at a head, ack timeout)."""
        d = self.broker.next_deadline()
        if d < self._armed:
            if self._deadline is not None:
                self._deadline.cancel()
            self._armed = d
            self._deadline = self.set_timer(max(d - self.now, 0.0), self._on_deadline)

    def _on_deadline(self) -> None:
        self._armed = math.inf
        self._deadline = None
        self._emit(self.broker.tick(self.now), cause="tick")

    def _sample(self) -> None:
        if self.depth_interval is None:
            return
        self.record_depths()
        self.set_timer(self.depth_interval, self._sample)

    def record_depths(self) -> None:
        broker = self.broker
        for name in broker.queues:
            ready, unacked = broker.depth(name)
            self.log.sample_depth(self.now, name, ready, unacked)

    def finish(self) -> None:
        """At the end of the run: record what is still queued (``remain``) and a last depth sample."""
        if not self.finished:
            self.finished = True
            self.broker.remaining(self.now)
            self.record_depths()
