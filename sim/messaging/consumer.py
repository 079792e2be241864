"""The consumer node: receives deliveries, processes them, acks, retries, crashes.

Processing one delivery (at most ``concurrency`` at a time; the rest wait in a
local buffer, bounded by ``prefetch`` at the broker):

1. ``receive``; the attempt number comes from the message (quorum delivery
   count, ``x-retry-count``, ``x-death``) or, on a classic queue that does not
   count deliveries, from this consumer's own durable tally (:meth:`ConsumerNode.attempt_of`);
2. an idempotent consumer that finds the id in its dedup store acks (``dedup_skip``);
3. ``process``: local ``processing_time``, then a call to the ``downstream``
   service if there is one (``fail`` with reason ``timeout`` after ``call_timeout``);
   the attempt also fails with probability ``failure_probability``
   (``decision_uniform(seed, "fail", id, attempt)``), and every attempt fails for a
   *poison* message (a fraction ``poison_probability`` of the messages, picked by
   ``decision_uniform(seed, "poison", id, 0)``: one the consumer can never process, e.g. malformed);
4. success: ``side_effect`` (and the id into the dedup store, atomically: a copy whose id
   got there first, processed concurrently elsewhere, records ``dedup_skip`` instead), then ``ack``;
   failure: the retry policy (:mod:`sim.messaging.retry`).

Crashes: with probability ``crash_probability`` per delivery
(``decision_uniform(seed, "crash", id, n)``, *n* counting the processing starts
of this id by any consumer) the process dies at the end of that attempt, before its effect
(``crash_point = "before_effect"``) or after the effect and before the ack
(``"after_effect"``: the classic duplicate). Its socket closes with it, so the
broker requeues its unacked messages at once; it restarts after
``restart_after``. Crashes from the fault schedule (a machine failing) are only
noticed by the broker through missed heartbeats.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..dists import buffered_sampler
from ..kernel.node import Timer
from .broker import Message
from .clients import AmqpClient
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
from .retry import decision_uniform

if TYPE_CHECKING:
    from .protocol import ConsumerSpec, MessagingConfig, MessagingRuntime

__all__ = ["ConsumerNode"]


class _Held:
    """A delivery the consumer holds until it settles it (or loses it)."""

    __slots__ = ("conn", "tag", "msg", "queue", "attempt", "crash", "dead")

    def __init__(self, conn: str, tag: int, msg: Message, queue: str, attempt: int) -> None:
        self.conn = conn
        self.tag = tag
        self.msg = msg
        self.queue = queue
        self.attempt = attempt
        self.crash = False
        self.dead = False  # lost with its connection or the process: never settled by this consumer


class ConsumerNode(AmqpClient):
    """Consumes one queue with a prefetch window; see the module docstring."""

    def __init__(self, world: Any, name: str, cfg: MessagingConfig, runtime: MessagingRuntime,
                 spec: ConsumerSpec) -> None:
        super().__init__(world, name, cfg, runtime)
        self.spec = spec
        self.policy = spec.retry
        self.quorum = cfg.topology.queue(spec.queue).is_quorum
        self.seed = world.seed
        self._work = buffered_sampler(spec.processing_time, world.streams[f"consumer/{name}"])
        self._next_call = 0  # kept across crashes: late replies never match a new call
        self.self_crashes = 0
        self._closing_socket = False
        self.tag = f"{name}.consumer"

    def boot(self) -> None:
        self.held: dict[tuple[str, int], _Held] = {}
        self.buffer: deque[_Held] = deque()
        self.busy = 0
        self.pub_seq = 0
        self.confirm_waits: dict[int, _Held] = {}
        self.calls: dict[int, tuple[_Held, Timer]] = {}
        self.consuming = False
        self.tags_seen: set[int] = set()
        idem = self.spec.idempotency
        self.store: DedupStore | None = None
        if idem is not None:
            if idem.store == "shared":
                self.store = self.runtime.shared_store
            elif idem.store == "local_durable":
                self.store = self.disk.setdefault("dedup", DedupStore(idem.capacity))
            else:
                self.store = DedupStore(idem.capacity)
        super().boot()

    # -- connection hooks -------------------------------------------------------------------
    def on_connected(self) -> None:
        self.pub_seq = 0
        self.consuming = False
        self.tags_seen: set[int] = set()  # delivery tags of this connection (ints: membership only)
        self._consume(self.conn)

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
        if self.spec.auto_ack:
            return  # auto-acked messages are this consumer's to process, connection or not
        self.confirm_waits = {}
        for h in list(self.held.values()):
            if h.conn == conn:
                self._abandon(h, "connection_lost")
        self.buffer = deque(h for h in self.buffer if not h.dead)

    def on_crash(self) -> None:
        for h in list(self.held.values()):
            self._abandon(h, "crash")
        if self._closing_socket and self.conn is not None:
            self.send(self.broker_name, ConnectionClose(self.conn))

    def _abandon(self, h: _Held, reason: str) -> None:
        if not h.dead:
            h.dead = True
            self.held.pop((h.conn, h.tag), None)
            self.log.record(self.now, "abandon", h.msg.msg_id, self.name, queue=h.queue, tag=h.tag,
                            attempt=h.attempt, reason=reason)

    # -- deliveries ---------------------------------------------------------------------------
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
        h = _Held(d.conn, d.delivery_tag, msg, d.queue, self.attempt_of(d))
        self.held[(d.conn, d.delivery_tag)] = h
        self.log.record(self.now, "receive", msg.msg_id, self.name, queue=d.queue, exchange=msg.exchange,
                        routing_key=msg.routing_key, tag=d.delivery_tag, redelivered=d.redelivered,
                        delivery_count=d.delivery_count, attempt=h.attempt, x_death=msg.x_death_text())
        self.buffer.append(h)
        self._pump()

    def attempt_of(self, d: BasicDeliver) -> int:
        """This delivery's attempt number (1 = first), from what the message itself carries."""
        mode = self.policy.mode
        msg = d.message
        if mode == "republish":
            return int(msg.header("x-retry-count", 0)) + 1
        if mode == "dlx_wait":
            return msg.death_count(self.spec.queue, "rejected") + 1
        if self.quorum:
            return d.delivery_count + 1
        # classic queues do not count deliveries: keep a tally on this consumer's disk
        tally = self.disk.setdefault("deliveries", {})
        tally[msg.msg_id] = tally.get(msg.msg_id, 0) + 1
        return tally[msg.msg_id]

    def _pump(self) -> None:
        while self.buffer and self.busy < self.spec.concurrency:
            h = self.buffer.popleft()
            if not h.dead:
                self._start(h)

    def _start(self, h: _Held) -> None:
        msg_id = h.msg.msg_id
        if self.store is not None and self.store.seen(msg_id):
            self.log.record(self.now, "dedup_skip", msg_id, self.name, queue=h.queue, attempt=h.attempt)
            self._ack(h)
            return
        self.busy += 1
        p_crash = self.spec.crash_probability
        if p_crash > 0:
            n = self.runtime.next_delivery_number(msg_id)
            h.crash = decision_uniform(self.seed, "crash", msg_id, n) < p_crash
        self.log.record(self.now, "process", msg_id, self.name, queue=h.queue, attempt=h.attempt)
        self.set_timer(float(self._work()), self._worked, h)

    def _worked(self, h: _Held) -> None:
        if self.spec.downstream is None:
            self._done(h, True, "")
            return
        self._next_call += 1
        call_id = self._next_call
        timer = self.set_timer(self.spec.call_timeout, self._call_timeout, call_id)
        self.calls[call_id] = (h, timer)
        self.send(self.spec.downstream, Call(call_id, h.msg.msg_id, h.attempt))

    def handle_CallReply(self, msg: CallReply, src: str) -> None:
        entry = self.calls.pop(msg.call_id, None)
        if entry is not None:
            entry[1].cancel()
            self._done(entry[0], msg.ok, "" if msg.ok else "downstream")

    def _call_timeout(self, call_id: int) -> None:
        entry = self.calls.pop(call_id, None)
        if entry is not None:
            self._done(entry[0], False, "timeout")

    def _done(self, h: _Held, ok: bool, why: str) -> None:
        self.busy -= 1
        msg_id = h.msg.msg_id
        p = self.spec.failure_probability
        if ok and p > 0 and decision_uniform(self.seed, "fail", msg_id, h.attempt) < p:
            ok, why = False, "error"
        poison = self.spec.poison_probability
        if ok and poison > 0 and decision_uniform(self.seed, "poison", msg_id, 0) < poison:
            ok, why = False, "poison"
        if h.crash and self.spec.crash_point == "before_effect":
            self._crash_process()
            return
        if self.spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)  # settled at delivery: nothing left to lose
        if ok and self.store is not None and self.store.seen(msg_id):
            # another copy took effect while this one was being processed: the effect and the
            # id are written in one transaction, so this copy's effect is refused
            self.log.record(self.now, "dedup_skip", msg_id, self.name, queue=h.queue, attempt=h.attempt)
        elif ok:
            self.log.record(self.now, "side_effect", msg_id, self.name, queue=h.queue, attempt=h.attempt)
            if self.store is not None:
                self.store.add(msg_id)
        else:
            self.log.record(self.now, "fail", msg_id, self.name, queue=h.queue, attempt=h.attempt, reason=why)
        if h.crash:
            self._crash_process()
            return
        if ok:
            self._ack(h)
        else:
            self._failed(h)
        self._pump()

    # -- settling ---------------------------------------------------------------------------------
    def _usable(self, h: _Held) -> bool:
        if h.dead:
            return False
        if self.spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)
            return False
        if h.conn != self.conn:
            self._abandon(h, "connection_lost")
            return False
        return True

    def _ack(self, h: _Held) -> None:
        if self._usable(h):
            self.held.pop((h.conn, h.tag), None)
            self.send(self.broker_name, BasicAck(h.conn, self.next_frame(), h.tag))
            self.log.record(self.now, "ack", h.msg.msg_id, self.name, queue=h.queue, tag=h.tag, attempt=h.attempt)

    def _nack(self, h: _Held, requeue: bool, reason: str = "") -> None:
        if self._usable(h):
            self.held.pop((h.conn, h.tag), None)
            self.send(self.broker_name, BasicNack(h.conn, self.next_frame(), h.tag, requeue))
            self.log.record(self.now, "nack" if requeue else "reject", h.msg.msg_id, self.name, queue=h.queue,
                            tag=h.tag, attempt=h.attempt, reason=reason)

    def _failed(self, h: _Held) -> None:
        """Apply the retry policy to a failed attempt."""
        pol = self.policy
        if self.spec.auto_ack:
            self.held.pop((h.conn, h.tag), None)  # nothing to settle: the message is gone
            return
        a = h.attempt
        if pol.exhausted(a):
            if pol.mode == "dlx_wait":
                rk = pol.dead_letter_routing_key if pol.dead_letter_routing_key is not None else h.msg.routing_key
                self._publish_copy(h, pol.dead_letter_exchange or "", rk, self._copy(h.msg), "dlq_publish")
            else:
                self._nack(h, False, "max_attempts" if pol.mode != "none" else "")
            return
        if pol.mode == "dlx_wait":
            self._nack(h, False, "retry")
            return
        u = decision_uniform(self.seed, "jitter", h.msg.msg_id, a) if pol.jitter != "none" else 0.0
        delay = pol.delay_for(a, u)
        if pol.mode in ("requeue", "delivery_limit"):
            self._later(delay, self._nack, h, True, "retry")
        elif pol.via_exchange is not None:  # republish through a TTL wait queue
            copy = self._copy(h.msg, retry_count=a, expiration=delay)
            self._publish_copy(h, pol.via_exchange, h.msg.routing_key, copy, "retry_publish")
        else:
            self._later(delay, self._republish, h)

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        if delay > 0:
            self.set_timer(delay, fn, *args)
        else:
            fn(*args)

    def _republish(self, h: _Held) -> None:
        copy = self._copy(h.msg, retry_count=h.attempt)
        self._publish_copy(h, h.msg.exchange, h.msg.routing_key, copy, "retry_publish")

    @staticmethod
    def _copy(msg: Message, retry_count: int | None = None, expiration: float | None = None) -> Message:
        headers = tuple((k, v) for k, v in msg.headers if k not in ("x-delivery-count", "x-retry-count"))
        if retry_count is not None:
            headers += (("x-retry-count", retry_count),)
        return replace(msg, headers=headers, expiration=expiration)

    def _publish_copy(self, h: _Held, exchange: str, routing_key: str, copy: Message, event: str) -> None:
        """Publish ``copy`` with a confirm; the original is acked once the copy is confirmed."""
        if not self._usable(h):
            return
        self.pub_seq += 1
        self.confirm_waits[self.pub_seq] = h
        self.send(self.broker_name, BasicPublish(h.conn, self.next_frame(), self.pub_seq, exchange, routing_key,
                                                 copy, False))
        self.log.record(self.now, event, copy.msg_id, self.name, queue=h.queue, exchange=exchange,
                        routing_key=routing_key, attempt=h.attempt)

    def handle_PublishConfirm(self, msg: PublishConfirm, src: str) -> None:
        if not self.heard(msg.conn):
            return
        h = self.confirm_waits.pop(msg.seq, None)
        if h is None:
            return
        if msg.ack:
            self._ack(h)
        else:
            self._nack(h, True, "copy_nacked")

    # -- crashing ---------------------------------------------------------------------------------
    def _crash_process(self) -> None:
        """The consumer process dies now and is restarted ``restart_after`` later."""
        self.self_crashes += 1
        self._closing_socket = True
        self.crash()
        self._closing_socket = False
        crashes = self.crashes
        ev = self.env.timeout(self.spec.restart_after)
        ev.callbacks.append(lambda _e: self.recover() if self.crashes == crashes else None)
