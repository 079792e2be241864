"""The consumer node: the consuming application of :mod:`sim.messaging.consumer_core` on the simulated network.

:class:`~sim.messaging.consumer_core.ConsumerCore` decides everything a
consumer does (attempt numbers, dedup, failures, crashes, the retry policy);
this node carries its decisions out with frames and timers, and turns what
arrives into the core's inputs. What is the simulation's own stays here:

* with the frames sent as datagrams (``network.transport``; by default they
  travel on connections, which never repeat or lose one) the network may
  repeat a frame that TCP would have delivered once, so a repeated
  ``basic.deliver`` (same delivery tag on the same connection) is dropped, and
  ``basic.consume`` is sent again every ``reconnect_delay`` until the broker
  answers;
* a delivery that arrives on a connection the node has already given up is
  never seen by the client library (``abandon`` with reason ``stale_connection``);
* a crash the consumer decides closes its socket with it, so the broker
  requeues its unacked messages at once; crashes from the fault schedule (a
  machine failing) are noticed by the broker through missed heartbeats, or,
  once the machine is back, by the reset its first frame on the old
  connection gets (:mod:`sim.kernel.transport`).
  The process restarts ``restart_after`` after its own crash.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..dists import buffered_sampler
from ..kernel.node import Timer
from .broker import Message
from .clients import AmqpClient
from .consumer_core import (
    RETRY_COUNT,
    Ack,
    CallDownstream,
    ConsumerCore,
    CrashProcess,
    Delivered,
    Effect,
    Held,
    Nack,
    PublishCopy,
    RetryDelay,
    StartProcessing,
    copy_headers,
)
from .frames import (
    BasicAck,
    BasicConsume,
    BasicConsumeOk,
    BasicDeliver,
    BasicNack,
    BasicPublish,
    Call,
    CallReply,
    ConnectionClose,
    PublishConfirm,
)
from .idempotency import DedupStore

if TYPE_CHECKING:
    from .protocol import ConsumerSpec, MessagingConfig, MessagingState

__all__ = ["ConsumerNode"]


class ConsumerNode(AmqpClient):
    """Consumes one queue with a prefetch window; see the module docstring."""

    def __init__(self, world: Any, name: str, cfg: MessagingConfig, runtime: MessagingState,
                 spec: ConsumerSpec) -> None:
        super().__init__(world, name, cfg, runtime)
        self.spec = spec
        self.seed = world.seed
        work = buffered_sampler(spec.processing_time, world.streams[f"consumer/{name}"])
        # the core outlives crashes of the process: it keeps the durable state itself
        self.core: ConsumerCore[Message, str] = ConsumerCore(
            spec, cfg.topology, node=name, seed=world.seed, work=work, shared_store=runtime.shared_store,
            deliveries=runtime, log=runtime.log)
        self.self_crashes = 0
        self._closing_socket = False
        self.tag = f"{name}.consumer"

    @property
    def held(self) -> dict[tuple[str, int], Held[Message, str]]:
        """Deliveries held and not yet settled, by (connection, delivery tag)."""
        return self.core.held

    @property
    def store(self) -> DedupStore | None:
        """The dedup store of an idempotent consumer (None if it is not one)."""
        return self.core.store

    def boot(self) -> None:
        self.consuming = False
        self.tags_seen: set[int] = set()
        self.call_timers: dict[int, Timer] = {}
        super().boot()

    # -- connection hooks -------------------------------------------------------------------
    def on_connected(self) -> None:
        conn = self.conn
        assert conn is not None  # called with the connection just opened
        self.core.connected(conn)
        self.consuming = False
        self.tags_seen = set()  # delivery tags of this connection (ints: membership only)
        self._consume(conn)

    def _consume(self, conn: str) -> None:
        """Send basic.consume, and again every ``reconnect_delay`` until the broker answers."""
        if self.conn == conn and not self.consuming:
            self.send(self.broker_name, BasicConsume(conn, self.spec.queue, self.tag, self.spec.prefetch,
                                                     self.spec.auto_ack))
            self.set_timer(self.cfg.reconnect_delay, self._consume, conn)

    def handle_BasicConsumeOk(self, msg: BasicConsumeOk, src: str) -> None:
        if self.heard(msg.conn):
            self.consuming = True

    def on_connection_lost(self, conn: str, reason: str) -> None:
        self.core.connection_lost(self.now, conn)

    def on_crash(self) -> None:
        self.core.crash(self.now)
        if self._closing_socket and self.conn is not None:
            self.send(self.broker_name, ConnectionClose(self.conn))

    # -- inputs -------------------------------------------------------------------------------
    def handle_BasicDeliver(self, d: BasicDeliver, src: str) -> None:
        msg = d.message
        if not self.heard(d.conn):
            # sent on a connection this consumer has given up: the client library never sees it
            self.log.record(self.now, "abandon", msg.msg_id, self.name, queue=d.queue, tag=d.delivery_tag,
                            reason="stale_connection")
            return
        if d.delivery_tag in self.tags_seen:
            return  # a network copy of a frame TCP would have delivered once
        self.tags_seen.add(d.delivery_tag)
        deaths = tuple((x.queue, x.reason, x.count) for x in msg.x_death)
        self._carry_out(self.core.deliver(self.now, Delivered(
            d.conn, d.delivery_tag, msg.msg_id, msg.exchange, msg.routing_key, d.redelivered, d.delivery_count,
            int(msg.header(RETRY_COUNT, 0)), deaths, msg)))

    def _processed(self, h: Held[Message, str]) -> None:
        self._carry_out(self.core.processed(self.now, h))

    def _delay_elapsed(self, h: Held[Message, str]) -> None:
        self._carry_out(self.core.delay_elapsed(self.now, h))

    def handle_CallReply(self, msg: CallReply, src: str) -> None:
        timer = self.call_timers.pop(msg.call_id, None)
        if timer is not None:  # else a late or repeated reply
            timer.cancel()
            self._carry_out(self.core.call_replied(self.now, msg.call_id, msg.ok))

    def _call_timeout(self, call_id: int) -> None:
        if self.call_timers.pop(call_id, None) is not None:
            self._carry_out(self.core.call_timed_out(self.now, call_id))

    def handle_PublishConfirm(self, msg: PublishConfirm, src: str) -> None:
        if self.heard(msg.conn):
            self._carry_out(self.core.confirmed(self.now, msg.conn, msg.seq, msg.ack))

    # -- effects --------------------------------------------------------------------------------
    def _carry_out(self, effects: list[Effect[Message, str]]) -> None:
        """Send the frames and set the timers the core asks for, in its order."""
        for e in effects:
            match e:
                case Ack():
                    self.send(self.broker_name, BasicAck(e.conn, self.next_frame(), e.delivery_tag))
                case Nack():
                    self.send(self.broker_name, BasicNack(e.conn, self.next_frame(), e.delivery_tag, e.requeue))
                case StartProcessing():
                    self.set_timer(e.duration, self._processed, e.held)
                case PublishCopy():
                    msg = e.original
                    copy = replace(msg, headers=tuple(copy_headers(msg.headers, e.retry_count)),
                                   expiration=e.expiration)
                    self.send(self.broker_name, BasicPublish(e.conn, self.next_frame(), e.seq, e.exchange,
                                                             e.routing_key, copy, False))
                case RetryDelay():
                    self.set_timer(e.delay, self._delay_elapsed, e.held)
                case CallDownstream():
                    self.call_timers[e.call_id] = self.set_timer(e.timeout, self._call_timeout, e.call_id)
                    self.send(e.service, Call(e.call_id, e.msg_id, e.attempt))
                case CrashProcess():
                    self._crash_process(e.restart_after)

    def _crash_process(self, restart_after: float) -> None:
        """The consumer process dies now and is restarted ``restart_after`` later."""
        self.self_crashes += 1
        self._closing_socket = True  # on_crash closes the socket: the broker requeues at once
        try:
            self.restart_after(restart_after)
        finally:
            self._closing_socket = False
