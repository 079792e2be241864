"""A pure AMQP-0-9-1-shaped broker, following RabbitMQ 3.10's observable semantics.

:class:`Broker` is a deterministic state machine with no clock and no network:
every method takes the current time ``now`` (ms) and returns the *effects* to
send (deliveries, publisher confirms, returns, channel closures), so it can be
unit-tested without a world. :class:`~sim.messaging.broker_node.BrokerNode` runs it
on the simulated network. A channel is named by the caller (one per connection).

Semantics reproduced (DESIGN.md section 7):

* requeue position: a classic queue puts a requeued message back at its
  original position; a quorum queue puts it at the back, or at the head when
  the queue has a delivery limit;
* quorum delivery count: +1 on every return (nack with requeue, channel or
  connection loss, broker restart); above ``x-delivery-limit`` the message is
  dead-lettered with reason ``delivery_limit``; redeliveries carry the
  ``x-delivery-count`` header;
* dead-lettering is at-most-once: a dead-lettered message that the DLX routes
  nowhere (or that the target queue refuses) is dropped; ``x-death`` lists
  (queue, reason, count) entries, most recent first, a repeated (queue, reason)
  incrementing its count; the ``expiration`` property is removed on the way;
  fully automatic dead-letter cycles (no ``rejected`` in the cycle) are dropped;
* TTL (queue ``x-message-ttl`` and per-message ``expiration``, whichever is
  shorter, counted from enqueue and kept across requeues) expires a message only
  when it is at the head of the queue (head-of-line blocking);
* ``x-max-length`` counts ready messages; ``drop-head`` dead-letters the oldest
  (reason ``maxlen``), ``reject-publish`` refuses the new one (confirm nack),
  ``reject-publish-dlx`` refuses and dead-letters it;
* a broker crash keeps persistent messages of durable classic queues and every
  message of quorum queues; after a hard kill classic queues mark every
  recovered message redelivered (the broker cannot know which were delivered),
  after a clean restart (``stop_app`` / ``start_app``) only those that had been
  delivered before; unacked quorum messages are returned (delivery count +1);
  non-durable queues come back empty (re-declared).

Prefetch applies per consumer (``basic.qos`` with ``global = false``) and not
to auto-ack consumers, which get every ready message at once. One quirk of
RabbitMQ 3.10.8 is reproduced because it changes outcomes: a ``basic.nack`` with
requeue that takes a quorum message past its delivery limit gives the consumer
its credit back twice, so from then on it may hold one more unacked message than
its prefetch, one more for every such nack (measured: prefetch 1, a nack past
``x-delivery-limit = 0``, and the consumer holds two deliveries; after another,
three; ``tests/test_differential.py``). With crashes this changes which
messages a crashing consumer held, so which come back redelivered.

The rules that belong to one queue (order, TTL, max-length, where a returned
message goes back, the dead-lettered copy) and the message types are in
:mod:`sim.messaging.queues`; the broker applies them and owns what needs
channels: consumers, deliveries and acks, confirms and returns, the event
log, crashes.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from typing import Any

from .history import MessageLog
from .queues import Message, QueuedMessage, QueueState, XDeath, is_dead_letter_cycle
from .routing import route
from .topology import Topology

__all__ = ["Broker", "Message", "XDeath", "Delivery", "Confirm", "Returned", "ChannelClosed", "Effect"]


# -- effects ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    """``basic.deliver`` to a consumer."""

    channel: str
    consumer_tag: str
    delivery_tag: int
    queue: str
    message: Message
    redelivered: bool
    delivery_count: int


@dataclass(frozen=True, slots=True)
class Confirm:
    """A publisher confirm (``basic.ack`` if ``ack`` else ``basic.nack``) for publish ``seq``."""

    channel: str
    seq: int
    ack: bool


@dataclass(frozen=True, slots=True)
class Returned:
    """``basic.return`` of an unroutable mandatory message (sent before its confirm)."""

    channel: str
    seq: int | None
    message: Message
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The broker closed a channel after an error; its unacked messages were requeued."""

    channel: str
    reply_code: int
    reply_text: str


Effect = Delivery | Confirm | Returned | ChannelClosed


# -- internal state -----------------------------------------------------------------
class _Consumer:
    __slots__ = ("tag", "channel", "queue", "prefetch", "auto_ack", "unacked", "leaked")

    def __init__(self, tag: str, channel: str, queue: str, prefetch: int, auto_ack: bool) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.prefetch = prefetch
        self.auto_ack = auto_ack
        self.unacked = 0
        self.leaked = 0  # credit a quorum queue granted beyond the prefetch (see Broker.nack)

    def has_room(self) -> bool:
        return self.auto_ack or self.prefetch == 0 or self.unacked < self.prefetch + self.leaked


class _Channel:
    __slots__ = ("name", "next_tag", "unacked", "consumers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_tag = 1
        # delivery tag -> (queue, entry, consumer, delivered at); insertion order = tag order
        self.unacked: dict[int, tuple[QueueState, QueuedMessage, _Consumer, float]] = {}
        self.consumers: dict[str, _Consumer] = {}


class Broker:
    """The broker's state: queues, channels, consumers. See the module docstring."""

    def __init__(self, topology: Topology, *, log: MessageLog | None = None, node: str = "broker",
                 consumer_timeout: float = math.inf) -> None:
        self.topology = topology
        self.log = log
        self.node = node
        self.consumer_timeout = consumer_timeout
        self.queues: dict[str, QueueState] = {q.name: QueueState(q) for q in topology.queues}
        self.channels: dict[str, _Channel] = {}
        self.up = True
        self._uid = 0
        self._routes: dict[tuple[str, str], list[str]] = {}
        self._out: list[Effect] = []

    # -- inspection -------------------------------------------------------------------
    def ready_ids(self, queue: str) -> list[str]:
        """Message ids of the ready messages of ``queue``, head first."""
        return [e.msg.msg_id for e in self.queues[queue].ordered()]

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready, unacked) message counts of ``queue``."""
        q = self.queues[queue]
        return len(q.ready), q.unacked + len(q.pending_returns)

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work: a head message's expiry or an ack timeout."""
        d = math.inf
        for q in self.queues.values():
            if q.ready:
                d = min(d, q.ready[0][3].expires_at)
        if math.isfinite(self.consumer_timeout):
            for ch in self.channels.values():
                if ch.unacked:
                    d = min(d, next(iter(ch.unacked.values()))[3] + self.consumer_timeout)
        return d

    # -- channels and consumers ---------------------------------------------------------
    def open_channel(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels[channel] = _Channel(channel)

    def close_channel(self, now: float, channel: str, reason: str = "connection") -> list[Effect]:
        """The client closed the channel or its connection dropped: requeue its unacked messages."""
        out = self._begin()
        ch = self.channels.pop(channel, None)
        if ch is not None:
            self._drop_channel(now, ch, reason)
        return out

    def consume(self, now: float, channel: str, queue: str, *, consumer_tag: str, prefetch: int = 0,
                auto_ack: bool = False) -> list[Effect]:
        """``basic.consume`` (with ``basic.qos(prefetch)``, 0 = unlimited)."""
        out = self._begin()
        ch = self.channels[channel]
        if queue not in self.queues:
            self._close(now, ch, 404, f"NOT_FOUND - no queue '{queue}'")
        elif consumer_tag in ch.consumers:
            self._close(now, ch, 530, f"NOT_ALLOWED - attempt to reuse consumer tag '{consumer_tag}'")
        else:
            c = _Consumer(consumer_tag, channel, queue, prefetch, auto_ack)
            ch.consumers[consumer_tag] = c
            q = self.queues[queue]
            q.consumers.append(c)
            self._dispatch(now, q)
        return out

    def cancel(self, now: float, channel: str, consumer_tag: str) -> list[Effect]:
        """``basic.cancel``: no more deliveries; unacked messages stay unacked on the channel."""
        out = self._begin()
        ch = self.channels.get(channel)
        c = ch.consumers.pop(consumer_tag, None) if ch is not None else None
        if c is not None:
            self._detach(c)
        return out

    # -- publishing ---------------------------------------------------------------------
    def publish(self, now: float, channel: str, message: Message, *, exchange: str, routing_key: str,
                mandatory: bool = False, seq: int | None = None) -> list[Effect]:
        """``basic.publish``; ``seq`` set = the channel is in confirm mode (a confirm follows)."""
        out = self._begin()
        ch = self.channels[channel]
        if not self.topology.has_exchange(exchange):
            self._close(now, ch, 404, f"NOT_FOUND - no exchange '{exchange}'")
            return out
        msg = message
        if msg.exchange != exchange or msg.routing_key != routing_key:
            msg = replace(msg, exchange=exchange, routing_key=routing_key)
        targets = self._route(exchange, routing_key)
        if not targets:
            self._rec(now, "unroutable", msg, exchange=exchange, routing_key=routing_key)
            if mandatory:
                out.append(Returned(channel, seq, msg, 312, "NO_ROUTE"))
            if seq is not None:
                out.append(Confirm(channel, seq, True))
            return out
        accepted = [self._enqueue(now, self.queues[name], msg) for name in targets]
        if seq is not None:
            out.append(Confirm(channel, seq, all(accepted)))
        return out

    # -- settling -------------------------------------------------------------------------
    def ack(self, now: float, channel: str, delivery_tag: int, multiple: bool = False) -> list[Effect]:
        out = self._begin()
        taken = self._take(now, channel, delivery_tag, multiple)
        touched: list[QueueState] = []
        for q, e in taken:
            self._rec(now, "settle", e.msg, queue=q.name, delivery_count=e.delivery_count)
            if q not in touched:
                touched.append(q)
        for q in touched:
            self._dispatch(now, q)
        return out

    def nack(self, now: float, channel: str, delivery_tag: int, multiple: bool = False,
             requeue: bool = True) -> list[Effect]:
        """``basic.nack``: requeue, or dead-letter with reason ``rejected`` (dropped without a DLX)."""
        out = self._begin()
        consumers: list[_Consumer] = []
        taken = self._take(now, channel, delivery_tag, multiple, consumers)
        touched: list[QueueState] = []
        for (q, e), c in zip(taken, consumers):
            if requeue:
                self._rec(now, "requeue", e.msg, queue=q.name, reason="nack", delivery_count=e.delivery_count)
                if not self._return(now, q, e, "nack"):
                    c.leaked += 1  # RabbitMQ 3.10.8: past the delivery limit the consumer's credit is returned twice
            else:
                self._dead_letter(now, q, e.msg, "rejected")
            if q not in touched:
                touched.append(q)
        for q in touched:
            self._dispatch(now, q)
        return out

    def reject(self, now: float, channel: str, delivery_tag: int, requeue: bool = True) -> list[Effect]:
        """``basic.reject``: a single-message nack."""
        return self.nack(now, channel, delivery_tag, multiple=False, requeue=requeue)

    # -- time -------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        """Expire due head messages and close channels whose oldest delivery passed the ack timeout."""
        out = self._begin()
        for q in self.queues.values():
            self._dispatch(now, q)
        if math.isfinite(self.consumer_timeout):
            for ch in list(self.channels.values()):
                if ch.unacked and next(iter(ch.unacked.values()))[3] + self.consumer_timeout <= now:
                    self._close(now, ch, 406, "PRECONDITION_FAILED - delivery acknowledgement timed out")
        return out

    # -- crash and recovery -------------------------------------------------------------------
    def crash(self, now: float, clean: bool = False) -> None:
        """The broker stops: connections vanish; what is not durable is lost (``lost`` events).

        A hard kill (``clean`` false) marks every message a classic queue recovers
        as redelivered, as RabbitMQ 3.10 does after a killed node; a clean restart
        keeps the flag only on messages delivered before (RabbitMQ 3.10.8 after
        ``stop_app`` / ``start_app``). Quorum queues are the same either way.
        """
        self.up = False
        held: dict[str, list[QueuedMessage]] = {}
        for ch in self.channels.values():
            for q, e, _c, _t in ch.unacked.values():
                held.setdefault(q.name, []).append(e)
        self.channels = {}
        for name, q in list(self.queues.items()):
            q.consumers, q.rr, q.unacked = [], 0, 0
            entries = q.ordered()
            unacked = held.get(name, [])
            spec = q.spec
            if not spec.durable:
                for e in entries + unacked:
                    self._rec(now, "lost", e.msg, queue=name, reason="non_durable_queue")
                self.queues[name] = QueueState(spec)  # re-declared, empty, when the broker is back
            elif spec.is_quorum:
                q.pending_returns.extend(unacked)  # the Raft log keeps everything
            else:
                keep = []
                for e in entries + unacked:
                    if e.msg.persistent:
                        e.recovered = e.recovered or not clean
                        keep.append((e.prio, e.pos, e.uid, e))
                    else:
                        self._rec(now, "lost", e.msg, queue=name, reason="transient_message")
                heapq.heapify(keep)
                q.ready = keep

    def recover(self, now: float) -> list[Effect]:
        """The broker is back: quorum queues return the messages that were unacked at the crash."""
        out = self._begin()
        self.up = True
        for q in self.queues.values():
            pending, q.pending_returns = q.pending_returns, []
            for e in pending:
                self._rec(now, "requeue", e.msg, queue=q.name, reason="broker_restart", delivery_count=e.delivery_count)
                self._return(now, q, e, "broker_restart")
            self._dispatch(now, q)
        return out

    def remaining(self, now: float) -> int:
        """Record a ``remain`` event for every message still held (ready or unacked); return how many."""
        n = 0
        for q in self.queues.values():
            for e in q.ordered():
                self._rec(now, "remain", e.msg, queue=q.name, reason="ready", delivery_count=e.delivery_count)
                n += 1
            for e in q.pending_returns:
                self._rec(now, "remain", e.msg, queue=q.name, reason="unacked", delivery_count=e.delivery_count)
                n += 1
        for ch in self.channels.values():
            for q, e, _c, _t in ch.unacked.values():
                self._rec(now, "remain", e.msg, queue=q.name, reason="unacked", delivery_count=e.delivery_count)
                n += 1
        return n

    # -- internals ----------------------------------------------------------------------------
    def _begin(self) -> list[Effect]:
        self._out = []
        return self._out

    def _rec(self, now: float, event: str, msg: Message, **fields: Any) -> None:
        if self.log is not None:
            self.log.record(now, event, msg.msg_id, self.node, **fields)

    def _route(self, exchange: str, routing_key: str) -> list[str]:
        key = (exchange, routing_key)
        targets = self._routes.get(key)
        if targets is None:
            targets = self._routes[key] = route(self.topology, exchange, routing_key)
        return targets

    def _enqueue(self, now: float, q: QueueState, msg: Message, dead_lettered: bool = False) -> bool:
        """Offer ``msg`` to ``q``: ``False`` if a full queue refuses it (a refused dead-lettered copy is dropped)."""
        if q.refuses():
            if dead_lettered:
                self._rec(now, "drop", msg, queue=q.name, reason="dead_letter_rejected")
                return False
            self._rec(now, "publish_rejected", msg, queue=q.name, reason="maxlen")
            if q.spec.overflow == "reject-publish-dlx":
                self._dead_letter(now, q, msg, "maxlen")
            return False
        self._uid += 1
        q.admit(self._uid, msg, now)
        self._rec(now, "enqueue", msg, queue=q.name, exchange=msg.exchange, routing_key=msg.routing_key,
                  x_death=msg.x_death_text())
        while q.over_length():
            self._dead_letter(now, q, q.pop().msg, "maxlen")
        self._dispatch(now, q)
        return True

    def _dispatch(self, now: float, q: QueueState) -> None:
        """Deliver ready messages to consumers with room (round robin), then expire due heads."""
        ready = q.ready
        while ready:
            e = ready[0][3]
            if e.expires_at < now:
                heapq.heappop(ready)
                self._dead_letter(now, q, e.msg, "expired")
                continue
            c = self._next_consumer(q)
            if c is None:
                break
            heapq.heappop(ready)
            self._deliver(now, q, c, e)
        while ready and ready[0][3].expires_at <= now:
            self._dead_letter(now, q, heapq.heappop(ready)[3].msg, "expired")

    def _next_consumer(self, q: QueueState) -> _Consumer | None:
        consumers = q.consumers
        n = len(consumers)
        for k in range(n):
            i = (q.rr + k) % n
            c = consumers[i]
            if c.has_room():
                q.rr = (i + 1) % n
                return c
        return None

    def _deliver(self, now: float, q: QueueState, c: _Consumer, e: QueuedMessage) -> None:
        ch = self.channels[c.channel]
        tag = ch.next_tag
        ch.next_tag += 1
        quorum = q.spec.is_quorum
        redelivered = e.delivery_count > 0 if quorum else (e.delivered or e.recovered)
        msg = e.msg
        if quorum and e.delivery_count > 0:
            msg = msg.with_header("x-delivery-count", e.delivery_count)
        e.delivered = True
        self._rec(now, "deliver", msg, queue=q.name, tag=tag, redelivered=redelivered,
                  delivery_count=e.delivery_count, x_death=msg.x_death_text())
        if c.auto_ack:
            self._rec(now, "settle", msg, queue=q.name, reason="auto_ack")
        else:
            ch.unacked[tag] = (q, e, c, now)
            c.unacked += 1
            q.unacked += 1
        self._out.append(Delivery(c.channel, c.tag, tag, q.name, msg, redelivered, e.delivery_count))

    def _take(self, now: float, channel: str, tag: int, multiple: bool,
              consumers: list[_Consumer] | None = None) -> list[tuple[QueueState, QueuedMessage]]:
        """Remove acked/nacked deliveries from the channel; an unknown tag is a channel error."""
        ch = self.channels[channel]
        if multiple:
            tags = [t for t in ch.unacked if tag == 0 or t <= tag]
        else:
            tags = [tag] if tag in ch.unacked else []
        if not tags:
            self._close(now, ch, 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
            return []
        taken = []
        for t in tags:
            q, e, c, _ = ch.unacked.pop(t)
            if consumers is not None:
                consumers.append(c)
            c.unacked -= 1
            q.unacked -= 1
            taken.append((q, e))
        return taken

    def _return(self, now: float, q: QueueState, e: QueuedMessage, cause: str) -> bool:
        """Put a returned message back by the queue's rule (``True``), or dead-letter it past the delivery limit."""
        if not q.requeue(e, cause):
            self._dead_letter(now, q, e.msg, "delivery_limit")
            return False
        return True

    def _detach(self, c: _Consumer) -> None:
        q = self.queues.get(c.queue)
        if q is not None and c in q.consumers:
            i = q.consumers.index(c)
            q.consumers.pop(i)
            if q.rr > i:
                q.rr -= 1
            if q.consumers:
                q.rr %= len(q.consumers)
            else:
                q.rr = 0

    def _drop_channel(self, now: float, ch: _Channel, reason: str) -> None:
        for c in ch.consumers.values():
            self._detach(c)
        touched: list[QueueState] = []
        for q, e, c, _t in ch.unacked.values():
            c.unacked -= 1
            q.unacked -= 1
            self._rec(now, "requeue", e.msg, queue=q.name, reason=reason, delivery_count=e.delivery_count)
            self._return(now, q, e, reason)
            if q not in touched:
                touched.append(q)
        ch.unacked.clear()
        for q in touched:
            self._dispatch(now, q)

    def _close(self, now: float, ch: _Channel, code: int, text: str) -> None:
        self.channels.pop(ch.name, None)
        self._drop_channel(now, ch, "channel_error")
        self._out.append(ChannelClosed(ch.name, code, text))

    def _dead_letter(self, now: float, q: QueueState, msg: Message, reason: str) -> None:
        """Route ``q``'s dead-lettered copy of ``msg``; at most once: what cannot be routed or enqueued is dropped."""
        dead = q.dead_lettered(msg, reason, now)
        if dead is None:
            self._rec(now, "drop", msg, queue=q.name, reason=reason)
            return
        dlx, rk = dead.exchange, dead.routing_key
        self._rec(now, "dead_letter", dead, queue=q.name, exchange=dlx, routing_key=rk, reason=reason,
                  x_death=dead.x_death_text())
        targets = self._route(dlx, rk) if self.topology.has_exchange(dlx) else []
        if not targets:
            self._rec(now, "drop", dead, queue=q.name, reason="dead_letter_unroutable")
            return
        for t in targets:
            if reason != "rejected" and is_dead_letter_cycle(t, dead.x_death):
                self._rec(now, "drop", dead, queue=t, reason="dead_letter_cycle")
            else:
                self._enqueue(now, self.queues[t], dead, dead_lettered=True)
