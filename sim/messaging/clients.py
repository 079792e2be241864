"""Publisher and downstream-service nodes, and the AMQP client connection logic they share.

:class:`AmqpClient` keeps one connection to the broker: it opens it (retrying
every ``reconnect_delay``), sends heartbeats every ``heartbeat / 2``, declares
it dead after ``heartbeat`` ms of silence (closing its socket: the network
connection goes with it), when the broker says it is gone or when the network
connection breaks (its timeout, or a reset from a restarted broker), and
reconnects. Connection ids (``<node>#<n>``) are never reused, so a frame
from an old connection is recognised as such. No automatic recovery of
consumers or unconfirmed publishes happens below the application: each node
decides what to do on reconnect (as with pika without automatic recovery).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..dists import Exponential, buffered_sampler
from ..kernel.node import Node
from .broker import Message
from .frames import (
    BasicPublish,
    BasicReturn,
    Call,
    CallReply,
    ConnectionClosed,
    ConnectionOpen,
    ConnectionOpenOk,
    Heartbeat,
    PublishConfirm,
)

if TYPE_CHECKING:
    from .protocol import DownstreamSpec, MessagingConfig, MessagingState, PublisherSpec

__all__ = ["AmqpClient", "PublisherNode", "DownstreamNode"]


class AmqpClient(Node):
    """A node with one broker connection; subclasses override the ``on_*`` hooks."""

    def __init__(self, world: Any, name: str, cfg: MessagingConfig, runtime: MessagingState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.runtime = runtime
        self.log = runtime.log
        self.broker_name = cfg.broker
        self._conn_counter = 0  # kept across crashes: connection ids stay unique

    def boot(self) -> None:
        self.conn: str | None = None
        self._opening: str | None = None
        self.last_heard = self.now
        self._frame = 0
        self._connect()
        self.set_timer(self.cfg.heartbeat / 2, self._heartbeat)

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        self._conn_counter += 1
        conn = f"{self.name}#{self._conn_counter}"
        self._opening = conn
        self.send(self.broker_name, ConnectionOpen(conn))
        self.set_timer(self.cfg.reconnect_delay, self._open_timeout, conn)

    def _open_timeout(self, conn: str) -> None:
        if self._opening == conn:
            self._connect()

    def handle_ConnectionOpenOk(self, msg: ConnectionOpenOk, src: str) -> None:
        if msg.conn != self._opening:
            return
        self._opening = None
        self.conn = msg.conn
        self.last_heard = self.now
        self._frame = 0
        self.on_connected()

    def handle_ConnectionClosed(self, msg: ConnectionClosed, src: str) -> None:
        if msg.conn == self.conn:
            self._lost(msg.reason)

    def handle_Heartbeat(self, msg: Heartbeat, src: str) -> None:
        self.heard(msg.conn)

    def on_connection_broken(self, peer: str, reason: str) -> None:
        """The network connection to the broker broke: the AMQP connection on it is gone."""
        if peer == self.broker_name and self.conn is not None:
            self._lost(f"connection_{reason}")

    def heard(self, conn: str) -> bool:
        """Note traffic from the broker; False if it came on a connection no longer in use."""
        if conn != self.conn:
            return False
        self.last_heard = self.now
        return True

    def _heartbeat(self) -> None:
        if self.conn is not None:
            if self.now - self.last_heard > self.cfg.heartbeat:
                self.disconnect(self.broker_name)  # the client library closes the socket
                self._lost("heartbeat_timeout")
            else:
                self.send(self.broker_name, Heartbeat(self.conn))
        self.set_timer(self.cfg.heartbeat / 2, self._heartbeat)

    def _lost(self, reason: str) -> None:
        old = self.conn
        self.conn = None
        if old is not None:
            self.on_connection_lost(old, reason)
        if self._opening is None:
            self.set_timer(self.cfg.reconnect_delay, self._reconnect)

    def _reconnect(self) -> None:
        if self.conn is None and self._opening is None:
            self._connect()

    def next_frame(self) -> int:
        self._frame += 1
        return self._frame

    # -- hooks ---------------------------------------------------------------------------
    def on_connected(self) -> None:
        """The connection ``self.conn`` is open."""

    def on_connection_lost(self, conn: str, reason: str) -> None:
        """Connection ``conn`` is gone (``self.conn`` is already ``None``)."""


class PublisherNode(AmqpClient):
    """Publishes ``count`` messages (ids ``<node>-<i>``) at ``rate`` per second from ``start`` to ``stop``.

    With confirms and ``republish``, a message nacked by the broker, still
    unconfirmed when the connection drops, or unconfirmed after
    ``confirm_timeout``, is published again with the same id (at-least-once
    publishing: the broker may then hold it twice). While
    disconnected, new messages wait in an outbox. A crash loses the outbox and
    the unconfirmed messages (they were never confirmed). Publishing stops at
    ``stop`` or ``run.duration``, whichever comes first (the drain follows it).
    """

    def __init__(self, world: Any, name: str, cfg: MessagingConfig, runtime: MessagingState,
                 spec: PublisherSpec) -> None:
        super().__init__(world, name, cfg, runtime)
        self.spec = spec
        self.next_index = 0  # kept across crashes: ids are never reused
        duration = world.scenario.run.duration
        self.stop = min(spec.stop, duration) if spec.stop is not None else duration
        rng = world.streams[f"publisher/{name}"]
        mean_gap = 1000.0 / spec.rate
        self._gap = buffered_sampler(Exponential(mean_gap), rng) if spec.arrivals == "poisson" else (lambda: mean_gap)
        self._started = False

    def boot(self) -> None:
        self.outbox: deque[tuple[Message, int]] = deque()
        self.unconfirmed: dict[int, tuple[Message, int]] = {}
        self.pub_seq = 0
        self.pending_republish = 0  # nacked messages waiting their republish_delay
        self.arrivals_done = False
        super().boot()
        first = self.spec.start if not self._started else self.now
        self._started = True
        self._schedule(first)

    def _schedule(self, after: float) -> None:
        t = max(after, self.now) + self._gap()
        if t < self.stop and (self.spec.count is None or self.next_index < self.spec.count):
            self.set_timer(t - self.now, self._arrival)
        else:
            self.arrivals_done = True

    @property
    def done(self) -> bool:
        """Every arrival published and every message confirmed (or given up): nothing of its own in flight."""
        return self.arrivals_done and not self.outbox and not self.unconfirmed and self.pending_republish == 0

    def _arrival(self) -> None:
        spec = self.spec
        i = self.next_index
        self.next_index += 1
        rk = spec.routing_keys[i % len(spec.routing_keys)]
        msg = Message(f"{self.name}-{i}", spec.exchange, rk, spec.persistent, spec.priority, spec.expiration,
                      publisher=self.name, seq=i, published_at=self.now)
        self.publish(msg, 1)
        self._schedule(self.now)

    def publish(self, msg: Message, attempt: int) -> None:
        self.log.record(self.now, "publish", msg.msg_id, self.name, exchange=msg.exchange,
                        routing_key=msg.routing_key, attempt=attempt)
        if self.conn is None:
            self.outbox.append((msg, attempt))
        else:
            self._send(msg, attempt)

    def _send(self, msg: Message, attempt: int) -> None:
        conn = self.conn
        assert conn is not None, "sent only on an open connection"
        seq = None
        if self.spec.confirms:
            self.pub_seq += 1
            seq = self.pub_seq
            self.unconfirmed[seq] = (msg, attempt)
            if self.spec.confirm_timeout is not None:
                self.set_timer(self.spec.confirm_timeout, self._confirm_timeout, self.conn, seq)
        self.send(self.broker_name, BasicPublish(conn, self.next_frame(), seq, msg.exchange, msg.routing_key,
                                                 msg, self.spec.mandatory))

    def _confirm_timeout(self, conn: str, seq: int) -> None:
        """No confirm in time: the outcome is unknown; republish (the broker may then hold two copies)."""
        if conn == self.conn and seq in self.unconfirmed:
            msg, attempt = self.unconfirmed.pop(seq)
            self.log.record(self.now, "publish_nack", msg.msg_id, self.name, attempt=attempt, reason="timeout")
            if self.spec.republish:
                self.publish(msg, attempt + 1)

    def on_connected(self) -> None:
        self.pub_seq = 0
        while self.outbox and self.conn is not None:
            self._send(*self.outbox.popleft())

    def on_connection_lost(self, conn: str, reason: str) -> None:
        pending, self.unconfirmed = self.unconfirmed, {}
        if self.spec.confirms and self.spec.republish:
            for msg, attempt in pending.values():
                self.publish(msg, attempt + 1)

    def handle_PublishConfirm(self, msg: PublishConfirm, src: str) -> None:
        if not self.heard(msg.conn):
            return
        entry = self.unconfirmed.pop(msg.seq, None)
        if entry is None:
            return
        m, attempt = entry
        if msg.ack:
            self.log.record(self.now, "confirm", m.msg_id, self.name, attempt=attempt)
        else:
            self.log.record(self.now, "publish_nack", m.msg_id, self.name, attempt=attempt, reason="nack")
            if self.spec.republish:
                self.pending_republish += 1
                self.set_timer(self.spec.republish_delay, self._republish, m, attempt + 1)

    def _republish(self, msg: Message, attempt: int) -> None:
        self.pending_republish -= 1
        self.publish(msg, attempt)

    def handle_BasicReturn(self, msg: BasicReturn, src: str) -> None:
        if self.heard(msg.conn):
            self.log.record(self.now, "return", msg.message.msg_id, self.name, exchange=msg.message.exchange,
                            routing_key=msg.message.routing_key, reason=msg.reply_text)


class DownstreamNode(Node):
    """A service consumers call: ``servers`` parallel servers and a FIFO line.

    Every request is served, even one whose caller has already timed out
    (wasted work, which is what makes retry storms self-sustaining). With
    ``queue_limit`` set, a request that finds that many waiting is refused at
    once. A crash loses the line; callers time out.
    """

    def __init__(self, world: Any, name: str, spec: DownstreamSpec, runtime: MessagingState) -> None:
        super().__init__(world, name)
        self.spec = spec
        self.log = runtime.log
        self._service = buffered_sampler(spec.service_time, world.streams[f"downstream/{name}"])
        self.served = 0
        self.refused = 0

    def boot(self) -> None:
        self.line: deque[tuple[Call, str]] = deque()
        self.busy = 0

    def handle_Call(self, msg: Call, src: str) -> None:
        self.log.record(self.now, "call", msg.msg_id, self.name, attempt=msg.attempt)
        if self.busy < self.spec.servers:
            self._begin(msg, src)
        elif self.spec.queue_limit is not None and len(self.line) >= self.spec.queue_limit:
            self.refused += 1
            self.send(src, CallReply(msg.call_id, False))
        else:
            self.line.append((msg, src))

    def _begin(self, msg: Call, src: str) -> None:
        self.busy += 1
        self.set_timer(float(self._service()), self._done, msg, src)

    def _done(self, msg: Call, src: str) -> None:
        self.busy -= 1
        self.served += 1
        self.log.record(self.now, "serve", msg.msg_id, self.name, attempt=msg.attempt)
        self.send(src, CallReply(msg.call_id, True))
        if self.line:
            self._begin(*self.line.popleft())
